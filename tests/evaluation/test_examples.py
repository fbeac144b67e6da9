"""The pictures of the report's error analysis: boxes drawn on frames, the frames the encoder read."""

from __future__ import annotations

from types import SimpleNamespace

from PIL import Image

from lpr_core.data.datasets import sample_frame_positions
from lpr_core.evaluation.examples import CROP_COLOUR, TRUTH_COLOUR, draw_boxes, sampled_frame_indices


def _close(pixel, colour, tol=40):
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, colour))


def test_draw_boxes_draws_the_crop_union_in_red_and_ground_truth_in_green():
    image = Image.new("L", (120, 90), 128)  # grey frames come back as RGB
    out = draw_boxes(image, [(10, 10, 40, 40), (30, 20, 60, 50)], [(70, 10, 110, 80)])
    assert out.mode == "RGB" and out.size == image.size and image.getpixel((10, 10)) == 128  # a copy
    assert _close(out.getpixel((10, 30)), CROP_COLOUR)  # left edge of the union
    assert _close(out.getpixel((60, 45)), CROP_COLOUR)  # right edge comes from the second box
    assert _close(out.getpixel((70, 50)), TRUTH_COLOUR)
    assert _close(out.getpixel((90, 50)), (128, 128, 128))  # inside the ground-truth box: untouched
    bare = draw_boxes(image, None, None)
    assert set(bare.getdata()) == {(128, 128, 128)}


def test_sampled_frame_indices_are_the_frames_the_query_dataset_reads():
    # a clip with fewer frames than T reads each once; absent clips (no frames) are not listed
    dataset = SimpleNamespace(clip_ids=["a", "b"], available=[list(range(0, 40, 2)), [5, 9]], num_frames=4)
    picked = sampled_frame_indices(dataset)
    assert picked == {"a": [2 * p for p in sample_frame_positions(20, 4, "uniform")], "b": [5, 9]}
    assert picked["a"] == [4, 14, 24, 34]  # positions 2, 7, 12, 17 of every other frame

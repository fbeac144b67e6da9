"""Plain records of the LPR4M annotation files, as written by the synthetic world and by tests."""

from __future__ import annotations

from dataclasses import dataclass, field

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class VideoInfoRow:
    """One row of ``training_videoinfo``: a training clip and its shop image.

    ``boxes[i]`` holds the product boxes (``x1, y1, x2, y2`` in original pixels) of the frame
    ``frame_ids[i]``; an empty list for a frame without a box. Both lists have the same length.
    """

    video_id: str
    frame_ids: list[str]
    boxes: list[list[Box]]
    image_id: str
    image_title: str
    category_id: int
    category_name: str
    asr: str
    scale_type: int
    duration_type: int
    number_type: int
    extra: dict = field(default_factory=dict, compare=False, repr=False)

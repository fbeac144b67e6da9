"""The ``validate`` section of ``params.yaml``: every threshold of the validation stage."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lpr_core.config import ConfigError, from_mapping, load_params, load_section

__all__ = ["ValidateParams", "ConfigError", "ALL_SOURCES", "load_validate_params", "validate_params_from_mapping"]

#: Every input the stage knows: the LPR4M file kinds and the four download manifests.
ALL_SOURCES: tuple[str, ...] = (
    "videoinfo",
    "train_frame_urls",
    "train_image_urls",
    "test_frame_urls",
    "test_image_urls",
    "test_asr",
    "test_titles",
    "test_gt_images",
    "test_frame_boxes",
    "test_gallery",
    "manifest/train_frames",
    "manifest/train_images",
    "manifest/test_frames",
    "manifest/test_images",
)


@dataclass(frozen=True)
class ValidateParams:
    """Thresholds and knobs of the ``validate`` stage.

    Attributes:
        image_size: the ``image_size`` img2dataset resized to (``keep_ratio``: the smaller side).
        resize_only_if_bigger: img2dataset left originals whose smaller side is at most
            ``image_size`` untouched (else they were upscaled).
        size_tolerance_px: a downloaded side may differ from the keep_ratio size by this much
            (rounding).
        max_reject_fraction: per LPR4M file kind, the largest share of input rows the lenient
            readers may reject (malformed rows, frame/box lists of different lengths, unknown
            type codes, duplicate keys).
        min_download_success_rate: per split and kind, the smallest share of listed URLs that
            must have downloaded.
        min_decodable_frames: a query clip needs at least this many downloaded frames that decode.
        min_gallery_downloaded_fraction: the smallest share of test gallery images that must have
            downloaded (1.0: every one).
        max_duplicate_image_fraction: the largest share of shop images whose sha256 equals the
            one of another image id (re-uploads are reported; the stage fails above this).
        min_decoded_fraction: the smallest share of the decoded sample that must decode.
        max_box_outside_fraction: a box with a larger share of its area outside its frame fails
            (mostly outside: the product is not where the box says). Boxes past the edge by less
            are fine: ``prepare`` clips them to the frame.
        max_clipped_box_fraction: per split, the largest share of (checked) boxes that may run past
            their frame edge; more means boxes in another coordinate system or frame size.
        decode_sample: ``"all"`` or the number of downloaded files to decode per split and kind.
        workers: processes that read the annotation files (large ones) and decode images.
        seed: seed of the decode sample.
        required: the inputs that must be present (see :data:`ALL_SOURCES`).
    """

    image_size: int = 128
    resize_only_if_bigger: bool = True
    size_tolerance_px: float = 1.0
    max_reject_fraction: float = 0.0
    min_download_success_rate: float = 0.9
    min_decodable_frames: int = 3
    min_gallery_downloaded_fraction: float = 0.95
    max_duplicate_image_fraction: float = 0.05
    min_decoded_fraction: float = 1.0
    max_box_outside_fraction: float = 0.5
    max_clipped_box_fraction: float = 0.1
    decode_sample: int | str = "all"
    workers: int = field(default=2, metadata={"runtime": True})
    seed: int = 0
    required: tuple[str, ...] = field(default=ALL_SOURCES)

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(msg)

        need(self.image_size > 0, f"image_size must be > 0, got {self.image_size}")
        need(self.size_tolerance_px >= 0, "size_tolerance_px must be >= 0")
        for name in (
            "max_reject_fraction",
            "min_download_success_rate",
            "min_gallery_downloaded_fraction",
            "max_duplicate_image_fraction",
            "min_decoded_fraction",
            "max_box_outside_fraction",
            "max_clipped_box_fraction",
        ):
            value = getattr(self, name)
            need(0.0 <= value <= 1.0, f"{name} must be in [0, 1], got {value}")
        need(self.min_decodable_frames >= 0, "min_decodable_frames must be >= 0")
        need(
            self.decode_sample == "all" or (isinstance(self.decode_sample, int) and self.decode_sample >= 0),
            f"decode_sample must be 'all' or an integer >= 0, got {self.decode_sample!r}",
        )
        need(self.workers >= 1, "workers must be >= 1")
        unknown = sorted(set(self.required) - set(ALL_SOURCES))
        need(not unknown, f"required: unknown input(s) {unknown}; known: {', '.join(ALL_SOURCES)}")

    def expectation_parameters(self) -> dict[str, float]:
        """The values of the suite parameters (``{"$PARAMETER": name}``) of the expectation suites."""
        return {
            "max_reject_fraction": float(self.max_reject_fraction),
            "min_download_success_rate": float(self.min_download_success_rate),
            "min_decodable_frames": float(self.min_decodable_frames),
            "min_gallery_downloaded_fraction": float(self.min_gallery_downloaded_fraction),
            "min_unique_image_fraction": 1.0 - float(self.max_duplicate_image_fraction),
            "min_decoded_fraction": float(self.min_decoded_fraction),
            "max_box_outside_fraction": float(self.max_box_outside_fraction),
            "max_clipped_box_fraction": float(self.max_clipped_box_fraction),
        }


def validate_params_from_mapping(section: Mapping[str, Any] | None, where: str = "validate") -> ValidateParams:
    """Build :class:`ValidateParams` from a mapping, refusing unknown keys, wrong types and ranges.

    Raises:
        ConfigError: naming the key at fault.
    """
    return from_mapping(ValidateParams, section, where=where)


def load_validate_params(path: str | Path) -> ValidateParams:
    """Read the ``validate`` section of a ``params.yaml``.

    ``image_size`` and ``resize_only_if_bigger`` must equal the ``download`` section's (the
    keep_ratio check needs the sizes the download stage asked for).

    Raises:
        ConfigError: a missing file or section, an invalid key, or sizes that differ from the
            download section's.
    """
    params = load_section(ValidateParams, "validate", path)
    download = load_params(path).get("download")
    if isinstance(download, dict):
        for key in ("image_size", "resize_only_if_bigger"):
            if key in download and download[key] != getattr(params, key):
                raise ConfigError(
                    f"{path}: validate.{key} ({getattr(params, key)!r}) differs from download.{key} "
                    f"({download[key]!r}); they must be equal"
                )
    return params

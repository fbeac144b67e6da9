"""The ``evaluate`` section of params.yaml, as frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field

from lpr_core.embedding import EmbedParams
from lpr_core.evaluation.metrics import DEFAULT_KS, metric_names

__all__ = ["CROP_MODES", "SLICE_COLUMNS", "BootstrapParams", "ReportParams", "EvaluateParams"]

CROP_MODES = ("auto", "detector", "ground_truth", "none")
#: The optional per-query label columns of ``test_queries`` (see :mod:`lpr_core.data.prepare`).
SLICE_COLUMNS = ("category_name", "scale_type", "duration_type", "number_type")


@dataclass(frozen=True)
class BootstrapParams:
    """Bootstrap over livestreams (:func:`lpr_core.evaluation.metric_cis`).

    Attributes:
        n_boot: replicates.
        level: coverage of the intervals.
        seed: seed of the resampling.
    """

    n_boot: int = 1000
    level: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_boot < 1 or not 0 < self.level < 1:
            raise ValueError(f"bootstrap needs n_boot >= 1 and 0 < level < 1, got {self.n_boot}, {self.level}")


@dataclass(frozen=True)
class ReportParams:
    """The HTML report.

    Attributes:
        n_random: randomly chosen queries shown.
        n_worst: worst queries shown (largest rank of their ground truth).
        max_frames: frames shown per query.
        top: gallery images shown per query (the hit/miss badge is at this k).
        thumb_height: thumbnail height in pixels.
        seed: seed of the random samples.
        n_per_failure: missed queries shown per failure kind in the error analysis.
    """

    n_random: int = 6
    n_worst: int = 6
    max_frames: int = 8
    top: int = 5
    thumb_height: int = 96
    seed: int = 0
    n_per_failure: int = 3

    def __post_init__(self) -> None:
        if min(self.n_random, self.n_worst, self.n_per_failure) < 0 or min(self.max_frames, self.top, self.thumb_height) < 1:
            raise ValueError("report: n_random/n_worst/n_per_failure must be >= 0, max_frames/top/thumb_height >= 1")


@dataclass(frozen=True)
class EvaluateParams:
    """The ``evaluate`` section of params.yaml.

    Attributes:
        ks: rank-k cut-offs of the headline metrics (the paper's 1, 3, 5, 10).
        curve_max_k: the rank-k curve goes from 1 to this.
        top_k: entries per query in ``predictions.json``.
        num_frames: T frames per query clip; None: the encoder's ``num_frames``.
        crops: ``auto`` | ``detector`` | ``ground_truth`` | ``none`` (see
            :mod:`lpr_core.evaluation.crops`).
        box_padding: context kept around a crop box; None: what the encoder was trained with
            (0.1 when the checkpoint does not say).
        detector_score_threshold: None: the detector's own ``score_threshold``.
        detector_batch_size: frames per detector forward pass.
        index_device: where the faiss indexes are searched: ``auto``, ``cpu`` or ``gpu``.
        slices: ``test_queries`` label columns to slice by (absent columns are skipped: the LPR4M
            release has none for the test set).
        slice_by_livestream: add the per-livestream slice (plots and report; not in the metrics
            file, which stays small at 110 livestreams).
        bootstrap: interval settings.
        report: report settings.
        embed: how the query clips are embedded.
    """

    ks: tuple[int, ...] = DEFAULT_KS
    curve_max_k: int = 20
    top_k: int = 10
    num_frames: int | None = None
    crops: str = "auto"
    box_padding: float | None = None
    detector_score_threshold: float | None = None
    detector_batch_size: int = 16
    index_device: str = field(default="auto", metadata={"runtime": True})
    slices: tuple[str, ...] = SLICE_COLUMNS
    slice_by_livestream: bool = True
    bootstrap: BootstrapParams = field(default_factory=BootstrapParams)
    report: ReportParams = field(default_factory=ReportParams)
    embed: EmbedParams = field(default_factory=EmbedParams)

    def __post_init__(self) -> None:
        metric_names(self.ks)  # positive, distinct
        if self.crops not in CROP_MODES:
            raise ValueError(f"crops must be one of {'|'.join(CROP_MODES)}, got {self.crops!r}")
        if self.index_device not in ("auto", "cpu", "gpu"):
            raise ValueError(f"index_device must be auto|cpu|gpu, got {self.index_device!r}")
        if min(self.curve_max_k, self.top_k, self.detector_batch_size) < 1:
            raise ValueError("curve_max_k, top_k and detector_batch_size must be >= 1")
        if self.num_frames is not None and self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1 or null, got {self.num_frames}")
        if self.box_padding is not None and self.box_padding < 0:
            raise ValueError(f"box_padding must be >= 0 or null, got {self.box_padding}")

"""From unit costs measured on one machine to the wall time and cost of full LPR4M on N nodes.

Pure functions, no I/O: ``benchmarks/unit_costs.py`` measures the unit costs and prints the table
that ``docs/scaling.md`` holds.

The model. A stage is a sequence of **phases**; a phase is an amount of work (images, rows, clips,
bytes, queries) and, for each resource that can bound it (CPU cores, network, the GPU, JPEG
decoding, the image host), the throughput that resource gives across the nodes the phase runs
on. A phase takes ``work / min(throughputs)`` seconds and that resource is its **bound**; a stage
takes the sum of its phases and its bound is the bound of its longest phase. A stage whose
estimated memory exceeds one node's is bound by **memory**: it does not run as it is.

Every measured rate is per CPU-second, the rate of one fully used core (robust on a shared
machine, and what a node of ``cores_per_node`` cores multiplies). Which stages get faster with
nodes follows the code: the download scales with CPU nodes (img2dataset's ``pyspark``/``ray``
distributor), encoder training with GPU nodes (DDP) up to what its global batch allows; validate,
prepare, index_gallery, evaluate and the DVC push of the download run as one pod.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

__all__ = [
    "FullScale",
    "LPR4M",
    "Assumptions",
    "UNIT_COSTS",
    "Phase",
    "StageProjection",
    "check_unit_costs",
    "gpu_rates",
    "project",
    "dvc_file_costs",
    "dvc_file_threshold",
    "storage_usd_per_month",
    "format_seconds",
    "markdown_table",
]

GB = 1e9
GIB = 2**30


@dataclass(frozen=True)
class FullScale:
    """The size of the LPR4M release (the paper's counts)."""

    train_frames: int = 473_402_226
    train_clips: int = 4_013_617
    train_images: int = 332_438
    test_queries: int = 20_079
    test_frames: int = 501_656
    test_gallery: int = 66_358
    test_livestreams: int = 110
    test_boxed_frames: int = 426_751

    @property
    def images(self) -> int:
        """Every URL of the four lists: what the download fetches."""
        return self.train_frames + self.train_images + self.test_frames + self.test_gallery

    @property
    def check_rows(self) -> int:
        """Rows of validate's check tables: the four manifests, the training clips and the test tables."""
        return (self.images + self.train_clips + self.test_queries + self.test_gallery
                + self.test_livestreams + self.test_boxed_frames)


LPR4M = FullScale()


@dataclass(frozen=True)
class Assumptions:
    """What the projection assumes beyond the unit costs measured here (each can be changed).

    Attributes:
        cores_per_node: CPU cores of a node (the lent GPU machine has 16).
        memory_gib_per_node: memory of a node.
        network_gbit_per_node: network bandwidth of a node (Gbit/s).
        network_efficiency: share of that bandwidth a stage achieves (HTTP and S3 overheads).
        disk_mb_per_s_per_node: read bandwidth of the volume a one-pod stage reads its input from.
        source_kb_per_image: bytes fetched per URL (the original frame, before the resize).
        stored_kb_per_image: bytes stored per image at 224 px (keep_ratio, JPEG quality 95).
        origin_img_per_s: the most images per second the image host serves (inf: not limiting).
        gpu_name: the GPU of a GPU node (one per node).
        gpu_peak_tflops: its dense bf16 peak.
        gpu_mfu: model FLOP utilisation assumed when no GPU rate is measured (gpu_check's goal).
        gpu_train_img_per_s: measured training images/s of one GPU (None: from the FLOPs and the MFU).
        gpu_embed_img_per_s: measured embedding images/s of one GPU (None: from the FLOPs and the MFU).
        gpu_decode_frames_per_s: measured GPU JPEG decoding frames/s (None: the CPU decodes).
        decode_cores_per_gpu_node: cores of a GPU node left to the data loader.
        train_steps, train_batch, frames_per_clip: the paper's schedule (presets/rice_paper.yaml).
        min_batch_per_gpu: below this many clips per GPU a step no longer fills the GPU: caps
            the GPUs one global batch can use.
        multi_node_efficiency: throughput share kept when training spans several GPUs.
        eval_frames_per_query: frames of a query clip embedded by evaluate (T).
        webdataset_samples_per_shard: ``download.number_sample_per_shard`` with webdataset output.
        cpu_node_usd_per_hour, gpu_node_usd_per_hour: price of a node-hour (example figures).
        storage_usd_per_gb_month, put_usd_per_1000, get_usd_per_1000: object store prices (example).
        s3_request_latency_s, dvc_jobs: one request's latency and DVC's parallel requests.
        dvc_max_seconds, dvc_max_manifest_gib: when a DVC-tracked directory stops being workable.
    """

    cores_per_node: int = 16
    memory_gib_per_node: float = 128.0
    network_gbit_per_node: float = 10.0
    network_efficiency: float = 0.7
    disk_mb_per_s_per_node: float = 1000.0
    source_kb_per_image: float = 100.0
    stored_kb_per_image: float = 50.0
    origin_img_per_s: float = math.inf
    gpu_name: str = "H100 SXM"
    gpu_peak_tflops: float = 989.4
    gpu_mfu: float = 0.40
    gpu_train_img_per_s: float | None = None
    gpu_embed_img_per_s: float | None = None
    gpu_decode_frames_per_s: float | None = None
    decode_cores_per_gpu_node: int = 14
    train_steps: int = 5000
    train_batch: int = 128
    frames_per_clip: int = 10
    min_batch_per_gpu: int = 16
    multi_node_efficiency: float = 0.9
    eval_frames_per_query: int = 10
    webdataset_samples_per_shard: int = 1000
    cpu_node_usd_per_hour: float = 0.70
    gpu_node_usd_per_hour: float = 4.00
    storage_usd_per_gb_month: float = 0.023
    put_usd_per_1000: float = 0.005
    get_usd_per_1000: float = 0.0004
    s3_request_latency_s: float = 0.03
    dvc_jobs: int = 64
    dvc_max_seconds: float = 3600.0
    dvc_max_manifest_gib: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and not value > 0:
                raise ValueError(f"assumption {f.name} must be > 0, got {value!r}")
        if self.network_efficiency > 1 or self.multi_node_efficiency > 1 or self.gpu_mfu > 1:
            raise ValueError("network_efficiency, multi_node_efficiency and gpu_mfu are shares (<= 1)")
        if self.decode_cores_per_gpu_node > self.cores_per_node:
            raise ValueError("decode_cores_per_gpu_node exceeds cores_per_node")

    @property
    def network_bytes_per_s(self) -> float:
        """Bytes per second one node moves."""
        return self.network_gbit_per_node * 1e9 / 8 * self.network_efficiency


#: The unit costs the projection needs, with their units (every rate per CPU-second: one core).
UNIT_COSTS: dict[str, str] = {
    "download_img_per_s_core": "images per CPU-second of the download stage (fetch, resize to 224 px, store, check)",
    "parse_rows_per_s": "training_videoinfo rows per CPU-second of the project's parser",
    "validate_rows_per_s": "check-table rows per CPU-second of the validate stage (without image decoding)",
    "validate_rss_bytes_per_row": "peak memory of the validate stage per check-table row (bytes)",
    "prepare_clips_per_s": "training clips (release density, ~118 frames each) per CPU-second of prepare",
    "prepare_rss_bytes_per_clip": "peak memory of prepare per training clip (bytes)",
    "decode_frames_per_s_core": "224 px frames decoded and transformed for training per CPU-second",
    "embed_img_per_s_cpu": "images per CPU-second through the encoder at the demo setting",
    "embed_img_per_s_cpu_paper": "images per CPU-second through the encoder at the paper's setting (ViT-B/32, 224 px)",
    "embed_gflop_per_image": "forward GFLOP per image at the paper's setting (counted)",
    "train_gflop_per_image": "training-step GFLOP (forward + backward) per image at the paper's setting",
    "index_build_s": "CPU-seconds to build the 110 flat per-livestream indexes at LPR4M test scale",
    "search_queries_per_s": "queries per CPU-second searched in their livestream's flat index (k = 10)",
    "dvc_add_files_per_s": "files per CPU-second of `dvc add` on a directory output",
    "dvc_push_files_per_s": "files per CPU-second of `dvc push` to a local remote",
    "dvc_dir_bytes_per_entry": "bytes per file in DVC's .dir manifest",
    "md5_mb_per_s_core": "MB hashed per CPU-second with MD5 (DVC's content hash)",
    "dvc_tree_bytes_per_entry": "bytes of memory per file when DVC loads the .dir manifest",
}


def check_unit_costs(units: Mapping[str, float]) -> None:
    """Raise ``ValueError`` naming every unit cost that is missing or not a positive number."""
    bad = [k for k in UNIT_COSTS if not (isinstance(units.get(k), int | float) and units[k] > 0)]
    if bad:
        raise ValueError("unit costs missing or not > 0: " + ", ".join(f"{k}={units.get(k)!r}" for k in bad))


@dataclass(frozen=True)
class Phase:
    """An amount of work and the throughput (work units/s) of each resource that can bound it."""

    name: str
    work: float
    unit: str
    rates: Mapping[str, float]

    def __post_init__(self) -> None:
        if self.work < 0 or not self.rates or any(not r > 0 for r in self.rates.values()):
            raise ValueError(f"phase {self.name}: work must be >= 0 and every rate > 0, got {dict(self.rates)}")

    @property
    def bound(self) -> str:
        """The resource with the smallest throughput."""
        return min(self.rates, key=lambda k: self.rates[k])

    @property
    def seconds(self) -> float:
        """``work`` at the bound's throughput."""
        return self.work / self.rates[self.bound]


@dataclass(frozen=True)
class StageProjection:
    """One stage at full scale on some nodes."""

    stage: str
    node_kind: str  # "cpu" or "gpu"
    nodes: int  # nodes the stage uses (a one-pod stage: 1)
    scales: bool  # whether it uses more nodes when given more
    phases: tuple[Phase, ...]
    usd_per_node_hour: float
    memory_gib: float = math.nan  # estimated peak memory on one node (nan: not estimated)
    memory_limit_gib: float = math.inf
    note: str = ""

    @property
    def seconds(self) -> float:
        """Wall time: the phases one after the other."""
        return sum(p.seconds for p in self.phases)

    @property
    def bound(self) -> str:
        """``memory`` when it does not fit a node, else the bound of its longest phase."""
        if self.memory_gib > self.memory_limit_gib:
            return "memory"
        return max(self.phases, key=lambda p: p.seconds).bound

    @property
    def node_hours(self) -> float:
        return self.nodes * self.seconds / 3600

    @property
    def cost_usd(self) -> float:
        return self.node_hours * self.usd_per_node_hour


def gpu_rates(units: Mapping[str, float], a: Assumptions) -> dict[str, float]:
    """Images/s of one GPU for training and for embedding: measured when given, else peak x MFU / FLOPs."""
    flops = a.gpu_peak_tflops * 1e12 * a.gpu_mfu
    return {
        "train": a.gpu_train_img_per_s or flops / (units["train_gflop_per_image"] * 1e9),
        "embed": a.gpu_embed_img_per_s or flops / (units["embed_gflop_per_image"] * 1e9),
    }


def _loader_rates(units: Mapping[str, float], a: Assumptions) -> dict[str, float]:
    """Frames/s that feed one GPU node: JPEG decoding (CPU cores, or the GPU) and the network."""
    decode = (a.gpu_decode_frames_per_s if a.gpu_decode_frames_per_s
              else a.decode_cores_per_gpu_node * units["decode_frames_per_s_core"])
    return {"JPEG decode": decode, "network": a.network_bytes_per_s / (a.stored_kb_per_image * 1e3)}


def project(units: Mapping[str, float], nodes: int, a: Assumptions = Assumptions(),
            scale: FullScale = LPR4M) -> list[StageProjection]:
    """Each stage of the pipeline at full LPR4M scale given ``nodes`` nodes of its kind.

    Args:
        units: the unit costs (:data:`UNIT_COSTS` keys; per CPU-second).
        nodes: nodes available to a stage that scales (CPU nodes for the download, GPU nodes
            for training); one-pod stages use one.
        a: the assumptions.
        scale: the dataset's size.

    Returns:
        One :class:`StageProjection` per stage, in pipeline order.
    """
    check_unit_costs(units)
    if nodes < 1:
        raise ValueError(f"nodes must be >= 1, got {nodes}")
    cores, net = a.cores_per_node, a.network_bytes_per_s
    cpu_usd, gpu_usd, mem = a.cpu_node_usd_per_hour, a.gpu_node_usd_per_hour, a.memory_gib_per_node
    out: list[StageProjection] = []

    # download: img2dataset over N nodes (pyspark / ray), every node fetching and resizing
    out.append(StageProjection(
        "download", "cpu", nodes, True,
        (Phase("fetch, resize, store", scale.images, "images", {
            "CPU (JPEG decode + resize)": nodes * cores * units["download_img_per_s_core"],
            "network": nodes * net / (a.source_kb_per_image * 1e3),
            "image host": a.origin_img_per_s,
        }),),
        cpu_usd, note=f"{scale.images:,} images; {a.source_kb_per_image:.0f} KB fetched per image"))

    stored = scale.images * a.stored_kb_per_image * 1e3
    shards = math.ceil(scale.images / a.webdataset_samples_per_shard)
    push_files = dvc_file_costs(shards, units, a)
    out.append(StageProjection(
        "dvc add + push (download output)", "cpu", 1, False,
        (Phase("hash (dvc add)", stored, "bytes", {"CPU (MD5)": cores * units["md5_mb_per_s_core"] * 1e6,
                                                   "disk": a.disk_mb_per_s_per_node * 1e6}),
         Phase("upload (dvc push)", stored, "bytes", {"network": net}),
         Phase("per-file DVC work", shards, "files", {"DVC per file": shards / push_files["seconds"]})),
        cpu_usd, note=f"{stored / 1e12:.1f} TB in {shards:,} webdataset shards, from one pod"))
    out.append(StageProjection(
        "dvc pull (download output, per pod)", "cpu", 1, False,
        (Phase("download shards", stored, "bytes", {"network": net, "disk": a.disk_mb_per_s_per_node * 1e6}),
         Phase("per-file DVC work", shards, "files", {"DVC per file": shards / push_files["seconds"]})),
        cpu_usd, note=f"{stored / 1e12:.1f} TB into each pod whose stage depends on data/download"))

    parse = Phase("parse training_videoinfo", scale.train_clips, "rows", {"CPU": cores * units["parse_rows_per_s"]})
    rows = scale.check_rows
    out.append(StageProjection(
        "validate", "cpu", 1, False,
        (parse, Phase("check tables", rows, "rows", {"CPU": cores * units["validate_rows_per_s"]})),
        cpu_usd, memory_gib=rows * units["validate_rss_bytes_per_row"] / GIB, memory_limit_gib=mem,
        note=f"{rows:,} check-table rows (manifests, clips, test tables)"))

    out.append(StageProjection(
        "prepare", "cpu", 1, False,
        (Phase("clip tables", scale.train_clips, "clips", {"CPU": cores * units["prepare_clips_per_s"]}),),
        cpu_usd, memory_gib=scale.train_clips * units["prepare_rss_bytes_per_clip"] / GIB, memory_limit_gib=mem,
        note=f"{scale.train_clips:,} clips"))

    gpu = gpu_rates(units, a)
    loader = _loader_rates(units, a)
    images_per_clip = a.frames_per_clip + 1
    for name, clips, cap in (
        ("train_encoder (paper schedule)", a.train_steps * a.train_batch, max(1, a.train_batch // a.min_batch_per_gpu)),
        ("train_encoder (one epoch)", scale.train_clips, nodes),
    ):
        used = min(nodes, cap)
        eff = used * (a.multi_node_efficiency if used > 1 else 1.0)
        rates = {"GPU": eff * gpu["train"], **{k: eff * v for k, v in loader.items()}}
        note = f"{clips:,} clips x {images_per_clip} images"
        if used < nodes:
            note += f"; a global batch of {a.train_batch} fills at most {cap} GPUs"
        out.append(StageProjection(name, "gpu", used, True,
                                   (Phase("training steps", clips * images_per_clip, "images", rates),),
                                   gpu_usd, note=note))

    search = Phase("faiss search", scale.test_queries, "queries", {"CPU": cores * units["search_queries_per_s"]})
    build = Phase("build indexes", units["index_build_s"], "CPU-seconds", {"CPU": cores})
    query_frames = scale.test_queries * a.eval_frames_per_query
    # on a CPU node the same cores decode the JPEGs and run the encoder
    cpu_embed = cores / (1 / units["embed_img_per_s_cpu_paper"] + 1 / units["decode_frames_per_s_core"])
    for kind, usd, embed_rates in (
        ("gpu", gpu_usd, {"GPU": gpu["embed"], **loader}),
        ("cpu", cpu_usd, {"CPU (decode + encoder)": cpu_embed, "network": loader["network"]}),
    ):
        suffix = "" if kind == "gpu" else " on a CPU node"
        out.append(StageProjection(
            f"index_gallery{suffix}", kind, 1, False,
            (Phase("embed gallery images", scale.test_gallery, "images", embed_rates), build), usd,
            note=f"{scale.test_gallery:,} images, {scale.test_livestreams} indexes"))
        out.append(StageProjection(
            f"evaluate{suffix}", kind, 1, False,
            (Phase("embed query frames", query_frames, "images", embed_rates), search), usd,
            note=f"{scale.test_queries:,} queries x {a.eval_frames_per_query} frames"))
    return out


def dvc_file_costs(n_files: int, units: Mapping[str, float], a: Assumptions) -> dict[str, float]:
    """What tracking ``n_files`` files in one DVC directory output costs on one pod.

    Returns:
        ``seconds`` (``dvc add`` + ``dvc push`` per-file work: the CPU of a node, or the
        remote's requests with ``dvc_jobs`` in flight, whichever is slower; bytes not counted),
        ``manifest_gib`` (the ``.dir`` file), ``memory_gib`` (DVC's objects for it),
        ``put_usd`` (one request per file on the first push), ``get_usd`` (per full pull).
    """
    cpu_per_file = (1 / units["dvc_add_files_per_s"] + 1 / units["dvc_push_files_per_s"]) / a.cores_per_node
    remote_per_file = a.s3_request_latency_s / a.dvc_jobs
    return {
        "seconds": n_files * max(cpu_per_file, remote_per_file),
        "manifest_gib": n_files * units["dvc_dir_bytes_per_entry"] / GIB,
        "memory_gib": n_files * units["dvc_tree_bytes_per_entry"] / GIB,
        "put_usd": n_files * a.put_usd_per_1000 / 1000,
        "get_usd": n_files * a.get_usd_per_1000 / 1000,
    }


def dvc_file_threshold(units: Mapping[str, float], a: Assumptions) -> int:
    """The most files one DVC directory output can hold while a push's per-file work stays under
    ``dvc_max_seconds`` and its ``.dir`` manifest under ``dvc_max_manifest_gib``."""
    one = dvc_file_costs(1, units, a)
    return int(min(a.dvc_max_seconds / one["seconds"], a.dvc_max_manifest_gib / one["manifest_gib"]))


def storage_usd_per_month(n_images: int, a: Assumptions) -> float:
    """Object-store price of keeping ``n_images`` images at the stored size (one copy)."""
    return n_images * a.stored_kb_per_image * 1e3 / GB * a.storage_usd_per_gb_month


def format_seconds(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3.4 h``, ``2.1 d``."""
    if not math.isfinite(seconds):
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _usd(x: float) -> str:
    return f"${x:,.0f}" if x >= 10 else f"${x:,.2f}"


def markdown_table(units: Mapping[str, float], nodes: Sequence[int] = (1, 8, 64),
                   a: Assumptions = Assumptions(), scale: FullScale = LPR4M) -> str:
    """The projection as a Markdown table: one row per stage, wall time and cost per node count."""
    runs = {n: project(units, n, a, scale) for n in nodes}
    head = ["stage", "work at full scale", "runs on", "bound"] + [f"{n} node{'s' if n > 1 else ''}" for n in nodes]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for i, first in enumerate(runs[nodes[0]]):
        bounds = []
        for n in nodes:
            b = runs[n][i].bound
            if b == "memory":
                b = f"memory (~{runs[n][i].memory_gib:,.0f} GiB on one node)"
            if b not in bounds:
                bounds.append(b)
        where = (f"{first.node_kind.upper()} nodes" if first.scales else f"1 {first.node_kind.upper()} pod")
        cells = [f"{format_seconds(runs[n][i].seconds)} ({_usd(runs[n][i].cost_usd)})" for n in nodes]
        lines.append("| " + " | ".join([first.stage, first.note, where, " / ".join(bounds), *cells]) + " |")
    return "\n".join(lines)


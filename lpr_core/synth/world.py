"""Generate a synthetic world in the exact LPR4M formats.

A world of the ``default`` family is a directory laid out as a user would place the real LPR4M
release, flat::

    DIR/training_videoinfo_<clips>.txt        DIR/test_videoid_asr_<queries>.txt
    DIR/training_frame_url_<frames>.txt       DIR/test_image_title_<titles>.txt
    DIR/training_image_url_<images>.txt       DIR/test_videoid_to_gtimage_<queries>.json
    DIR/test_frame_url_<frames>.txt           DIR/test_frameid2gtbox_<queries>_<boxed frames>.json
    DIR/test_image_url_<images>.txt           DIR/test_liveid_to_gallery_<livestreams>.json
    DIR/_source/frames/<live_id>/<frame_id>.jpg   the JPEGs that ``lpr serve`` serves
    DIR/_source/images/<image_id>.jpg
    DIR/_source/world.json       generator, size, seed and counts
    DIR/_source/products.json    hidden truth per image: category, shape, colour family, pattern
    DIR/_source/clips.json       hidden truth per clip: split, product, scale/duration/number types

A world of another family (:mod:`lpr_core.synth.families`, e.g. ``release``) differs where the
release's files may differ: frame geometry, image sizes, studio, list syntax, box precision,
boxes past the frame edge, sub-folders (``train/``, ``test/annotations/``), no ``clips.json``.

Annotation and URL files are written with :mod:`lpr_core.formats.writers`; ids follow
:mod:`lpr_core.ids`. A world is a pure function of ``(family, size, seed, url_prefix)``: the same
arguments give byte-identical files, whatever the number of worker processes.

Type columns are measured on the rendered frames, never just requested: the scale type is the
median box-area / frame-area ratio against :data:`~.render.SCALE_AREA_BOUNDS`, the visible
duration type the share of frames with a box against :data:`~.render.DURATION_BOUNDS`, the
product number type whether other products of the shop appear in the clip.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lpr_core import ids
from lpr_core.formats import writers
from lpr_core.formats.discovery import find_lpr4m_files
from lpr_core.formats.records import VideoInfoRow
from lpr_core.formats.schema import FILE_PATTERNS, URL_LISTS
from lpr_core.synth.families import DEFAULT_FAMILY, FAMILIES, WorldFamily, family_of
from lpr_core.synth.layout import SOURCE_DIR, source_path
from lpr_core.synth.products import ProductLook, random_look
from lpr_core.synth.render import (
    SCALE_REQUEST,
    ClipPlan,
    SceneLook,
    duration_type_of,
    random_scene,
    render_clip,
    render_gallery_image,
    scale_type_of,
)
from lpr_core.synth.vocab import CATEGORIES, COLOUR_FAMILIES, brand_name, make_asr, make_title

__all__ = [
    "GENERATOR_VERSION",
    "DEFAULT_URL_PREFIX",
    "SOURCE_DIR",
    "WorldConfig",
    "SIZES",
    "FAMILIES",
    "Product",
    "Clip",
    "Livestream",
    "WorldSummary",
    "plan_world",
    "generate_world",
    "set_url_prefix",
    "source_path",
    "WorldExistsError",
]

GENERATOR_VERSION = 1
DEFAULT_URL_PREFIX = "http://127.0.0.1:8000/lpr/"

_EPOCH_2022_MS = 1_640_995_200_000
_YEAR_MS = 365 * 86_400_000
_DURATION_P = (0.25, 0.35, 0.4)
_MULTIPLE_P = 0.45


@dataclass(frozen=True)
class WorldConfig:
    """The shape of a world. Ranges are inclusive ``(low, high)``.

    Attributes:
        name: the preset's name (recorded in ``_source/world.json``).
        train_livestreams: number of training livestreams.
        test_livestreams: number of test livestreams (distinct from the training ones).
        products_per_gallery: products in one livestream's shop.
        train_clips_per_product: training clips per training product.
        query_fraction: share of test products that get a query clip (at least one per livestream).
        frames_per_clip: frames per clip.
        categories_per_live: categories one shop sells.
        colour_families_per_live: colour families of one shop's products.
        duplicate_listing_rate: share of test products listed twice in the gallery (two images,
            both ground truth of the product's queries).
    """

    name: str
    train_livestreams: int
    test_livestreams: int
    products_per_gallery: tuple[int, int]
    train_clips_per_product: tuple[int, int]
    query_fraction: float
    frames_per_clip: tuple[int, int]
    categories_per_live: tuple[int, int] = (2, 3)
    colour_families_per_live: tuple[int, int] = (3, 4)
    duplicate_listing_rate: float = 0.04


#: Presets: ``tiny`` for unit tests (seconds), ``small`` for integration tests, ``demo`` for the
#: CPU pipeline (~5k frames, ~360 images).
SIZES: dict[str, WorldConfig] = {
    "tiny": WorldConfig("tiny", 2, 2, (6, 6), (1, 2), 1.0, (4, 6)),
    "small": WorldConfig("small", 3, 2, (12, 15), (1, 2), 0.9, (6, 8)),
    "demo": WorldConfig("demo", 6, 4, (32, 40), (1, 3), 0.85, (8, 10)),
}


@dataclass(frozen=True)
class Product:
    """A shop product and its gallery image."""

    image_id: str
    live_id: str
    category_id: int
    brand: str
    look: ProductLook
    title: str
    gallery_size: tuple[int, int]
    gallery_seed: int
    twin_of: str | None = None


@dataclass(frozen=True)
class Clip:
    """A clip: its render plan plus its text annotations."""

    plan: ClipPlan
    live_id: str
    split: str
    category_id: int
    asr: str


@dataclass(frozen=True)
class Livestream:
    """A livestream: its studio, its shop gallery and its clips."""

    live_id: str
    split: str
    scene: SceneLook
    products: tuple[Product, ...]
    clips: tuple[Clip, ...]


@dataclass
class WorldSummary:
    """What :func:`generate_world` wrote.

    Attributes:
        out_dir: the world directory.
        size: the preset name.
        seed: the seed.
        family: the world family's name.
        url_prefix: the prefix of every URL in the URL files.
        counts: livestreams, clips, frames, images and boxes per split.
        files: LPR4M file kind (a key of ``FILE_PATTERNS``) -> path.
        seconds: wall-clock generation time.
    """

    out_dir: Path
    size: str
    seed: int
    url_prefix: str
    counts: dict[str, int]
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    family: str = DEFAULT_FAMILY


class WorldExistsError(FileExistsError):
    """Raised when the output directory holds something that is not a synthetic world."""


def _rng(seed: int, *keys: int | str) -> np.random.Generator:
    """A generator seeded by the world seed and a path of keys (stable across processes)."""
    key = "\x1f".join(str(k) for k in keys).encode("utf-8")
    word = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
    return np.random.default_rng(np.random.SeedSequence([int(seed), word]))


def _uuid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.integers(0, 256, 16, dtype=np.uint8).tobytes(), version=4))


def _between(rng: np.random.Generator, lo_hi: tuple[int, int]) -> int:
    return int(rng.integers(lo_hi[0], lo_hi[1] + 1))


def _frame_size(rng: np.random.Generator) -> tuple[int, int]:
    ratio = rng.uniform(0.68, 0.8)
    if rng.random() < 0.15:  # portrait phone stream
        h = int(rng.integers(288, 353))
        return round(h * ratio), h
    w = int(rng.integers(272, 369))
    return w, round(w * ratio)


def _visible(rng: np.random.Generator, n: int, duration_type: int) -> tuple[bool, ...]:
    counts = [k for k in range(1, n + 1) if duration_type_of(k / n) == duration_type]
    if not counts:  # very short clips cannot express every type
        counts = [1]
    k = int(rng.choice(counts))
    start = int(rng.integers(0, n - k + 1))
    return tuple(start <= i < start + k for i in range(n))


def _plan_livestream(config: WorldConfig, seed: int, split: str, index: int, used: set[str],
                     family: WorldFamily) -> Livestream:
    rng = _rng(seed, "livestream", split, index)

    def new_id() -> str:
        while True:
            u = _uuid(rng)
            if u not in used:
                used.add(u)
                return u

    live_id = new_id()
    scene = random_scene(rng)
    if family.scene_style != scene.style:
        scene = dataclasses.replace(scene, style=family.scene_style)
    cats = [CATEGORIES[int(i)] for i in rng.choice(len(CATEGORIES), _between(rng, config.categories_per_live), replace=False)]
    fams = [str(f) for f in rng.choice(list(COLOUR_FAMILIES), _between(rng, config.colour_families_per_live), replace=False)]
    brands = [brand_name(rng) for _ in range(int(rng.integers(2, 4)))]

    products: list[Product] = []
    for _ in range(_between(rng, config.products_per_gallery)):
        cat = cats[int(rng.integers(len(cats)))]
        colour = fams[int(rng.integers(len(fams)))]
        look = random_look(rng, str(rng.choice(cat.families)), colour)
        brand = brands[int(rng.integers(len(brands)))]
        gsize = family.gallery_size(rng)
        p = Product(new_id(), live_id, cat.category_id, brand, look, make_title(rng, cat, brand, colour, look.pattern),
                    gsize, int(rng.integers(0, 2**62)))
        products.append(p)
        if split == "test" and rng.random() < config.duplicate_listing_rate:
            products.append(dataclasses.replace(
                p, image_id=new_id(), title=make_title(rng, cat, brand, colour, look.pattern),
                gallery_size=family.gallery_size(rng),
                gallery_seed=int(rng.integers(0, 2**62)), twin_of=p.image_id))
    originals = [p for p in products if p.twin_of is None]

    # which products get clips, and how many
    targets: list[Product] = []
    if split == "train":
        for p in originals:
            targets += [p] * _between(rng, config.train_clips_per_product)
    else:
        chosen = [p for p in originals if rng.random() < config.query_fraction] or [originals[0]]
        targets = chosen
    order = rng.permutation(len(targets))
    targets = [targets[int(i)] for i in order]

    clips: list[Clip] = []
    stream_size = family.stream_frame_size(rng)
    edge_clips = family.edge_clips(rng, len(targets))
    t = _EPOCH_2022_MS + int(rng.integers(0, _YEAR_MS))
    for k, p in enumerate(targets):
        n = _between(rng, config.frames_per_clip)
        interval = int(rng.integers(800, 2500))
        start = t + int(rng.integers(5_000, 120_000))
        end = start + (n - 1) * interval + int(rng.integers(0, interval))
        t = end
        clip_id = ids.make_clip_id(live_id, start, end)
        frame_ids = tuple(ids.make_frame_id(clip_id, i) for i in range(n))
        others = [o for o in originals if o.image_id != p.image_id]
        distractors: list[str] = []
        if others and rng.random() < _MULTIPLE_P:
            same = [o for o in others if o.category_id == p.category_id]
            for _ in range(int(rng.integers(1, 4))):
                pool = same if same and rng.random() < 0.6 else others
                o = pool[int(rng.integers(len(pool)))]
                if o.image_id not in distractors:
                    distractors.append(o.image_id)
        scale_type = int(rng.choice(3, p=family.scale_p))
        lo, hi = SCALE_REQUEST[scale_type]
        plan = ClipPlan(
            clip_id=clip_id,
            frame_ids=frame_ids,
            size=stream_size or _frame_size(rng),
            target=p.image_id,
            distractors=tuple(distractors),
            visible=_visible(rng, n, int(rng.choice(3, p=_DURATION_P))),
            scale_area=float(rng.uniform(lo, hi)),
            seed=int(rng.integers(0, 2**62)),
            edge_out=family.clip_edge_out(rng) if k in edge_clips else 0.0,
            margin=family.pose_margin,
        )
        cat = CATEGORIES[p.category_id]
        clips.append(Clip(plan, live_id, split, p.category_id, make_asr(rng, cat, p.look.colour_family, p.look.pattern)))
    gallery_order = rng.permutation(len(products))
    products = [products[int(i)] for i in gallery_order]
    return Livestream(live_id, split, scene, tuple(products), tuple(clips))


def plan_world(size: str | WorldConfig = "tiny", seed: int = 0,
               family: str | WorldFamily = DEFAULT_FAMILY) -> list[Livestream]:
    """Plan a world (ids, products, clips, timings) without rendering anything.

    Args:
        size: a preset name of :data:`SIZES` or a :class:`WorldConfig`.
        seed: the world's seed.
        family: a name of :data:`FAMILIES` or a :class:`~lpr_core.synth.families.WorldFamily`.

    Returns:
        The training livestreams followed by the test livestreams.
    """
    config = _config(size)
    fam = family_of(family)
    used: set[str] = set()
    lives = [_plan_livestream(config, seed, "train", i, used, fam) for i in range(config.train_livestreams)]
    lives += [_plan_livestream(config, seed, "test", i, used, fam) for i in range(config.test_livestreams)]
    return lives


def _config(size: str | WorldConfig) -> WorldConfig:
    if isinstance(size, WorldConfig):
        return size
    if size not in SIZES:
        raise ValueError(f"unknown world size {size!r}; choose one of {', '.join(SIZES)}")
    return SIZES[size]


def _write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --- rendering tasks (run in worker processes) ---------------------------------------------------


@dataclass(frozen=True)
class _ClipTask:
    root: str
    scene: SceneLook
    looks: dict[str, ProductLook]
    plans: tuple[ClipPlan, ...]


@dataclass(frozen=True)
class _GalleryTask:
    root: str
    items: tuple[tuple[str, ProductLook, tuple[int, int], int], ...]


def _run_task(task: _ClipTask | _GalleryTask) -> tuple[int, list[tuple[str, list]]]:
    """Render a task and write its JPEGs; return (images written, per-clip frame boxes)."""
    if isinstance(task, _GalleryTask):
        for image_id, look, size, seed in task.items:
            p = source_path(task.root, image_id)
            assert p is not None
            _write_bytes(p, render_gallery_image(look, size, seed))
        return len(task.items), []
    results: list[tuple[str, list]] = []
    n = 0
    for plan in task.plans:
        frames = render_clip(plan, task.scene, task.looks)
        for fr in frames:
            p = source_path(task.root, fr.frame_id)
            assert p is not None
            _write_bytes(p, fr.jpeg)
        n += len(frames)
        results.append((plan.clip_id, [(fr.box, fr.area_fraction, fr.extent) for fr in frames]))
    return n, results


def _tasks(lives: list[Livestream], root: Path, frames_per_task: int = 90) -> Iterator[_ClipTask | _GalleryTask]:
    for live in lives:
        yield _GalleryTask(str(root), tuple((p.image_id, p.look, p.gallery_size, p.gallery_seed) for p in live.products))
        looks = {p.image_id: p.look for p in live.products}
        chunk: list[ClipPlan] = []
        size = 0
        for c in live.clips:
            chunk.append(c.plan)
            size += len(c.plan.frame_ids)
            if size >= frames_per_task:
                yield _ClipTask(str(root), live.scene, looks, tuple(chunk))
                chunk, size = [], 0
        if chunk:
            yield _ClipTask(str(root), live.scene, looks, tuple(chunk))


def _default_workers(n_frames: int) -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return 1 if n_frames < 600 else max(1, min(cpus, 8))


def _render_all(lives: list[Livestream], root: Path, workers: int, progress: bool) -> dict[str, list]:
    tasks = list(_tasks(lives, root))
    total = sum(len(t.items) if isinstance(t, _GalleryTask) else sum(len(p.frame_ids) for p in t.plans) for t in tasks)
    boxes: dict[str, list] = {}
    with tqdm(total=total, unit="img", desc="synth", disable=not progress, leave=False) as bar:
        if workers <= 1:
            for t in tasks:
                n, res = _run_task(t)
                boxes.update(res)
                bar.update(n)
        else:
            # spawn: no fork of a parent that may run threads (servers, test harnesses)
            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
                futures = [ex.submit(_run_task, t) for t in tasks]
                for f in as_completed(futures):
                    n, res = f.result()
                    boxes.update(res)
                    bar.update(n)
    return boxes


# --- writing -----------------------------------------------------------------------------------


def _check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not prefix.endswith("/") or any(c.isspace() for c in prefix):
        raise ValueError(f"URL prefix must be a string without whitespace ending with '/', got {prefix!r}")
    return prefix


def _is_world(path: Path) -> bool:
    return (path / SOURCE_DIR / "world.json").is_file()


def _prepare_out(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise WorldExistsError(f"{out_dir} exists and is not a directory")
        if any(out_dir.iterdir()) and not _is_world(out_dir) and not overwrite:
            raise WorldExistsError(
                f"{out_dir} is not empty and is not a synthetic world; choose another directory or overwrite it")


def generate_world(
    out_dir: str | Path,
    size: str | WorldConfig = "tiny",
    seed: int = 0,
    url_prefix: str = DEFAULT_URL_PREFIX,
    *,
    family: str | WorldFamily = DEFAULT_FAMILY,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> WorldSummary:
    """Write a synthetic world in the exact LPR4M formats.

    The world is built in a sibling temporary directory and renamed into place at the end, so an
    interrupted run leaves no half world behind. An existing synthetic world at ``out_dir`` is
    replaced; any other non-empty directory is refused unless ``overwrite``.

    Args:
        out_dir: the world directory.
        size: a preset of :data:`SIZES` (``tiny``, ``small``, ``demo``) or a :class:`WorldConfig`.
        seed: the seed; the same arguments give byte-identical files.
        url_prefix: prefix of every URL (must end with ``/``); see :func:`set_url_prefix`.
        family: the world family (:data:`FAMILIES`: ``default``, ``release``).
        workers: rendering processes (default: 1 for small worlds, else the available CPUs).
        overwrite: replace a non-empty directory that is not a synthetic world.
        progress: show a progress bar.

    Returns:
        A :class:`WorldSummary` with the counts and the paths of the LPR4M files.

    Raises:
        ValueError: on an unknown size or family, or a malformed URL prefix.
        WorldExistsError: when ``out_dir`` holds something else and ``overwrite`` is false.
    """
    t0 = time.perf_counter()
    config = _config(size)
    fam = family_of(family)
    _check_prefix(url_prefix)
    out_dir = Path(out_dir).resolve()
    _prepare_out(out_dir, overwrite)
    lives = plan_world(config, seed, fam)

    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / SOURCE_DIR / "images").mkdir(parents=True)
    for live in lives:
        (tmp / SOURCE_DIR / "frames" / live.live_id).mkdir(parents=True)

    n_frames = sum(len(c.plan.frame_ids) for live in lives for c in live.clips)
    boxes = _render_all(lives, tmp, workers or _default_workers(n_frames), progress)
    counts, files = _write_annotations(tmp, lives, boxes, url_prefix, fam, seed)
    _write_truth(tmp, lives, boxes, config, seed, counts, fam)

    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    files = {k: out_dir / p.relative_to(tmp) for k, p in files.items()}
    return WorldSummary(out_dir, config.name, seed, url_prefix, counts, files, time.perf_counter() - t0, fam.name)


def _clip_types(clip: Clip, frame_boxes: list) -> tuple[list[list[tuple[int, int, int, int]]], int, int, int]:
    """Per frame the rendered box (as a list), and the measured scale, duration and number types."""
    per_frame = [[box] if box is not None else [] for box, *_ in frame_boxes]
    areas = [a for box, a, *_ in frame_boxes if box is not None]
    n = len(frame_boxes)
    scale = scale_type_of(float(np.median(areas))) if areas else 0
    duration = duration_type_of(len(areas) / n)
    number = 1 if clip.plan.distractors else 0
    return per_frame, scale, duration, number


def _annotated(clip: Clip, frame_boxes: list, family: WorldFamily, seed: int) -> list[list]:
    """Per frame the boxes the annotation files hold (the family's annotator, see
    :meth:`~lpr_core.synth.families.WorldFamily.annotate`)."""
    rng = _rng(seed, "annotate", clip.plan.clip_id)
    size = clip.plan.size
    return [[family.annotate(rng, box, extent, size)] if box is not None else [] for box, _, extent in frame_boxes]


def _write_annotations(root: Path, lives: list[Livestream], boxes: dict[str, list],
                       prefix: str, family: WorldFamily, seed: int) -> tuple[dict[str, int], dict[str, Path]]:
    products = {p.image_id: p for live in lives for p in live.products}
    rows: list[VideoInfoRow] = []
    train_frames: list[str] = []
    train_images: list[str] = []
    test_frames: list[str] = []
    test_images: list[str] = []
    asr: dict[str, str] = {}
    titles: dict[str, str] = {}
    gt: dict[str, list[str]] = {}
    frame_boxes: dict[str, list] = {}
    gallery: dict[str, list[str]] = {}
    twins: dict[str, list[str]] = {}
    for live in lives:
        for p in live.products:
            if p.twin_of:
                twins.setdefault(p.twin_of, []).append(p.image_id)
    n_train_boxes = 0
    for live in lives:
        if live.split == "train":
            train_images += [p.image_id for p in live.products]
        else:
            test_images += [p.image_id for p in live.products]
            gallery[live.live_id] = [p.image_id for p in live.products]
            titles.update((p.image_id, p.title) for p in live.products)
        for clip in live.clips:
            plan = clip.plan
            per_frame, scale, duration, number = _clip_types(clip, boxes[plan.clip_id])
            if family.box_decimals is not None:
                per_frame = _annotated(clip, boxes[plan.clip_id], family, seed)
            target = products[plan.target]
            if live.split == "train":
                rows.append(VideoInfoRow(plan.clip_id, list(plan.frame_ids), per_frame, plan.target, target.title,
                                         clip.category_id, CATEGORIES[clip.category_id].name, clip.asr, scale,
                                         duration, number))
                train_frames += plan.frame_ids
                n_train_boxes += sum(1 for b in per_frame if b)
            else:
                test_frames += plan.frame_ids
                asr[plan.clip_id] = clip.asr
                gt[plan.clip_id] = [plan.target] + twins.get(plan.target, [])
                frame_boxes.update((f, b) for f, b in zip(plan.frame_ids, per_frame) if b)

    counts = {
        "train_livestreams": sum(1 for live in lives if live.split == "train"),
        "train_clips": len(rows),
        "train_frames": len(train_frames),
        "train_boxed_frames": n_train_boxes,
        "train_images": len(train_images),
        "test_livestreams": len(gallery),
        "test_queries": len(gt),
        "test_frames": len(test_frames),
        "test_boxed_frames": len(frame_boxes),
        "test_gallery_images": len(test_images),
        "test_titles": len(titles),
    }
    names = {
        "videoinfo": f"training_videoinfo_{len(rows)}.txt",
        "train_frame_urls": f"training_frame_url_{len(train_frames)}.txt",
        "train_image_urls": f"training_image_url_{len(train_images)}.txt",
        "test_frame_urls": f"test_frame_url_{len(test_frames)}.txt",
        "test_image_urls": f"test_image_url_{len(test_images)}.txt",
        "test_asr": f"test_videoid_asr_{len(asr)}.txt",
        "test_titles": f"test_image_title_{len(titles)}.txt",
        "test_gt_images": f"test_videoid_to_gtimage_{len(gt)}.json",
        "test_frame_boxes": f"test_frameid2gtbox_{len(gt)}_{len(frame_boxes)}.json",
        "test_gallery": f"test_liveid_to_gallery_{len(gallery)}.json",
    }
    at = {kind: root / family.folder(kind) / name for kind, name in names.items()}
    files = {
        "videoinfo": writers.write_videoinfo(at["videoinfo"], rows, family.list_syntax),
        "train_frame_urls": writers.write_url_list(at["train_frame_urls"],
                                                   (ids.frame_url(prefix, f) for f in train_frames)),
        "train_image_urls": writers.write_url_list(at["train_image_urls"],
                                                   (ids.image_url(prefix, i) for i in train_images)),
        "test_frame_urls": writers.write_url_list(at["test_frame_urls"],
                                                  (ids.frame_url(prefix, f) for f in test_frames)),
        "test_image_urls": writers.write_url_list(at["test_image_urls"],
                                                  (ids.image_url(prefix, i) for i in test_images)),
        "test_asr": writers.write_test_asr(at["test_asr"], asr),
        "test_titles": writers.write_image_titles(at["test_titles"], titles),
        "test_gt_images": writers.write_gt_images(at["test_gt_images"], gt),
        "test_frame_boxes": writers.write_frame_boxes(at["test_frame_boxes"], frame_boxes),
        "test_gallery": writers.write_live_gallery(at["test_gallery"], gallery),
    }
    assert set(files) == set(FILE_PATTERNS)
    return counts, files


def _write_truth(root: Path, lives: list[Livestream], boxes: dict[str, list], config: WorldConfig, seed: int,
                 counts: dict[str, int], family: WorldFamily) -> None:
    products = {}
    clips = {}
    for live in lives:
        for p in live.products:
            products[p.image_id] = {
                "live_id": live.live_id, "split": live.split, "category_id": p.category_id,
                "category_name": CATEGORIES[p.category_id].name, "brand": p.brand, "shape": p.look.family,
                "colour_family": p.look.colour_family, "pattern": p.look.pattern, "logo": p.look.logo,
                "twin_of": p.twin_of,
            }
        for c in live.clips:
            _, scale, duration, number = _clip_types(c, boxes[c.plan.clip_id])
            clips[c.plan.clip_id] = {
                "split": live.split, "image_id": c.plan.target, "category_id": c.category_id,
                "scale_type": scale, "duration_type": duration, "number_type": number,
                "distractors": list(c.plan.distractors), "frame_size": list(c.plan.size),
            }
    src = root / SOURCE_DIR
    writers.atomic_write_text(src / "products.json", json.dumps(products, indent=1))
    if family.slice_labels:
        writers.atomic_write_text(src / "clips.json", json.dumps(clips, indent=1))
    world = {"generator": "lpr_core.synth", "version": GENERATOR_VERSION, "size": config.name,
             "config": dataclasses.asdict(config), "seed": seed, "counts": counts}
    if family.name != DEFAULT_FAMILY:  # (the default world's file predates families)
        world["family"] = family.name
    writers.atomic_write_text(src / "world.json", json.dumps(world, indent=1))


def set_url_prefix(world_dir: str | Path, prefix: str) -> int:
    """Rewrite the prefix of every URL in a world's four URL files, each atomically.

    Used when the image server got a free port after the world was generated.

    Args:
        world_dir: a directory holding the four LPR4M URL files (anywhere below it).
        prefix: the new prefix, ending with ``/`` (e.g. ``http://127.0.0.1:43121/lpr/``).

    Returns:
        The number of URLs rewritten.

    Raises:
        ValueError: on a malformed prefix, a missing URL file, two candidates for one, or a
            malformed URL (naming the file and line).
    """
    _check_prefix(prefix)
    world_dir = Path(world_dir)
    found = find_lpr4m_files(world_dir)
    total = 0
    for kind in URL_LISTS:
        paths = found.get(kind)
        if not paths:
            raise ValueError(f"{world_dir}: no {FILE_PATTERNS[kind]} file")
        parse = ids.parse_frame_url if kind.endswith("frame_urls") else ids.parse_image_url
        for path in paths:
            out = []
            with open(path, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    url = line.strip()
                    if not url:
                        continue
                    try:
                        _, item = parse(url)
                    except ids.InvalidIdError as exc:
                        raise ValueError(f"{path}:{lineno}: {exc}") from None
                    out.append(f"{prefix}{item}.jpg")
            writers.write_url_list(path, out)
            total += len(out)
    return total

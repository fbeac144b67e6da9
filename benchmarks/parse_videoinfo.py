"""Benchmark: parse one training_videoinfo part (real density) to Parquet with the project's reader.

Writes one part file like the release's (401,362 clips by default, ~118 frame ids per clip, boxes
on a subset of frames, Chinese titles and ASR) into ``--out``, converts it to Parquet with
``lpr_core.formats.parquet.convert_files`` in a subprocess (so that its time and peak RSS are the
parse's alone: RSS is sampled over the whole process tree, workers included), and compares it with
a plain line-by-line ``ast.literal_eval`` reader timed on a sample of rows and scaled to the file.

Usage::

    python benchmarks/parse_videoinfo.py                 # full size, ~4 GB of text in benchmarks/out
    python benchmarks/parse_videoinfo.py --rows 20000    # quick
    python benchmarks/parse_videoinfo.py --keep          # keep (and reuse) the input file

The last line is ``RESULT seconds=<parse time> ratio=<x> peak_rss_mb=<mb> rows_per_s=<n>``; the
ratio is (scaled line-by-line time) / (project parse time). Goals on 2 cores for the full part:
<= 60 s, <= 2 GB peak RSS, >= 10x.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REAL_ROWS = 401_362
MEAN_FRAMES = 118
DEFAULT_OUT = Path(__file__).resolve().parent / "out"

# ----------------------------------------------------------------------------- the input file

_CJK = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
_WORDS = [
    "宝宝们",
    "家人们",
    "链接",
    "上车",
    "今天",
    "直播间",
    "福利",
    "三号",
    "XL",
    "M码",
    "99元",
    "包邮",
    "OK",
]


def _uuid(rng: np.random.Generator) -> str:
    h = rng.bytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _text(rng: np.random.Generator, lo: int, hi: int) -> str:
    n = int(rng.integers(lo, hi))
    chars = [_CJK[i] for i in rng.integers(0, len(_CJK), n).tolist()]
    for pos in rng.integers(0, n, max(1, n // 12)).tolist():  # live-commerce words, sizes, prices
        chars[pos] = _WORDS[pos % len(_WORDS)] + (" " if pos % 3 == 0 else "")
    return "".join(chars).strip()


def _box_text(rng: np.random.Generator) -> str:
    x1, y1 = rng.uniform(0, 500), rng.uniform(0, 900)
    w, h = rng.uniform(40, 220), rng.uniform(40, 380)
    vals = [round(float(v), 2) for v in (x1, y1, min(x1 + w, 720.0), min(y1 + h, 1280.0))]
    return "[" + ", ".join(str(int(v)) if v.is_integer() else repr(v) for v in vals) + "]"


_SUFFIXES = [f"-{k:04d}'" for k in range(10_000)]


def make_lines(n: int, seed: int = 0, batch: int = 10_000):
    """Yield ``n`` training_videoinfo lines (no newline) at the release's density.

    Lines are built directly (the writer is too slow for 400k rows of 118 frames), with random
    draws made per batch of rows, in the exact format of
    :func:`lpr_core.formats.writers.format_videoinfo_row` (``check_writer_format`` checks it).
    """
    rng = np.random.default_rng(seed)
    lives = [_uuid(rng) for _ in range(max(1, n // 12))]
    categories = [(str(k), _text(rng, 2, 5)) for k in range(34)]
    images = [_uuid(rng) for _ in range(max(1, n // 12))]
    titles = [_text(rng, 12, 45) for _ in range(3000)]
    asrs = [_text(rng, 40, 260) for _ in range(5000)]
    box_pool = [_box_text(rng) for _ in range(20_000)]
    for first in range(0, n, batch):
        b = min(batch, n - first)
        n_frames = np.clip(rng.normal(MEAN_FRAMES, 30, b), 20, 400).astype(int)
        starts = rng.integers(1_660_000_000_000, 1_700_000_000_000, b)
        ends = starts + n_frames * 1000 + rng.integers(0, 999, b)
        live_k, image_k = rng.integers(len(lives), size=b), rng.integers(len(images), size=b)
        cat_k, title_k, asr_k = (
            rng.integers(34, size=b),
            rng.integers(len(titles), size=b),
            rng.integers(5000, size=b),
        )
        types = np.stack(
            [rng.integers(0, 3, b), rng.integers(0, 3, b), rng.integers(0, 2, b)], axis=1
        ).astype(str)
        has_boxes = rng.random(b) < 0.7  # clips with a detected product: boxes on a share of the frames
        share = rng.uniform(0.03, 0.35, b)
        for i in range(b):
            nf = int(n_frames[i])
            clip = f"{lives[live_k[i]]}-{starts[i]}-{ends[i]}"
            entries = ["[]"] * nf
            if has_boxes[i]:
                boxed = np.flatnonzero(rng.random(nf) < share[i])
                many = rng.random(len(boxed)) >= 0.85
                picks = rng.integers(len(box_pool), size=(len(boxed), 3))
                for f, m, p in zip(boxed.tolist(), many.tolist(), picks.tolist()):
                    entries[f] = "[" + ", ".join(box_pool[x] for x in (p if m else p[:1])) + "]"
            cat, cat_name = categories[cat_k[i]]
            head = "'" + clip
            yield "\t".join(
                [
                    clip,
                    "[" + ", ".join([head + s for s in _SUFFIXES[:nf]]) + "]",
                    "[" + ", ".join(entries) + "]",
                    images[image_k[i]],
                    titles[title_k[i]],
                    cat,
                    cat_name,
                    asrs[asr_k[i]],
                    *types[i],
                ]
            )


def check_writer_format(n: int = 50, seed: int = 0) -> None:
    """The generated lines are exactly what the project's writer writes for the same rows."""
    from lpr_core.formats.records import VideoInfoRow
    from lpr_core.formats.writers import format_videoinfo_row

    for line in itertools.islice(make_lines(n, seed), n):
        c = line.split("\t")
        row = VideoInfoRow(
            c[0], ast.literal_eval(c[1]), ast.literal_eval(c[2]), c[3], c[4], int(c[5]), c[6], c[7],
            int(c[8]), int(c[9]), int(c[10]),
        )  # fmt: skip
        if format_videoinfo_row(row) != line:
            raise AssertionError("generated line differs from the project's writer format")


def write_input(path: Path, n: int, seed: int) -> None:
    """Write the part file (temporary name, then rename)."""
    from tqdm import tqdm

    check_writer_format(seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n", buffering=16 << 20) as fh:
        for line in tqdm(make_lines(n, seed), total=n, desc="writing input", unit="row", mininterval=5):
            fh.write(line)
            fh.write("\n")
    os.replace(tmp, path)


# -------------------------------------------------------------------------------- the readers


def literal_eval_reader(path: Path, limit: int) -> tuple[float, float, int]:
    """A plain line-by-line reader (ast.literal_eval per list cell) into the same Arrow table.

    Returns (wall seconds, CPU seconds, rows).
    """
    import pyarrow as pa

    t0, c0 = time.perf_counter(), time.process_time()
    cols: dict[str, list] = {k: [] for k in ("clip_id", "frames", "box_frames", "boxes", "rest")}
    n = 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if n >= limit:
                break
            c = line.rstrip("\n").split("\t")
            if len(c) != 11:
                raise ValueError(f"line {n + 1}: expected 11 columns")
            frames = ast.literal_eval(c[1])
            boxes = ast.literal_eval(c[2])
            if len(frames) != len(boxes):
                raise ValueError(f"line {n + 1}: frames/boxes mismatch")
            idx, box_frames, flat = [], [], []
            for fid, fb in zip(frames, boxes):
                clip, _, k = fid.rpartition("-")
                if clip != c[0]:
                    raise ValueError(f"line {n + 1}: frame of another clip")
                idx.append(int(k))
                for b in fb:
                    box_frames.append(int(k))
                    flat.append([float(v) for v in b])
            cols["clip_id"].append(c[0])
            cols["frames"].append(idx)
            cols["box_frames"].append(box_frames)
            cols["boxes"].append(flat)
            cols["rest"].append((c[3], c[4], int(c[5]), c[6], c[7], int(c[8]), int(c[9]), int(c[10])))
            n += 1
    pa.table(
        {
            "clip_id": pa.array(cols["clip_id"]),
            "frame_indices": pa.array(cols["frames"], pa.list_(pa.uint16())),
            "box_frame_indices": pa.array(cols["box_frames"], pa.list_(pa.uint16())),
            "boxes": pa.array(cols["boxes"], pa.list_(pa.list_(pa.float32(), 4))),
        }
    )
    return time.perf_counter() - t0, time.process_time() - c0, n


def project_reader_sample(path: Path, limit: int) -> tuple[float, float, int]:
    """The project's parser in this one process on the first ``limit`` lines (a per-core figure).

    Returns (wall seconds, CPU seconds, rows).
    """
    from lpr_core.formats.videoinfo import _build_batch, parse_range

    _build_batch([])  # one-time lazy imports, not part of the parse
    with open(path, "rb") as fh:
        end = sum(len(fh.readline()) for _ in range(limit))
    t0, c0 = time.perf_counter(), time.process_time()
    result = parse_range((str(path), 0, end, False, True))
    return time.perf_counter() - t0, time.process_time() - c0, result.n_rows


def _parse_only(args: argparse.Namespace) -> int:
    """Child process: convert the file to Parquet and print one JSON line of figures."""
    import resource

    from lpr_core.formats.parquet import convert_files

    t0 = time.perf_counter()
    report = convert_files("videoinfo", args.input, args.output, workers=args.workers, progress=args.progress)
    seconds = time.perf_counter() - t0
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    self_mb, child_mb = me.ru_maxrss / 1024, kids.ru_maxrss / 1024
    cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rows_read": report.rows_read,
                "rows_rejected": report.rows_rejected,
                "main_peak_rss_mb": self_mb,
                "worker_peak_rss_mb": child_mb,
                "cpu_seconds": cpu,
            }
        ),
        flush=True,
    )
    return 0


def run_parse(input_path: Path, output_path: Path, workers: int, progress: bool) -> dict:
    """Run the parse in a child process; sample the RSS of its whole process tree."""
    import psutil

    cmd = [
        sys.executable,
        __file__,
        "--parse-only",
        str(input_path),
        str(output_path),
        "--workers",
        str(workers),
    ]
    if progress:
        cmd.append("--progress")
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
    peak = {"tree": 0}
    done = threading.Event()

    def sample() -> None:
        try:
            parent = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            total = 0
            try:
                for p in [parent, *parent.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.NoSuchProcess:
                        pass
            except psutil.NoSuchProcess:
                break
            peak["tree"] = max(peak["tree"], total)
            time.sleep(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, _ = proc.communicate()
    done.set()
    thread.join()
    if proc.returncode:
        raise SystemExit(f"parse failed with exit code {proc.returncode}")
    figures = json.loads(out.strip().splitlines()[-1])
    figures["tree_peak_rss_mb"] = peak["tree"] / 2**20
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, default=REAL_ROWS, help=f"clips in the part (default {REAL_ROWS})"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="work directory (default benchmarks/out)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the input (and reuse it if it exists)")
    parser.add_argument("--workers", type=int, default=2, help="parsing processes (default 2)")
    parser.add_argument("--sample", type=int, default=5000, help="rows timed with the line-by-line reader")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true", help="progress bar during the parse")
    parser.add_argument("--parse-only", nargs=2, metavar=("INPUT", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.parse_only:
        args.input, args.output = args.parse_only
        return _parse_only(args)

    input_path = args.out / f"training_videoinfo_bench_{args.rows}_{args.seed}.txt"
    output_path = args.out / f"videoinfo_bench_{args.rows}_{args.seed}.parquet"
    if args.keep and input_path.exists():
        print(f"reusing {input_path}")
    else:
        t0 = time.perf_counter()
        write_input(input_path, args.rows, args.seed)
        print(f"wrote {input_path} in {time.perf_counter() - t0:.1f} s")
    size = input_path.stat().st_size
    load_before = os.getloadavg()[0]
    try:
        figures = run_parse(input_path, output_path, args.workers, args.progress)
        load_after = os.getloadavg()[0]
        sample = min(args.sample, args.rows)
        base_s, base_cpu, base_n = literal_eval_reader(input_path, sample)
        ours_s, ours_cpu, ours_n = project_reader_sample(input_path, sample)
    finally:
        if not args.keep:
            input_path.unlink(missing_ok=True)
            output_path.unlink(missing_ok=True)
    rows = figures["rows_read"]
    seconds = figures["seconds"]
    baseline_total = base_s / base_n * rows
    ratio = baseline_total / seconds
    cpu = figures["cpu_seconds"]
    print(f"input: {rows:,} rows, {size / 1e9:.2f} GB ({size / rows / 1e3:.1f} KB/row)")
    print(
        f"machine: {os.cpu_count()} cpus, load average {load_before:.1f} before / {load_after:.1f} after the parse"
    )
    print(
        f"project reader ({args.workers} workers): {seconds:.1f} s, {rows / seconds:,.0f} rows/s, "
        f"{size / 1e6 / seconds:.1f} MB/s, rejected={figures['rows_rejected']}; "
        f"CPU {cpu:.1f} s over all processes ({cpu / rows * 1e6:.0f} us/row)"
    )
    print(
        f"peak RSS: process tree {figures['tree_peak_rss_mb']:.0f} MB "
        f"(main {figures['main_peak_rss_mb']:.0f} MB, largest worker {figures['worker_peak_rss_mb']:.0f} MB)"
    )
    print(
        f"line-by-line ast.literal_eval reader: {base_n:,} rows in {base_s:.2f} s, CPU {base_cpu:.2f} s "
        f"({base_n / base_s:,.0f} rows/s) -> {baseline_total:.0f} s for the part (scaled)"
    )
    print(
        f"per core on the same sample: project {ours_n / ours_s:,.0f} rows/s; "
        f"{base_s / base_n / (ours_s / ours_n):.1f}x the line-by-line reader by wall time, "
        f"{base_cpu / base_n / (ours_cpu / ours_n):.1f}x by CPU time"
    )
    print(
        f"RESULT seconds={seconds:.1f} ratio={ratio:.1f} peak_rss_mb={figures['tree_peak_rss_mb']:.0f} "
        f"rows_per_s={rows / seconds:.0f} cpu_seconds={cpu:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

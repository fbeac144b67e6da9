"""DVC stage ``index_gallery``: embed the test gallery images, one faiss index per livestream.

    python -m lpr_core.stages.index_gallery --prepared DIR --download DIR --encoder DIR --out DIR
        [--params params.yaml]

Reads ``<prepared>/test_gallery.parquet`` (``live_id, image_id``, in gallery order), the test
image manifest of the download, and ``<encoder>/encoder.pt``. Every distinct gallery image that
was downloaded is embedded once (L2-normalised, the encoder's evaluation transform); each
livestream's gallery becomes a faiss index (:mod:`lpr_core.index`, exact inner product by
default): :func:`lpr_core.index.build.index_gallery`. Writes to ``--out``, replaced as a whole
(:func:`lpr_core.index.store.write_index_outputs`)::

    manifest.json, <live_id>/...    the indexes and their id maps (lpr_core.index.save_gallery_indexes)
    gallery_embeddings.npy          (N, d) float32, row i belongs to row i of gallery_images.parquet
    gallery_images.parquet          image_id: the embedded images, each once
    index_summary.json              counts, images left out (not downloaded), encoder hash, timings

Reads the ``index_gallery`` section of params.yaml (:class:`~lpr_core.index.build.IndexGalleryParams`)
and logs it, the counts, the timings and the images left out to MLflow. Exit status 1 on a
missing or malformed input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lpr_core.embedding import ENCODER_FILE
from lpr_core.index.build import IndexGalleryParams, index_gallery
from lpr_core.index.gallery import IndexFileError
from lpr_core.index.store import SUMMARY_FILE, write_index_outputs
from lpr_core.runner import StageContext, parse_args, run_stage

__all__ = ["STAGE", "IndexGalleryParams", "add_arguments", "run", "main"]

STAGE = "index_gallery"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The stage's command-line options."""
    parser.add_argument("--prepared", required=True, type=Path, help="output directory of the prepare stage")
    parser.add_argument("--download", required=True, type=Path, help="output directory of the download stage")
    parser.add_argument("--encoder", required=True, type=Path, help=f"directory holding {ENCODER_FILE}")
    parser.add_argument("--out", required=True, type=Path, help="output directory (replaced atomically)")


def _index(ctx: StageContext) -> None:
    args = ctx.args
    result = index_gallery(args.prepared, args.download, args.encoder, ctx.params)
    write_index_outputs(result, args.out)
    s = result.summary
    ctx.log_metrics(
        {
            "index_gallery/num_livestreams": s["num_livestreams"],
            "index_gallery/num_images": s["num_images"],
            "index_gallery/num_embedded": s["num_embedded"],
            "index_gallery/num_missing_images": s["num_missing_images"],
            **{f"index_gallery/time_{k}_s": v for k, v in s["timings_s"].items()},
        }
    )
    ctx.set_tags({"lpr.encoder_sha256": s["encoder_sha256"]})
    ctx.log_artifacts(Path(args.out) / SUMMARY_FILE)
    ctx.report(
        f"index_gallery: {s['num_embedded']} images in {s['num_livestreams']} livestream indexes "
        f"({s['index']['kind']}, dim {s['embedding_dim']}), {s['num_missing_images']} missing, "
        f"{s['timings_s']['total']:.1f} s -> {args.out}"
    )
    if s["missing_image_ids"]:
        shown = ", ".join(s["missing_image_ids"][:5]) + (" ..." if s["num_missing_images"] > 5 else "")
        ctx.report(f"  not downloaded, left out: {shown}")


def run(args: argparse.Namespace) -> int:
    """Run the stage; returns the exit status (1 with a message on bad input)."""
    return run_stage(STAGE, args, _index, params=IndexGalleryParams,
                     errors=(IndexFileError, FileNotFoundError, ValueError))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m lpr_core.stages.index_gallery``."""
    return run(parse_args(STAGE, __doc__, add_arguments, argv))


if __name__ == "__main__":
    sys.exit(main())

"""A promoter pod's candidate: ``python -m tests.rehearsal.candidate --seed N --score S --out DIR``.

Writes ``DIR/candidate.json`` as the evaluate stage does, for a tiny encoder with weights drawn
from ``--seed`` (each promoter a different model) and the headline score ``--score`` (``nan``, or
``none`` for a candidate without one). The data version is fixed: the gate compares the
candidates directly, without rescoring a champion.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

DATA_VERSION = "rehearsal-race"
SMALL_SLICE = "test/scale_type/small/rank1"


def parse_score(text: str) -> float | None:
    """``none`` -> None (no score), anything else a float (``nan`` included)."""
    return None if text.lower() == "none" else float(text)


def candidate(encoder: Path, score: float | None) -> dict:
    """The candidate record of ``encoder`` with headline ``score`` (left out when None)."""
    metrics = {SMALL_SLICE: 0.5}
    if score is not None:
        metrics["test/rank1"] = score
    return {"encoder": str(encoder), "detector": None, "metrics": metrics, "data_version": DATA_VERSION,
            "validation_passed": True}


def main(argv: list[str] | None = None) -> int:
    """Write the candidate; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--score", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from tests.tracking.helpers import save_tiny_encoder

    score = parse_score(args.score)
    encoder = save_tiny_encoder(args.out / "encoder" / "encoder.pt", seed=args.seed)
    (args.out / "candidate.json").write_text(json.dumps(candidate(Path(encoder), score)))
    shown = "none" if score is None else ("nan" if math.isnan(score) else f"{score:.2f}")
    print(f"candidate: seed {args.seed}, score {shown}, {args.out / 'candidate.json'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

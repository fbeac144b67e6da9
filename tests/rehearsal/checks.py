"""What the rehearsal asserts, from what the pods left: their logs, the tracking server, the state keys."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

RAN = re.compile(r"^Running stage '([^']+)'", re.M)
RESTORED = re.compile(r"^(?:Stage '([^']+)' is cached - skipping run|Restored stage '([^']+)' from run-cache)", re.M)
VERDICT = re.compile(r"^(\S+) v(\d+): (PROMOTED to champion|REFUSED|UNCHANGED)", re.M)


class RehearsalFailure(AssertionError):
    """A check that failed; the message says which and what was seen."""


def require(condition: bool, message: str) -> None:
    """Fail the rehearsal with ``message`` unless ``condition``."""
    if not condition:
        raise RehearsalFailure(message)


def executions(logs: Iterable[str]) -> dict[str, int]:
    """How often each stage's command started (``dvc repro``'s "Running stage"), over the pods' logs."""
    counts: dict[str, int] = {}
    for text in logs:
        for stage in RAN.findall(text):
            counts[stage] = counts.get(stage, 0) + 1
    return counts


def restorations(logs: Iterable[str]) -> dict[str, int]:
    """How often each stage was restored from the run cache instead of run."""
    counts: dict[str, int] = {}
    for text in logs:
        for a, b in RESTORED.findall(text):
            counts[a or b] = counts.get(a or b, 0) + 1
    return counts


def verdicts(text: str) -> list[tuple[str, str, str]]:
    """``(model, version, verdict)`` of every ``lpr promote`` decision printed in ``text``."""
    return VERDICT.findall(text)


def stage_runs(client: Any, pipeline_run_id: str, stages: Iterable[str]) -> dict[str, list[Any]]:
    """The tracking server's stage runs of one pipeline run, by stage (every status)."""
    wanted = set(stages)
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, f"tags.`lpr.pipeline_run_id` = '{pipeline_run_id}'", max_results=1000)
    found: dict[str, list[Any]] = {s: [] for s in wanted}
    for run in runs:
        stage = run.data.tags.get("lpr.stage")
        if stage in wanted:
            found[stage].append(run)
    return found


def finished_once(runs: Mapping[str, list[Any]]) -> dict[str, int]:
    """Stage -> number of FINISHED runs (a SIGKILLed pod leaves its run RUNNING)."""
    return {stage: sum(r.info.status == "FINISHED" for r in rs) for stage, rs in runs.items()}


def key_variants(workspace: Path, stage: str = "train_encoder") -> dict[str, tuple[str, str]]:
    """The training stage's state key and resume decision for variants of a finished run's inputs.

    In ``workspace`` (a finished ``train_encoder`` pod's): the run as it was (``base``); runtime
    settings changed (``num_workers``, ``progress``, ``device``); a result-bearing param changed
    (``lr``); one row of the prepared training table changed (what one changed annotation row
    gives). Returns variant -> (key, the decision's note against the base run's checkpoint).
    """
    import argparse
    import dataclasses
    import shutil
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    from lpr_core.config import load_section
    from lpr_core.runtime_params import result_bearing, runtime_settings
    from lpr_core.stages.train_encoder import EncoderStage
    from lpr_core.state import fingerprint, open_state
    from lpr_core.training.resume import RunIdentity, decide
    from lpr_core.training.tasks import TrainEncoderParams

    params = load_section(TrainEncoderParams, stage, workspace / "params.yaml")
    args = argparse.Namespace(prepared=workspace / "data/prepared", download=workspace / "data/download")
    enc = EncoderStage(args, params)
    enc.load()
    inputs = enc.inputs()
    with tempfile.TemporaryDirectory(prefix="lpr-keys-") as tmp:
        changed = Path(tmp) / "train_clips.parquet"
        table = pq.read_table(inputs["train_clips"])
        column = next(n for n in table.column_names if table.schema.field(n).type == "string")
        values = table.column(column).to_pylist()
        values[0] = f"{values[0]}-edited"
        pq.write_table(table.set_column(table.column_names.index(column), column,
                                        pa.array(values)), changed)
        train = params.train
        variants = {
            "base": (params, inputs),
            "runtime": (dataclasses.replace(params, train=dataclasses.replace(
                train, num_workers=train.num_workers + 2, progress=not train.progress,
                device="auto" if train.device == "cpu" else "cpu")), inputs),
            "param": (dataclasses.replace(params, train=dataclasses.replace(train, lr=train.lr * 2)), inputs),
            "input": (params, {**inputs, "train_clips": changed}),
        }

        def identity(p: Any, files: Mapping[str, Path]) -> RunIdentity:
            import json

            plain = json.loads(json.dumps(result_bearing(p), default=str))
            return RunIdentity(stage, fingerprint(files), plain, 1, json.loads(json.dumps(runtime_settings(p),
                                                                                           default=str)))

        base = identity(*variants["base"])
        base_key = open_state(stage, base.keyed(), tmp).key
        out = {}
        for name, (p, files) in variants.items():
            current = identity(p, files)
            key = open_state(stage, current.keyed(), tmp).key
            same = key == base_key
            out[name] = (key, decide(current, base, has_checkpoint=same).note)
        shutil.rmtree(Path(tmp) / stage, ignore_errors=True)
    return out

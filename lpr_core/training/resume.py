"""The resume rule of the training stages: continue the last checkpoint or start fresh.

Where the state lives. A training run keeps its checkpoint (``checkpoints/last.pt``), its curves
(``plots/*.tsv``) and its stamp (``run_params.json``) in the stage's state folder
(:mod:`lpr_core.state`), ``<LPR_STATE_URL or .lpr/state>/<stage>/<key>/``, not in its DVC output:
``dvc repro`` deletes a stage's outputs before it runs it, and a retried pod starts in an empty
workspace. ``key`` hashes the run's :class:`RunIdentity`:

- the stage's name;
- its inputs: the SHA-256 of the files it reads (the prepared Parquet tables and the download
  manifests, whose rows carry each image's sha256: a changed annotation row changes a prepared
  table, a re-downloaded image changes a manifest; the starting weights when ``weights:`` names a
  local file), never the images;
- its result-bearing params (:func:`lpr_core.runtime_params.result_bearing`): the section without
  ``num_workers``, ``prefetch_factor``, ``persistent_workers``, ``progress``, ``device``,
  ``compile``, ``channels_last``, ``checkpoint_every``;
- the world size (a checkpoint holds every rank's RNG state and sampler position).

The rule, :func:`decide` (a pure function of the current identity, the identity found and whether a
checkpoint is there; see its table). A run with another identity finds another folder, so it
starts fresh and says what changed (it reads the stage's ``latest.json`` to tell); a change of a
runtime setting keeps the folder and the checkpoint is resumed. ``--resume never`` always starts
fresh.

I/O at the edge. :func:`prepare_run` (every rank; rank 0 reads, decides, clears or keeps the
folder, writes the stamp and broadcasts) returns a :class:`TrainingRun`: the run directory for
:func:`lpr_core.training.engine.fit` and its :class:`~lpr_core.training.checkpoint.CheckpointStore`
(rank 0 writes, every rank reads). When the stage has written its outputs,
:meth:`TrainingRun.finish` removes the folder: a finished run is never resumed by a later one
(whose code may differ), and the state holds only unfinished work.

A retried pod resumes when it sees the same state location (``LPR_STATE_URL=s3://...`` in its
environment), the same inputs (``dvc repro --pull`` restores them) and the same result-bearing
params and world size.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch.distributed as dist

from lpr_core.runtime_params import result_bearing, runtime_settings
from lpr_core.state import StageState, fingerprint, open_state
from lpr_core.training.checkpoint import CheckpointStore

if TYPE_CHECKING:
    from lpr_core.training.checkpoint import CheckpointStore
    from lpr_core.training.distributed import DistEnv

__all__ = [
    "RESUME_MODES",
    "STAMP_FILE",
    "RunIdentity",
    "ResumeDecision",
    "params_sha256",
    "decide",
    "TrainingRun",
    "prepare_run",
]

RESUME_MODES = ("auto", "never")
#: The stamp of a state folder: the :class:`RunIdentity` (and runtime settings) of its run.
STAMP_FILE = "run_params.json"
_CHECKPOINT = "checkpoints/last.pt"


@dataclass(frozen=True)
class RunIdentity:
    """What a checkpoint belongs to; equal identities share one state folder.

    Attributes:
        stage: the stage's name.
        inputs: ``{input name: sha256}`` of the files the stage reads.
        params: the result-bearing params (plain JSON values).
        world_size: ranks of the run.
        runtime: the runtime settings (``{"train.num_workers": 1, ...}``): recorded to say what
            changed, not part of the identity.
    """

    stage: str
    inputs: Mapping[str, str]
    params: Mapping[str, Any]
    world_size: int
    runtime: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def keyed(self) -> dict[str, Any]:
        """The part hashed into the state folder's key (the stage is added by :func:`open_state`)."""
        return {"inputs": dict(self.inputs), "params": dict(self.params), "world_size": self.world_size}

    def to_json(self) -> dict[str, Any]:
        """The stamp's content."""
        return {"stage": self.stage, **self.keyed(), "runtime": dict(self.runtime)}

    @classmethod
    def from_json(cls, obj: Any) -> RunIdentity | None:
        """An identity from a stamp; None when the stamp is not one."""
        try:
            return cls(str(obj["stage"]), dict(obj["inputs"]), dict(obj["params"]), int(obj["world_size"]),
                       dict(obj.get("runtime") or {}))
        except (TypeError, KeyError, ValueError, AttributeError):
            return None


@dataclass(frozen=True)
class ResumeDecision:
    """Whether a training stage continues its last checkpoint.

    Attributes:
        resume: continue from ``checkpoints/last.pt``.
        note: why (printed, kept in the summary, tagged on the MLflow run).
    """

    resume: bool
    note: str


def params_sha256(section: Mapping[str, Any]) -> str:
    """SHA-256 of a params section in canonical JSON (sorted keys): equal sections, equal hash."""
    text = json.dumps(section, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _diff(old.get(key, "<absent>"), new.get(key, "<absent>"), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def _shown(items: list[str], limit: int = 5) -> str:
    return "; ".join(items[:limit]) + (f"; ... ({len(items)} in all)" if len(items) > limit else "")


def _changes(found: RunIdentity, current: RunIdentity) -> str:
    """What differs between two identities, in words."""
    parts = []
    old, new = found.inputs, current.inputs
    inputs = [f"{n} changed" for n in sorted(set(old) & set(new)) if old[n] != new[n]]
    inputs += [f"{n} is new" for n in sorted(set(new) - set(old))]
    inputs += [f"{n} is gone" for n in sorted(set(old) - set(new))]
    if inputs:
        parts.append(f"inputs changed ({_shown(inputs)})")
    params = _diff(found.params, current.params)
    if params:
        parts.append(f"params changed ({_shown(params)})")
    if found.world_size != current.world_size:
        parts.append(f"world size changed ({found.world_size} -> {current.world_size} ranks)")
    if found.stage != current.stage:
        parts.append(f"stage {found.stage!r} -> {current.stage!r}")
    return "; ".join(parts) or "identity differs"


def decide(current: RunIdentity, found: RunIdentity | None, *, has_checkpoint: bool,
           mode: str = "auto") -> ResumeDecision:
    """The resume rule (pure: no files, no clock).

    Args:
        current: this run's identity.
        found: the stamp of the state folder of ``current`` when it has one; else the identity of
            the stage's last run (``latest.json``, another folder) when known; else None.
        has_checkpoint: the state folder of ``current`` holds a checkpoint.
        mode: ``auto`` (resume a checkpoint of the same identity) or ``never``.

    ===========  ==============  =====================================  ==========================
    mode         has_checkpoint  found                                  decision
    ===========  ==============  =====================================  ==========================
    never        any             any                                    fresh
    auto         yes             equal to ``current``                   resume (runtime changes named)
    auto         yes             None, or another identity              fresh (unverifiable stamp)
    auto         no              None                                   fresh: no checkpoint
    auto         no              equal to ``current``                   fresh: none saved yet
    auto         no              another identity                       fresh, naming what changed
    ===========  ==============  =====================================  ==========================

    Raises:
        ValueError: an unknown ``mode``.
    """
    if mode not in RESUME_MODES:
        raise ValueError(f"resume mode must be one of {RESUME_MODES}, got {mode!r}")
    if mode == "never":
        dropped = " (the checkpoint of these inputs and params is discarded)" if has_checkpoint else ""
        return ResumeDecision(False, f"--resume never: starting fresh{dropped}")
    if has_checkpoint:
        if found is None:
            return ResumeDecision(False, "a checkpoint without a readable stamp: starting fresh")
        if found != current:
            return ResumeDecision(False, f"the checkpoint's stamp does not match this run ({_changes(found, current)}): "
                                         "starting fresh")
        note = "resuming the checkpoint of the same inputs, result-bearing params and world size"
        runtime = _diff(dict(found.runtime), dict(current.runtime))
        if runtime:
            note += f" (runtime settings changed, which change no result: {_shown(runtime)})"
        return ResumeDecision(True, note)
    if found is None:
        return ResumeDecision(False, "no checkpoint: starting fresh")
    if found == current:
        return ResumeDecision(False, "no checkpoint of these inputs and params yet: starting fresh")
    return ResumeDecision(False, f"no checkpoint of these inputs and params (since the last {current.stage} "
                                 f"run: {_changes(found, current)}): starting fresh")


@dataclass(frozen=True)
class TrainingRun:
    """A training run's place in the stage state (see the module docstring).

    Attributes:
        decision: resume or not, and why.
        identity: the run's identity.
        state: its state folder.
    """

    decision: ResumeDecision
    identity: RunIdentity
    state: StageState

    @property
    def dir(self) -> Path:
        """The run directory to train in (``checkpoints/``, ``plots/``)."""
        return self.state.local

    @property
    def checkpoints(self) -> CheckpointStore:
        """The run's checkpoint store (saved by rank 0, read by every rank)."""
        return CheckpointStore(self.state.local, self.state)

    def finish(self) -> None:
        """Remove the state folder once the stage's outputs are written (rank 0)."""
        self.state.clear()


def _plain(value: Any) -> Any:
    """JSON-native values (tuples as lists), as a stamp read back holds them."""
    return json.loads(json.dumps(value, default=str))


def prepare_run(stage: str, params: Any, inputs: Mapping[str, str | Path] | Iterable[str | Path], env: DistEnv,
                mode: str = "auto", root: str | None = None) -> TrainingRun:
    """Find this run's state folder, apply :func:`decide` on rank 0 and share the outcome with every rank.

    Rank 0 fingerprints ``inputs``, reads the folder's stamp (or the stage's ``latest.json``),
    decides, clears the folder on a fresh start, brings the curves into the local copy on a resume
    from an object store, and writes the stamp and ``latest.json`` before training, so a
    checkpoint is never left without its stamp.

    Args:
        stage: the stage's name.
        params: the stage's params dataclass.
        inputs: the files the stage reads (:func:`lpr_core.state.fingerprint`).
        env: the DDP environment.
        mode: ``auto`` or ``never``.
        root: the state root (default ``$LPR_STATE_URL``, else ``.lpr/state``).
    """
    box: list[Any] = [None]
    if env.is_main:
        identity = RunIdentity(stage, fingerprint(inputs), _plain(result_bearing(params)), env.world_size,
                               _plain(runtime_settings(params)))
        state = open_state(stage, identity.keyed(), root)
        has_checkpoint = state.exists(_CHECKPOINT)
        stamp = state.read_json(STAMP_FILE)
        found = RunIdentity.from_json(stamp) if stamp is not None else None
        if found is None and not has_checkpoint:
            found = RunIdentity.from_json(state.read_latest())
        decision = decide(identity, found, has_checkpoint=has_checkpoint, mode=mode)
        if not decision.resume:
            state.clear()
        elif state.remote:  # a fresh local copy: the curves of the store (the checkpoint is read from it)
            shutil.rmtree(state.local, ignore_errors=True)
            curves = [rel for rel in state.list("plots") if rel.endswith(".tsv")]
            state.download_many(curves)
        state.local.mkdir(parents=True, exist_ok=True)
        state.write_json(STAMP_FILE, identity.to_json())
        state.write_latest({**identity.to_json(), "key": state.key})
        box = [(decision, identity, state)]
    if env.distributed:
        dist.broadcast_object_list(box, src=0)
    decision, identity, state = box[0]
    return TrainingRun(decision, identity, state)

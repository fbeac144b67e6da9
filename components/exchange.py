"""The ``dvc.lock`` exchange: how the pods of one pipeline run hand each other their stages' records.

A pod starts from the image's checkout, whose ``dvc.lock`` predates the run, and the ``dvc.lock``
it writes dies with it. So after its stage a pod publishes the stage's ``dvc.lock`` entry under
the pipeline run, at ``<runs URL>/<run id>/<stage>.lock.yaml`` (each file is itself a valid
single-stage ``dvc.lock``), and the next pod merges its upstream entries into its own
``dvc.lock``: DVC then knows the exact outputs of every upstream stage (``dvc pull`` restores
them; nothing is recomputed), and the run's complete ``dvc.lock`` can be assembled at any time
(:meth:`LockExchange.lock`, ``python -m components.pod lock --run <id>``).

The runs URL is any fsspec URL (``s3://bucket/lpr/runs``, ``gs://...``, a local path): on an
object store one entry is one object written by one ``PUT``, so readers see it whole or not at all;
a local entry is written atomically (:mod:`lpr_core.io`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

import fsspec
import yaml

from lpr_core.io import atomic_write_text

#: The schema DVC writes at the top of ``dvc.lock``.
LOCK_SCHEMA = "2.0"
ENTRY_SUFFIX = ".lock.yaml"


class ExchangeError(RuntimeError):
    """An entry that cannot be read or written; the message names the URL."""


def lock_document(entries: Mapping[str, Mapping[str, Any]], order: Iterable[str] = ()) -> dict[str, Any]:
    """A ``dvc.lock`` document holding ``entries`` (stage name -> lock entry).

    Args:
        entries: the stages' entries, as DVC writes them under ``stages:``.
        order: stage names in the order to write them (``dvc.yaml``'s); stages not listed follow.
    """
    names = [n for n in order if n in entries] + sorted(n for n in entries if n not in set(order))
    return {"schema": LOCK_SCHEMA, "stages": {n: dict(entries[n]) for n in names}}


def merge_lock(lock: Mapping[str, Any] | None, entries: Mapping[str, Mapping[str, Any]],
               order: Iterable[str] = ()) -> dict[str, Any]:
    """``lock`` (a ``dvc.lock`` document, or None) with the stages of ``entries`` replaced or added.

    Entries of other stages are kept: a pod's own stage may still be recorded there (DVC then
    decides whether it changed).
    """
    stages = dict((lock or {}).get("stages") or {})
    stages.update(entries)
    return lock_document(stages, order)


def dump_lock(document: Mapping[str, Any]) -> str:
    """``document`` as DVC writes ``dvc.lock`` (block style, keys in the given order)."""
    return yaml.safe_dump(dict(document), sort_keys=False, default_flow_style=False)


class LockExchange:
    """The ``dvc.lock`` entries of one pipeline run under a runs URL.

    Args:
        url: the runs URL (``$LPR_RUNS_URL``): an fsspec URL or a local path.
        run_id: the pipeline run id; any text (quoted into one path segment).
    """

    def __init__(self, url: str, run_id: str) -> None:
        if not url:
            raise ExchangeError("no runs URL: set LPR_RUNS_URL (e.g. s3://my-bucket/lpr/runs), where the pods "
                                "of a pipeline run exchange their dvc.lock entries")
        if not run_id:
            raise ExchangeError("no pipeline run id: set LPR_PIPELINE_RUN_ID or pass --run-id")
        self.url = url.rstrip("/")
        self.run_id = run_id
        self.fs, root = fsspec.core.url_to_fs(self.url)
        self._dir = f"{root.rstrip('/')}/{quote(run_id, safe='-_.:+@=,')}"

    @property
    def location(self) -> str:
        """The run's folder as a URL (for messages)."""
        return f"{self.url}/{quote(self.run_id, safe='-_.:+@=,')}"

    def _path(self, stage: str) -> str:
        return f"{self._dir}/{stage}{ENTRY_SUFFIX}"

    def publish(self, stage: str, entry: Mapping[str, Any]) -> str:
        """Publish ``stage``'s lock entry for the run (replacing an earlier one); returns its URL."""
        text = (f"# dvc.lock entry of stage {stage!r} in pipeline run {self.run_id!r}\n"
                + dump_lock(lock_document({stage: entry})))
        path = self._path(stage)
        try:
            if _is_local(self.fs):
                atomic_write_text(path, text)
            else:
                self.fs.pipe_file(path, text.encode())
        except OSError as exc:
            raise ExchangeError(f"{self.location}/{stage}{ENTRY_SUFFIX}: cannot write it: {exc}") from exc
        return f"{self.location}/{stage}{ENTRY_SUFFIX}"

    def get(self, stage: str) -> dict[str, Any] | None:
        """``stage``'s published entry, or None when it has not been published in this run."""
        where = f"{self.location}/{stage}{ENTRY_SUFFIX}"
        try:
            raw = self.fs.cat_file(self._path(stage))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ExchangeError(f"{where}: cannot read it: {exc}") from exc
        try:
            doc = yaml.safe_load(raw) or {}
            entry = (doc.get("stages") or {})[stage]
        except (yaml.YAMLError, AttributeError, KeyError, TypeError):
            raise ExchangeError(f"{where}: not a dvc.lock entry of stage {stage!r}") from None
        if not isinstance(entry, Mapping):
            raise ExchangeError(f"{where}: not a dvc.lock entry of stage {stage!r}")
        return dict(entry)

    def entries(self, stages: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The published entries of ``stages`` (those not published yet are absent)."""
        found = {}
        for stage in stages:
            entry = self.get(stage)
            if entry is not None:
                found[stage] = entry
        return found

    def lock(self, stages: Iterable[str]) -> dict[str, Any]:
        """The run's ``dvc.lock``: every published entry of ``stages``, in their order."""
        order = list(stages)
        return lock_document(self.entries(order), order)


def _is_local(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")

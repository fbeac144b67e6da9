"""The Spark session behind ``download.distributor: pyspark``.

img2dataset's ``pyspark`` distributor runs each shard as a Spark task (``sparkContext.parallelize``
over shard batches of ``subjob_size``, a failed shard retried ``max_shard_retry`` times) on the
*active* SparkSession, and only creates one of its own when there is none. The download stage
therefore makes the session itself, once per run, so that the same settings reach every list:

1. a SparkSession already active in the calling process (a notebook, a driver script that built
   its own) is used as it is and left running;
2. otherwise a classic session is built. Its master comes from the environment, the way
   ``spark-submit`` reads it: ``MASTER`` (e.g. ``spark://spark-master:7077`` for a standalone
   cluster, ``k8s://https://kubernetes.default.svc`` for Spark on Kubernetes), else ``--master``
   in ``PYSPARK_SUBMIT_ARGS``, else ``spark.master`` in ``spark-defaults.conf`` of
   ``SPARK_CONF_DIR`` (or ``SPARK_HOME/conf``); without any, ``local[<download.processes>]`` on
   this machine. Every other Spark setting (executor count and memory, the container image, the
   driver's host...) goes the same ways: ``spark-defaults.conf`` or ``--conf`` in
   ``PYSPARK_SUBMIT_ARGS`` (which must end with ``pyspark-shell``). When ``spark-submit``
   started this process (a Spark Operator ``SparkApplication``'s driver), its settings stand and
   no master is set here. The executors' Python is ``PYSPARK_PYTHON`` (on a local master, this
   interpreter when unset). The stage stops the session it built when the run ends.

Spark Connect (``SPARK_REMOTE``) cannot serve: img2dataset uses the RDD API, which a Connect
session does not have. The driver is this process; executors must see the output folder at the
same path (one machine) or through the same fsspec URL (a cluster: an object store).
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["SparkSessionError", "resolve_master", "DownloadSpark"]

#: Where the messages go unless a caller passes its own ``log`` (the process's logging set-up decides).
logger = logging.getLogger(__name__)

APP_NAME = "lpr-download"


class SparkSessionError(RuntimeError):
    """No usable Spark session (the message says why and what to set)."""


def _defaults_master(environ: Mapping[str, str]) -> str | None:
    conf_dir = environ.get("SPARK_CONF_DIR") or (
        str(Path(environ["SPARK_HOME"]) / "conf") if environ.get("SPARK_HOME") else None)
    if not conf_dir:
        return None
    path = Path(conf_dir) / "spark-defaults.conf"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    master = None
    for line in lines:
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and parts[0] == "spark.master":
            master = parts[1].strip()
        elif len(parts) == 1 and parts[0].startswith("spark.master="):
            master = parts[0].split("=", 1)[1].strip()
    return master or None


def resolve_master(environ: Mapping[str, str], processes: int) -> tuple[str | None, str]:
    """The Spark master a new session gets, and where it came from.

    Args:
        environ: the environment (``os.environ``).
        processes: the local cores to use when the environment names no master.

    Returns:
        ``(master, source)``, e.g. ``("spark://head:7077", "MASTER")`` or
        ``("local[2]", "download.processes")``; ``(None, "spark-submit")`` when this process was
        started by ``spark-submit`` (a Spark Operator driver), whose settings then stand.
    """
    if environ.get("PYSPARK_GATEWAY_PORT"):
        return None, "spark-submit"
    if environ.get("MASTER"):
        return environ["MASTER"], "MASTER"
    args = shlex.split(environ.get("PYSPARK_SUBMIT_ARGS", ""))
    for i, arg in enumerate(args):
        if arg == "--master" and i + 1 < len(args):
            return args[i + 1], "PYSPARK_SUBMIT_ARGS"
        if arg.startswith("--master="):
            return arg.split("=", 1)[1], "PYSPARK_SUBMIT_ARGS"
    master = _defaults_master(environ)
    if master:
        return master, "spark-defaults.conf"
    return f"local[{processes}]", "download.processes"


class DownloadSpark:
    """The download run's SparkSession, made on first use (see the module docstring).

    Args:
        processes: local cores when the environment names no master.
        progress: show Spark's console progress bar.
        log: where messages go.
        environ: the environment to read (default ``os.environ``).
    """

    def __init__(self, processes: int, progress: bool = False, log: Callable[[str], None] = logger.info,
                 environ: Mapping[str, str] | None = None) -> None:
        self.processes = processes
        self.progress = progress
        self.log = log
        self.environ = os.environ if environ is None else environ
        self.session: Any = None
        self.owned = False

    def get(self) -> Any:
        """The session img2dataset's distributor will find active (made now if needed).

        Raises:
            SparkSessionError: with Spark Connect, or when Spark cannot start (no Java, a bad master).
        """
        if self.session is not None:
            return self.session
        for name in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED"):
            if self.environ.get(name):
                raise SparkSessionError(
                    f"{name} is set: Spark Connect cannot run img2dataset's pyspark distributor (it needs the "
                    "RDD API); unset it and name a classic master (MASTER=spark://... or k8s://...)")
        try:
            from pyspark.sql import SparkSession
        except ImportError:
            raise SparkSessionError("distributor 'pyspark' needs the pyspark package installed") from None
        active = SparkSession.getActiveSession()
        if active is not None:
            try:
                master = active.sparkContext.master
            except Exception as exc:  # noqa: BLE001 - a Connect session has no SparkContext
                raise SparkSessionError(f"the active SparkSession has no SparkContext ({exc}); img2dataset's "
                                        "pyspark distributor needs a classic session") from None
            self.log(f"pyspark: using the active SparkSession (master {master})")
            self.session = active
            return active
        master, source = resolve_master(self.environ, self.processes)
        builder = (SparkSession.builder.appName(APP_NAME)
                   .config("spark.ui.showConsoleProgress", str(self.progress).lower())
                   .config("spark.executorEnv.NO_ALBUMENTATIONS_UPDATE", "1"))
        if master is not None:
            builder = builder.master(master)
        # pyspark's Python workers run PYSPARK_PYTHON (read once, when the context starts), else
        # the first python3 on PATH: local ones must run this interpreter, which has the packages
        local = master is not None and master.startswith("local")
        python = sys.executable if local and not self.environ.get("PYSPARK_PYTHON") else None
        self.log(f"pyspark: starting a SparkSession on {master or 'the master spark-submit set'} (from {source})")
        t0 = time.perf_counter()
        saved = os.environ.get("PYSPARK_PYTHON")
        try:
            if python is not None:
                os.environ["PYSPARK_PYTHON"] = python
            self.session = builder.getOrCreate()
        except Exception as exc:  # noqa: BLE001 - py4j and pyspark raise many kinds
            raise SparkSessionError(f"could not start Spark on {master} (from {source}): "
                                    f"{' '.join(str(exc).split())[:500]}") from None
        finally:
            if python is not None:
                if saved is None:
                    os.environ.pop("PYSPARK_PYTHON", None)
                else:
                    os.environ["PYSPARK_PYTHON"] = saved
        self.owned = True
        self.log(f"pyspark: session up in {time.perf_counter() - t0:.1f} s")
        return self.session

    def stop(self) -> None:
        """Stop the session if this object made it (a caller's session keeps running)."""
        if self.session is not None and self.owned:
            self.session.stop()
        self.session, self.owned = None, False

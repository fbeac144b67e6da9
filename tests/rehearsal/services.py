"""The shared services of the rehearsal, all on loopback: an S3 API, PostgreSQL, MLflow, the world's images.

Nothing else is shared between pods. Each service runs in its own process group and stops with the
rehearsal (:class:`contextlib.ExitStack` in :mod:`tests.rehearsal.__main__`).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.tracking.helpers import free_port, postgres_server, server_process, stop_group

#: The credentials the rehearsal's S3 server accepts (moto's placeholders), as a pod's secret holds them.
S3_KEYS = {"AWS_ACCESS_KEY_ID": "lpr-rehearsal", "AWS_SECRET_ACCESS_KEY": "lpr-rehearsal-secret",
           "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass(frozen=True)
class Store:
    """The object store: its endpoint, bucket and the credentials of the ``lpr-dvc-remote`` secret."""

    endpoint: str
    bucket: str

    @property
    def secret(self) -> dict[str, str]:
        """The ``lpr-dvc-remote`` secret's keys (what ``kubectl create secret`` would hold)."""
        return {**S3_KEYS, "AWS_ENDPOINT_URL": self.endpoint}

    def url(self, prefix: str) -> str:
        """``s3://<bucket>/<prefix>``."""
        return f"s3://{self.bucket}/{prefix}"

    def fs(self):
        """An s3fs filesystem on the store (no cache across calls: the pods write behind its back)."""
        import s3fs

        return s3fs.S3FileSystem(key=S3_KEYS["AWS_ACCESS_KEY_ID"], secret=S3_KEYS["AWS_SECRET_ACCESS_KEY"],
                                 endpoint_url=self.endpoint, skip_instance_cache=True, use_listings_cache=False)


@contextlib.contextmanager
def object_store(work: Path, bucket: str = "lpr") -> Iterator[Store]:
    """moto's S3 server (``python -m moto.server``) on a free loopback port, with one bucket."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with server_process(cmd, f"{endpoint}/moto-api/", work / "moto.log", timeout_s=120):
        store = Store(endpoint, bucket)
        store.fs().mkdir(bucket)
        yield store


@contextlib.contextmanager
def tracking_server(work: Path, store: Store) -> Iterator[str]:
    """``mlflow server`` on a PostgreSQL backend store, artifacts proxied into the object store."""
    with postgres_server("mlflow") as database:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "2", "--backend-store-uri", database,
               "--artifacts-destination", store.url("mlartifacts")]
        import os

        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
        env.update(store.secret, MLFLOW_S3_ENDPOINT_URL=store.endpoint, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        with server_process(cmd, f"{url}/health", work / "mlflow.log", env=env, cwd=work, timeout_s=300):
            yield url


@contextlib.contextmanager
def image_server(world: Path, log: Path, timeout_s: float = 60.0) -> Iterator[str]:
    """``lpr serve`` on the world (a free port, its URL files rewritten to it); yields the URL prefix."""
    cmd = [sys.executable, "-m", "lpr_core.cli", "serve", str(world), "--port", "0", "--fault-rate", "0",
           "--rewrite-urls"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not (found := re.search(r"serving .* at (\S+) ", log.read_text(errors="replace"))):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"lpr serve did not start; log {log}:\n{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        yield found.group(1)
    finally:
        stop_group(proc, grace_s=5)


def upload(store: Store, local: Path, prefix: str) -> str:
    """Copy the folder ``local`` to ``s3://<bucket>/<prefix>``; returns that URL."""
    url = store.url(prefix)
    store.fs().put(str(local).rstrip("/") + "/", url, recursive=True)
    return url


def secrets(store: Store, extra: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, dict[str, str]]:
    """The secrets the pods name (``runtime.yaml``'s ``secret_env``): the store's credentials; the
    tracking server here has no authentication, so ``lpr-mlflow-client`` is empty."""
    return {"lpr-dvc-remote": store.secret, "lpr-mlflow-client": {}, **dict(extra or {})}

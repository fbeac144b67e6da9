"""A real S3 API on loopback (moto's server mode) for the tests of state in an object store.

One server per test process (:func:`s3_server`, a free port, stopped when the process exits):
fsspec's ``s3://`` filesystems are cached per process by their options, not by the endpoint, so
every test of a session talks to the same server, each in a bucket of its own (:func:`new_bucket`). The credentials are moto's
placeholders, passed as a pod gets them: in the environment (:func:`s3_env`).
"""

from __future__ import annotations

import atexit
import uuid
from collections.abc import Mapping

_SERVER: dict[str, object] = {}


def s3_server() -> str:
    """The session's moto server endpoint (``http://127.0.0.1:<port>``), started on first use."""
    if "endpoint" not in _SERVER:
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        _SERVER.update(server=server, endpoint=f"http://{host}:{port}")
        atexit.register(server.stop)
    return str(_SERVER["endpoint"])


def s3_env() -> dict[str, str]:
    """The variables that point boto3, s3fs and DVC's S3 remote at the server."""
    return {
        "AWS_ENDPOINT_URL": s3_server(),
        "AWS_ACCESS_KEY_ID": "lpr-test",
        "AWS_SECRET_ACCESS_KEY": "lpr-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def new_bucket(env: Mapping[str, str] | None = None) -> str:
    """Create a fresh bucket; returns its name."""
    import boto3

    env = dict(env or s3_env())
    name = f"lpr-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_DEFAULT_REGION"])
    client.create_bucket(Bucket=name)
    return name


def apply_env(monkeypatch, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Set the server's variables in this process (for in-process fsspec and child processes)."""
    env = dict(env or s3_env())
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return env

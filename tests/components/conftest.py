"""An S3-protocol object store on loopback (moto's server mode), for the tests of the pod side."""

from __future__ import annotations

import os
import uuid

import pytest


@pytest.fixture(scope="module")
def s3():
    """A real S3 API server on a free loopback port; yields the environment that points clients at it.

    The variables are the ones the pods get from the DVC remote's secret (``AWS_*``), so DVC's S3
    remote, s3fs and boto3 all use it; a fresh bucket per module.
    """
    import s3fs
    from moto.server import ThreadedMotoServer

    s3fs.S3FileSystem.clear_instance_cache()  # clients made for another module's server
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "lpr-test", "AWS_SECRET_ACCESS_KEY": "lpr-test-secret",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import boto3

        bucket = f"lpr-{uuid.uuid4().hex[:12]}"
        boto3.client("s3").create_bucket(Bucket=bucket)
        yield {**env, "BUCKET": bucket}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()

"""The registered champion served the way a retrieval service uses it: ``mlflow models serve``.

The model is logged by ``lpr promote`` with models-from-code (no pickle), then served on a free
loopback port with ``--env-manager local``; one request embeds a shop image, one a query clip (its
frames as base64 JPEGs). The vectors must be the pipeline's own: the same images read through the
datasets, transform and encoder functions that ``index_gallery`` and ``evaluate`` use.
"""

import base64
import json
import logging
import os
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

from lpr_core import cli
from lpr_core.tracking import registry
from lpr_core.tracking.gate import GateConfig
from tests.tracking.helpers import (
    free_port,
    make_project,
    server_process,
    tracking_uri_restored,
    write_candidate,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LIVE = str(uuid.UUID(int=7))
CLIP = f"{LIVE}-1000-5000"
IMAGE = str(uuid.UUID(int=8))


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """A project whose champion was registered by ``lpr promote``; the logs of that command."""
    root = tmp_path_factory.mktemp("serving")
    with tracking_uri_restored(), pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        make_project(root)
        cand = write_candidate(root, 0.4)
        handler = _Capture()
        logging.getLogger("mlflow").addHandler(handler)
        try:
            assert cli.main(["promote", "--candidate-from", str(cand)]) == 0
        finally:
            logging.getLogger("mlflow").removeHandler(handler)
        yield root, handler.messages


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _images(root):
    """A shop image and a five-frame query clip (noise, so every picture embeds differently)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    out = root / "images"
    out.mkdir(exist_ok=True)

    def save(name, h, w):
        path = out / name
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path, quality=90)
        return path

    return save(f"{IMAGE}.jpg", 60, 45), [save(f"{CLIP}-{i:04d}.jpg", 48, 64) for i in range(5)]


def _library_embeddings(root, shop, frames):
    """What the pipeline computes for these files: manifests, datasets, transform, encoder."""
    import pyarrow as pa
    from PIL import Image
    from torch.utils.data import DataLoader

    from lpr_core.data.datasets import GalleryImageDataset, ManifestImages, QueryClipDataset
    from lpr_core.data.transforms import build_eval_transform
    from lpr_core.models.encoder import embed_clips, embed_images, load_encoder

    model = load_encoder(root / "models/encoder/encoder.pt")
    tf = build_eval_transform(model.config.image_size, mean=model.mean, std=model.std)

    def table(ids, paths, **extra):
        sizes = [Image.open(p).size for p in paths]
        return pa.table({**ids, **extra, "path": [str(p.relative_to(root)) for p in paths],
                         "tar_member": pa.array([None] * len(paths), pa.string()),
                         "width": [s[0] for s in sizes], "height": [s[1] for s in sizes],
                         "original_width": [s[0] for s in sizes], "original_height": [s[1] for s in sizes],
                         "status": ["success"] * len(paths)})

    images = ManifestImages(root, table({"image_id": [IMAGE]}, [shop]), id_column="image_id")
    frame_ids = [p.stem for p in frames]
    clip_frames = ManifestImages(root, table({"frame_id": frame_ids}, frames, clip_id=[CLIP] * len(frames),
                                             frame_index=list(range(len(frames)))), id_column="frame_id")
    gallery = GalleryImageDataset([IMAGE], images, transform=tf)
    queries = QueryClipDataset([CLIP], clip_frames, num_frames=model.config.num_frames, transform=tf)
    return (embed_images(model, DataLoader(gallery, batch_size=4)), embed_clips(model, DataLoader(queries, batch_size=4)),
            model.config.embed_dim)


def _post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_the_model_is_logged_from_code_without_pickle(champion):
    import mlflow
    import yaml

    root, messages = champion
    assert not [m for m in messages if "CloudPickle" in m or "cloudpickle" in m], messages
    cfg = GateConfig()
    with tracking_uri_restored():
        mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
        local = mlflow.artifacts.download_artifacts(f"models:/{cfg.model_name}@{registry.CHAMPION}",
                                                    dst_path=str(root / "downloaded"))
    files = {p.relative_to(local).as_posix() for p in Path(local).rglob("*") if p.is_file()}
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle"))], files
    assert {"artifacts/encoder.pt", "artifacts/serving.json", "model_code.py"} <= files, files
    flavor = yaml.safe_load((Path(local) / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["model_code_path"].endswith("model_code.py") and "python_model" not in flavor
    # its signature documents both request kinds, and an input example ships with it
    mlmodel = yaml.safe_load((Path(local) / "MLmodel").read_text())
    inputs = {c["name"]: c for c in json.loads(mlmodel["signature"]["inputs"])}
    assert inputs["image"]["type"] == "string" and inputs["frames"]["type"] == "array"
    assert not inputs["image"]["required"] and not inputs["frames"]["required"]
    assert any(f.startswith("serving_input_example") or f.startswith("input_example") for f in files), files


def test_served_champion_embeds_a_shop_image_and_a_query_clip_like_the_pipeline(champion):
    root, _ = champion
    shop, frames = _images(root)
    want_image, want_clip, dim = _library_embeddings(root, shop, frames)
    port = free_port()
    # `mlflow models serve` execs `uvicorn` from PATH: the environment's scripts must be on it (as
    # in an activated environment or the project's image)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{GateConfig().model_name}@champion",
           "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    base = f"http://127.0.0.1:{port}"

    def b64(path):
        return base64.b64encode(path.read_bytes()).decode("ascii")

    with server_process(cmd, f"{base}/ping", root / "serve.log", env=env, cwd=root, timeout_s=300):
        status, body = _post(f"{base}/invocations", {"dataframe_records": [{"image": b64(shop)}]})
        assert status == 200, body
        got_image = np.asarray(body["predictions"], dtype=np.float32)
        status, body = _post(f"{base}/invocations", {"dataframe_records": [{"frames": [b64(f) for f in frames]}]})
        assert status == 200, body
        got_clip = np.asarray(body["predictions"], dtype=np.float32)
        # a request the model cannot read is refused with the row at fault
        status, body = _post(f"{base}/invocations", {"dataframe_records": [{"image": "not a picture"}]})
        assert status >= 400 and "row 0" in json.dumps(body), body

    for got, want in ((got_image, want_image), (got_clip, want_clip)):
        assert got.shape == (1, dim) == want.shape
        assert np.linalg.norm(got, axis=1) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert not np.allclose(got_image, got_clip, atol=1e-3)  # two different inputs, two different vectors

"""The retrieval model as an MLflow model: the encoder (with its detector) behind ``pyfunc``.

It is logged with MLflow's *models-from-code* (``python_model`` is the file
:mod:`lpr_core.tracking.model_code`, which calls ``mlflow.models.set_model``), so loading a
registered model runs that file and reads the weights with ``torch.load(weights_only=True)``:
no pickled code anywhere. The serving environment must have ``lpr_core`` installed (the
project's image).

Requests (what a retrieval service sends; one row per item, JSON ``dataframe_records``):

- a gallery (shop) image: ``{"image": "<base64 JPEG>"}``;
- a query clip: ``{"frames": ["<base64 JPEG>", ...]}``, the clip's frames in order.

Each row gets one L2-normalised float32 embedding of the encoder's dimension, in request order.
The embeddings are those of the pipeline itself: gallery images go through the same dataset and
transform as ``index_gallery``; a clip through the same frame sampling (T evenly spaced frames),
detector crops (when the model was evaluated with them) and transform as ``evaluate``, so a
service's vectors can be searched in the gallery indexes the pipeline builds.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import math
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema, TensorSpec
from mlflow.types.schema import Array
from PIL import Image
from torch.utils.data import DataLoader

from lpr_core.data.datasets import GalleryImageDataset, QueryClipDataset
from lpr_core.data.transforms import build_eval_transform
from lpr_core.ids import make_frame_id
from lpr_core.models.detector import load_detector, query_frame_boxes
from lpr_core.models.encoder import embed_clips, embed_images, load_encoder

ENCODER_FILE = "encoder.pt"
DETECTOR_FILE = "detector.pt"
SERVING_FILE = "serving.json"
MODEL_CODE = Path(__file__).with_name("model_code.py")
IMAGE_COLUMN = "image"
FRAMES_COLUMN = "frames"


class RequestError(ValueError):
    """A request row that cannot be embedded (named by its position)."""


def model_checksum(encoder_file: str | Path, detector_file: str | Path | None = None) -> str:
    """The identity of a model: sha256 over the checksums of its encoder and detector files.

    Two candidates with the same checksum carry the same weights, whatever run produced them.
    """
    def digest(path: str | Path) -> str:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()

    h = hashlib.sha256(b"lpr-model/1\0")
    h.update(f"{ENCODER_FILE}={digest(encoder_file)}\n".encode())
    det = digest(detector_file) if detector_file is not None and Path(detector_file).is_file() else "none"
    h.update(f"{DETECTOR_FILE}={det}\n".encode())
    return h.hexdigest()


def decode_jpeg(text: Any, where: str):
    """A PIL RGB image from base64 text (or raw bytes), or :class:`RequestError` naming ``where``."""
    if isinstance(text, bytes | bytearray):
        data = bytes(text)
    elif isinstance(text, str):
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestError(f"{where}: not base64 ({exc})") from None
    else:
        raise RequestError(f"{where}: expected a base64 string, got {type(text).__name__}")
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB")
    except Exception as exc:  # PIL raises several types for bytes that are no image
        raise RequestError(f"{where}: not a decodable image ({exc})") from None


class _RequestImages:
    """The images of one request, read like the pipeline's ``ManifestImages`` (by id, or by clip)."""

    def __init__(self) -> None:
        self._images: dict[str, Any] = {}
        self._clips: dict[str, list[int]] = {}

    def add_image(self, key: str, image: Any) -> None:
        self._images[key] = image

    def add_clip(self, clip_id: str, frames: Sequence[Any]) -> None:
        for i, frame in enumerate(frames):
            self._images[make_frame_id(clip_id, i)] = frame
        self._clips[clip_id] = list(range(len(frames)))

    def __contains__(self, key: object) -> bool:
        return key in self._images

    def clip_frames(self, clip_id: str) -> list[int]:
        return self._clips.get(clip_id, [])

    def open(self, key: str):
        return self._images[key]


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return True


class LprRetrievalModel(mlflow.pyfunc.PythonModel):
    """Embeds shop images and query clips sent as base64 JPEGs (see the module docstring)."""

    batch_size = 32

    def load_context(self, context: Any) -> None:
        self.model = load_encoder(context.artifacts["encoder"]).eval()
        self.transform = build_eval_transform(self.model.config.image_size, mean=self.model.mean, std=self.model.std)
        serving = context.artifacts.get("serving")
        self.settings = json.loads(Path(serving).read_text()) if serving else {}
        self.num_frames = int(self.settings.get("num_frames") or self.model.config.num_frames)
        self.detector = None
        if self.settings.get("crops") == "detector" and context.artifacts.get("detector"):
            self.detector, det_cfg = load_detector(context.artifacts["detector"])
            self.detector_threshold = float(self.settings.get("score_threshold") or det_cfg.score_threshold)
            self.detector_mode = det_cfg.crop_mode

    def _loader(self, dataset):
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=0)

    def embed_images(self, images: Sequence[Any]):
        """``(n, d)`` embeddings of PIL shop images, as ``index_gallery`` computes them."""
        source = _RequestImages()
        keys = [str(i) for i in range(len(images))]
        for key, image in zip(keys, images):
            source.add_image(key, image)
        if not keys:
            return np.zeros((0, self.model.config.embed_dim), np.float32)
        dataset = GalleryImageDataset(keys, source, transform=self.transform)
        return embed_images(self.model, self._loader(dataset))

    def embed_clips(self, clips: Sequence[Sequence[Any]]):
        """``(n, d)`` embeddings of query clips (lists of PIL frames), as ``evaluate`` computes them."""
        source = _RequestImages()
        clip_ids = [f"{uuid.UUID(int=i)}-0-0" for i in range(len(clips))]
        for clip_id, frames in zip(clip_ids, clips):
            source.add_clip(clip_id, frames)
        if not clip_ids:
            return np.zeros((0, self.model.config.embed_dim), np.float32)
        boxes = None
        if self.detector is not None:
            boxes = query_frame_boxes(self.detector, clip_ids, source, num_frames=self.num_frames,
                                      score_threshold=self.detector_threshold, mode=self.detector_mode)
        dataset = QueryClipDataset(clip_ids, source, num_frames=self.num_frames, transform=self.transform,
                                   boxes=boxes, box_padding=float(self.settings.get("box_padding", 0.1)))
        return embed_clips(self.model, self._loader(dataset))

    def predict(self, context, model_input: pd.DataFrame, params=None):  # noqa: ANN001
        """``(n, d)`` float32 embeddings, one per request row (an ``image`` or a clip's ``frames``).

        (The DataFrame hint tells MLflow to check requests against the signature, not the hint.)
        """
        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        images, clips, kinds = [], [], []
        for i, row in enumerate(rows):
            frames, image = row.get(FRAMES_COLUMN), row.get(IMAGE_COLUMN)
            if _present(frames):
                frames = list(frames)
                if not frames:
                    raise RequestError(f"row {i}: 'frames' is empty (send the clip's frames as base64 JPEGs)")
                clips.append([decode_jpeg(f, f"row {i} frame {j}") for j, f in enumerate(frames)])
                kinds.append("clip")
            elif _present(image):
                images.append(decode_jpeg(image, f"row {i} image"))
                kinds.append("image")
            else:
                raise RequestError(f"row {i}: give '{IMAGE_COLUMN}' (a base64 JPEG of a shop image) or "
                                   f"'{FRAMES_COLUMN}' (a query clip's frames, a list of base64 JPEGs)")
        image_emb, clip_emb = self.embed_images(images), self.embed_clips(clips)
        out = np.zeros((len(rows), self.model.config.embed_dim), np.float32)
        it_image, it_clip = iter(image_emb), iter(clip_emb)
        for i, kind in enumerate(kinds):
            out[i] = next(it_image) if kind == "image" else next(it_clip)
        return out


def signature(dim: int):
    """Input: optional ``image`` (base64 JPEG) and ``frames`` (list of base64 JPEGs) columns, one of
    them per row; output: a ``[-1, dim]`` float32 tensor of L2-normalised embeddings."""
    return ModelSignature(
        inputs=Schema([ColSpec(DataType.string, IMAGE_COLUMN, required=False),
                       ColSpec(Array(DataType.string), FRAMES_COLUMN, required=False)]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, dim))]),
    )


def encode_jpeg(image: Any, quality: int = 90) -> str:
    """Base64 text of a PIL image as JPEG (what a client sends)."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def input_example() -> pd.DataFrame:
    """One gallery image and one two-frame query clip (tiny JPEGs), as a request DataFrame."""
    shop = encode_jpeg(Image.new("RGB", (48, 48), (200, 40, 40)))
    frames = [encode_jpeg(Image.new("RGB", (64, 48), (40, 40 + 60 * i, 200))) for i in range(2)]
    return pd.DataFrame([{IMAGE_COLUMN: shop, FRAMES_COLUMN: None}, {IMAGE_COLUMN: None, FRAMES_COLUMN: frames}])


def pip_requirements(backbone: str = "") -> list[str]:
    """The model's requirements, pinned to this environment (``lpr_core`` itself comes with the image)."""
    names = ["mlflow", "torch", "torchvision", "numpy", "pandas", "pillow"]
    if backbone.startswith("open_clip"):
        names.append("open_clip_torch")
    reqs = []
    for name in names:
        try:
            reqs.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return reqs


def log_retrieval_model(encoder_dir: str | Path, detector_dir: str | Path | None, dim: int,
                        name: str = "lpr-model", *, serving: Mapping[str, Any] | None = None) -> str:
    """Log the encoder (+ detector) as a models-from-code pyfunc model in the active run.

    Args:
        encoder_dir: holds ``encoder.pt``.
        detector_dir: holds ``detector.pt`` (optional).
        dim: the embedding dimension (the output signature).
        name: the logged model's name.
        serving: how queries are embedded (``crops``: ``detector`` or ``none``, ``box_padding``,
            ``num_frames``), as the evaluate stage did; stored as ``serving.json``.

    Returns:
        The logged model's URI (``models:/m-...``).
    """
    encoder_file = Path(encoder_dir) / ENCODER_FILE
    artifacts = {"encoder": str(encoder_file)}
    if detector_dir is not None and (Path(detector_dir) / DETECTOR_FILE).exists():
        artifacts["detector"] = str(Path(detector_dir) / DETECTOR_FILE)
    settings = dict(serving or {})
    if settings.get("crops") != "detector" or "detector" not in artifacts:
        settings["crops"] = "none"  # ground-truth boxes do not exist at serving time
    backbone = str(load_encoder(encoder_file).config.backbone)
    with tempfile.TemporaryDirectory(prefix="lpr-model-") as tmp:
        path = Path(tmp) / SERVING_FILE
        path.write_text(json.dumps(settings, indent=1, sort_keys=True))
        artifacts["serving"] = str(path)
        info = mlflow.pyfunc.log_model(name=name, python_model=str(MODEL_CODE), artifacts=artifacts,
                                       signature=signature(dim), input_example=input_example(),
                                       pip_requirements=pip_requirements(backbone))
    return info.model_uri

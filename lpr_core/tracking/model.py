"""The retrieval model as an MLflow model: the encoder (with its detector) behind ``pyfunc``.

``predict`` takes a DataFrame with one column, ``image_path`` (shop images) — or ``frame_paths``,
a list of frame files per row (query clips) — and returns L2-normalised embeddings, one row each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc

ENCODER_FILE = "encoder.pt"
DETECTOR_FILE = "detector.pt"


class LprRetrievalModel(mlflow.pyfunc.PythonModel):
    """Embeds shop images or clips with the trained encoder."""

    def load_context(self, context: Any) -> None:
        from lpr_core.models.encoder import load_encoder

        self.model = load_encoder(context.artifacts["encoder"]).eval()

    def _transform(self):
        from lpr_core.data.transforms import build_eval_transform

        return build_eval_transform(self.model.config.image_size, mean=self.model.mean, std=self.model.std)

    def predict(self, context, model_input, params=None):  # noqa: ANN001 - untyped: MLflow infers from hints
        import numpy as np
        import torch
        from PIL import Image

        tf = self._transform()
        with torch.inference_mode():
            if "frame_paths" in model_input.columns:
                out = []
                for paths in model_input["frame_paths"]:
                    frames = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths])[None]
                    out.append(self.model.encode_clips(frames, torch.ones(1, len(paths), dtype=torch.bool))[0])
                emb = torch.stack(out)
            else:
                images = torch.stack([tf(Image.open(p).convert("RGB")) for p in model_input["image_path"]])
                emb = self.model.encode_images(images)
        return np.asarray(emb.float().numpy(), dtype=np.float32)


def signature(dim: int):
    """Input: ``image_path`` strings; output: a ``[-1, dim]`` float32 tensor of embeddings."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    return ModelSignature(inputs=Schema([ColSpec("string", "image_path")]),
                          outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, dim))]))


def log_retrieval_model(encoder_dir: str | Path, detector_dir: str | Path | None, dim: int,
                        name: str = "lpr-model") -> str:
    """Log the encoder (+ detector) as a pyfunc model in the active run; return its model URI."""
    artifacts = {"encoder": str(Path(encoder_dir) / ENCODER_FILE)}
    if detector_dir is not None and (Path(detector_dir) / DETECTOR_FILE).exists():
        artifacts["detector"] = str(Path(detector_dir) / DETECTOR_FILE)
    info = mlflow.pyfunc.log_model(name=name, python_model=LprRetrievalModel(), artifacts=artifacts,
                                   signature=signature(dim))
    return info.model_uri

"""`lpr promote` / `lpr rollback` end to end on a real sqlite store with a real (tiny) encoder."""

import json
import shutil
from pathlib import Path

import pytest

from lpr_core import cli
from lpr_core.tracking import registry
from lpr_core.tracking.gate import GateConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path, monkeypatch):
    from lpr_core.models.encoder import EncoderConfig, build_encoder, save_encoder

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    enc = build_encoder(EncoderConfig(backbone="resnet10", backbone_width=8, image_size=32, num_frames=2,
                                      embed_dim=16, pmd=False, pfr=False))
    save_encoder(enc, tmp_path / "models/encoder/encoder.pt")
    return tmp_path


def write_candidate(root, rank1, small=0.5, dv="d1", ok=True):
    out = root / "data/evaluate"
    out.mkdir(parents=True, exist_ok=True)
    (out / "candidate.json").write_text(json.dumps({
        "encoder": str(root / "models/encoder/encoder.pt"), "detector": None,
        "metrics": {"test/rank1": rank1, "test/scale_type/small/rank1": small},
        "data_version": dv, "validation_passed": ok,
    }))
    return out


def test_promote_registers_a_logged_model_and_gates_it(project, capsys):
    cand = write_candidate(project, 0.4)
    assert cli.main(["promote", "--candidate-from", str(cand)]) == 0
    assert "PROMOTED" in capsys.readouterr().out
    cfg = GateConfig()
    v1 = registry.alias_version(registry.CHAMPION, cfg)
    mv = registry._client().get_model_version(cfg.model_name, v1)
    assert mv.tags["metric.test/rank1"] == "0.400000" and mv.tags["lpr.data_version"] == "d1"
    # the registered model is a real pyfunc that embeds images
    import mlflow
    import numpy as np
    import pandas as pd
    from PIL import Image

    img = project / "x.jpg"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(img)
    model = mlflow.pyfunc.load_model(f"models:/{cfg.model_name}@champion")
    emb = np.asarray(model.predict(pd.DataFrame({"image_path": [str(img)]})))
    assert emb.shape == (1, 16) and abs(float(np.linalg.norm(emb[0])) - 1.0) < 1e-4

    # a worse candidate is refused (exit 3 with --fail-on-refuse), a regressing critical slice too
    write_candidate(project, 0.3)
    assert cli.main(["promote", "--candidate-from", str(cand), "--fail-on-refuse"]) == 3
    write_candidate(project, 0.6, small=0.3)
    assert cli.main(["promote", "--candidate-from", str(cand)]) == 0
    assert "critical slices regressed" in capsys.readouterr().out
    assert registry.alias_version(registry.CHAMPION, cfg) == v1

    write_candidate(project, 0.6, small=0.5)
    assert cli.main(["promote", "--candidate-from", str(cand)]) == 0
    assert registry.alias_version(registry.CHAMPION, cfg) != v1
    assert cli.main(["rollback"]) == 0
    assert registry.alias_version(registry.CHAMPION, cfg) == v1


def test_failed_validation_is_refused_and_missing_candidate_is_explained(project, capsys):
    cand = write_candidate(project, 0.9, ok=False)
    assert cli.main(["promote", "--candidate-from", str(cand), "--fail-on-refuse"]) == 3
    assert "validation" in capsys.readouterr().out
    assert cli.main(["promote", "--candidate-from", str(project / "nowhere")]) == 2
    assert "run the evaluate stage first" in capsys.readouterr().err

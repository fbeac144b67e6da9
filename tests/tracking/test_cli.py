"""`lpr promote` / `lpr rollback` end to end on a real sqlite store with a real (tiny) encoder."""

import pytest

from lpr_core import cli
from lpr_core.tracking import registry
from lpr_core.tracking.gate import GateConfig
from tests.tracking.helpers import make_project, tracking_uri_restored, write_candidate


@pytest.fixture
def project(tmp_path, monkeypatch):
    with tracking_uri_restored():
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        yield make_project(tmp_path)


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

"""`lpr promote` / `lpr rollback` end to end on a real sqlite store with a real (tiny) encoder."""

import pytest

from lpr_core import cli
from lpr_core.tracking import registry
from lpr_core.tracking.gate import GateConfig
from tests.tracking.helpers import embed_request, make_project, tracking_uri_restored, write_candidate


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
    emb = np.asarray(model.predict(pd.DataFrame([embed_request(img)])))
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


def test_an_unchanged_candidate_is_recorded_not_registered_again(project, capsys):
    """A pipeline run that changed nothing (same weights, same data) must not churn the registry."""
    cfg = GateConfig()
    cand = write_candidate(project, 0.4)
    assert cli.main(["promote", "--candidate-from", str(cand)]) == 0
    client = registry._client()  # after `lpr promote` pointed MLflow at the project's store
    v1 = registry.alias_version(registry.CHAMPION, cfg)
    capsys.readouterr()
    write_candidate(project, 0.4, new_model=False)  # the same model evaluated on the same data again
    assert cli.main(["promote", "--candidate-from", str(cand), "--fail-on-refuse"]) == 0
    out = capsys.readouterr().out
    assert f"v{v1}: UNCHANGED: the candidate is identical to champion v{v1}" in out and "not registered again" in out
    assert [str(mv.version) for mv in client.search_model_versions(f"name = '{cfg.model_name}'")] == [v1]
    tags = client.get_model_version(cfg.model_name, v1).tags
    assert tags["lpr.resubmitted_count"] == "1" and len(tags["lpr.model_sha256"]) == 64

    # the same weights scored on other data are a new candidate (the gate then compares them)
    write_candidate(project, 0.4, dv="d2", new_model=False)
    assert cli.main(["promote", "--candidate-from", str(cand), "--no-rescore"]) == 0
    assert "REFUSED" in capsys.readouterr().out
    assert len(client.search_model_versions(f"name = '{cfg.model_name}'")) == 2


def test_ties_and_non_finite_scores_through_the_command(project, capsys):
    cfg = GateConfig()
    cand = write_candidate(project, 0.4)
    assert cli.main(["promote", "--candidate-from", str(cand)]) == 0
    v1 = registry.alias_version(registry.CHAMPION, cfg)
    # other weights with the same score: a tie does not move the champion (promote_ties: false)
    write_candidate(project, 0.4)
    assert cli.main(["promote", "--candidate-from", str(cand), "--fail-on-refuse"]) == 3
    assert "a tie does not move the champion (promote_ties is off)" in capsys.readouterr().out
    assert registry.alias_version(registry.CHAMPION, cfg) == v1
    # with promote_ties: true it does
    params = (project / "params.yaml").read_text().replace("promote_ties: false", "promote_ties: true")
    (project / "params.yaml").write_text(params)
    assert cli.main(["promote", "--version", str(int(v1) + 1), "--fail-on-refuse"]) == 0
    assert "ties the champion (promote_ties is on)" in capsys.readouterr().out
    # a NaN score never passes ("improved by +nan" was the old behaviour)
    write_candidate(project, float("nan"))
    assert cli.main(["promote", "--candidate-from", str(cand), "--fail-on-refuse"]) == 3
    out = capsys.readouterr().out
    assert "REFUSED" in out and "no finite (nan)" in out and "+nan" not in out

"""Registry aliases, promotion and rollback against a real MLflow sqlite store."""

import multiprocessing as mp

import pytest

from lpr_core.tracking import registry
from lpr_core.tracking.gate import GateConfig

CFG = GateConfig(model_name="lpr-encoder-test", min_delta=0.0)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    return f"sqlite:///{root / 'mlflow.db'}", root


@pytest.fixture
def model_name(request):
    return f"lpr-encoder-{request.node.name.replace('[', '-').replace(']', '')}"


def make_model(store, name, r1, dv="d1", ok=True):
    uri, root = store
    src = root / f"model-{name}-{r1}"
    src.mkdir(exist_ok=True)
    (src / "MLmodel").write_text("flavors: {}\n")
    cfg = GateConfig(model_name=name)
    return registry.register_candidate(src.as_uri(), {"test/rank1": r1}, dv, ok, cfg=cfg, tracking_uri=uri)


def test_first_worse_better_and_rollback(store, model_name):
    uri = store[0]
    cfg = GateConfig(model_name=model_name)
    v1 = make_model(store, model_name, 0.30)
    assert registry.promote(v1, cfg, tracking_uri=uri).promote
    assert registry.alias_version(registry.CHAMPION, cfg, uri) == v1

    v2 = make_model(store, model_name, 0.20)
    d = registry.promote(v2, cfg, tracking_uri=uri)
    assert not d.promote
    tags = registry._client(uri).get_model_version(model_name, v2).tags
    assert tags["gate.decision"] == "refused" and tags["gate.champion_version"] == v1
    assert registry.alias_version(registry.CHAMPION, cfg, uri) == v1

    v3 = make_model(store, model_name, 0.45)
    assert registry.promote(v3, cfg, tracking_uri=uri).promote
    assert registry.alias_version(registry.CHAMPION, cfg, uri) == v3
    assert registry.alias_version(registry.PREVIOUS, cfg, uri) == v1

    assert registry.rollback(cfg, tracking_uri=uri) == (v3, v1)
    assert registry.alias_version(registry.CHAMPION, cfg, uri) == v1
    assert registry.alias_version(registry.PREVIOUS, cfg, uri) is None
    with pytest.raises(registry.RegistryError, match="no previous champion"):
        registry.rollback(cfg, tracking_uri=uri)


def test_champion_scored_on_other_data_is_rescored_first(store, model_name):
    uri = store[0]
    cfg = GateConfig(model_name=model_name)
    v1 = make_model(store, model_name, 0.50, dv="old")
    registry.promote(v1, cfg, tracking_uri=uri)
    v2 = make_model(store, model_name, 0.40, dv="new")
    calls = []

    def rescore(version):
        calls.append(version)
        return {"test/rank1": 0.35}, "new"

    d = registry.promote(v2, cfg, rescore=rescore, tracking_uri=uri)
    assert calls == [v1]
    assert d.promote and d.champion.metrics["test/rank1"] == pytest.approx(0.35)
    champ_tags = registry._client(uri).get_model_version(model_name, v1).tags
    assert champ_tags["lpr.data_version"] == "new" and "old" in champ_tags["rescored_from"]


def test_without_rescoring_other_data_is_refused(store, model_name):
    uri = store[0]
    cfg = GateConfig(model_name=model_name)
    registry.promote(make_model(store, model_name, 0.5, dv="a"), cfg, tracking_uri=uri)
    d = registry.promote(make_model(store, model_name, 0.9, dv="b"), cfg, tracking_uri=uri)
    assert not d.promote and "rescore" in d.reason


def _promote_in_process(args):
    uri, name, version = args
    return registry.promote(version, GateConfig(model_name=name), tracking_uri=uri).promote


@pytest.mark.slow
def test_two_promotions_at_once_leave_one_consistent_champion(store, model_name):
    uri = store[0]
    cfg = GateConfig(model_name=model_name)
    registry.promote(make_model(store, model_name, 0.40), cfg, tracking_uri=uri)
    v_mid, v_best = make_model(store, model_name, 0.50), make_model(store, model_name, 0.60)
    with mp.get_context("spawn").Pool(2) as pool:
        results = pool.map(_promote_in_process, [(uri, model_name, v_mid), (uri, model_name, v_best)])
    assert results[1] is True  # the best always wins, whatever the order
    assert registry.alias_version(registry.CHAMPION, cfg, uri) == v_best
    prev = registry.alias_version(registry.PREVIOUS, cfg, uri)
    history = registry._history(registry._client(uri), cfg)
    assert history[-1] == v_best and history[-2] == prev

"""Registry aliases, promotion, rollback and the promotion lock against a real MLflow sqlite store."""

import json
import math
import multiprocessing as mp
import os
import signal
import time

import pytest

from lpr_core.tracking import registry
from lpr_core.tracking.gate import CriticalSlice, GateConfig
from lpr_core.tracking.lock import LockLost, LockTimeout, RegistryLock, lock_model_name
from tests.tracking.helpers import check_race_outcome, hold_lock, race, register_dummy, wait_for_file

CFG = GateConfig(model_name="lpr-encoder-test", min_delta=0.0)
SMALL = "test/scale_type/small/rank1"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    return f"sqlite:///{root / 'mlflow.db'}", root


@pytest.fixture
def model_name(request):
    return f"lpr-encoder-{request.node.name.replace('[', '-').replace(']', '')}"


def make_model(store, name, r1, dv="d1", ok=True, **more):
    uri, root = store
    src = root / f"model-{name}-{r1}-{len(list(root.iterdir()))}"
    src.mkdir(exist_ok=True)
    (src / "MLmodel").write_text("flavors: {}\n")
    cfg = GateConfig(model_name=name)
    metrics = {} if r1 is None else {"test/rank1": r1}
    metrics.update(more)
    return registry.register_candidate(src.as_uri(), metrics, dv, ok, cfg=cfg, tracking_uri=uri)


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
    assert tags["gate.lock_ticket"].isdigit()
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
    # every ticket was withdrawn
    assert registry._client(uri).search_model_versions(f"name = '{lock_model_name(model_name)}'") == []


def test_nan_or_missing_scores_are_never_promoted_and_a_nan_champion_is_replaced(store, model_name):
    uri = store[0]
    cfg = GateConfig(model_name=model_name)
    for bad in (math.nan, None):
        d = registry.promote(make_model(store, model_name, bad), cfg, tracking_uri=uri)
        assert not d.promote and "cannot be promoted" in d.reason
    assert registry.alias_version(registry.CHAMPION, cfg, uri) is None

    # a champion whose score became NaN (e.g. rescored on data where it fails) is replaced
    v1 = make_model(store, model_name, 0.4)
    registry.promote(v1, cfg, tracking_uri=uri)
    registry._client(uri).set_model_version_tag(model_name, v1, "metric.test/rank1", "nan")
    v2 = make_model(store, model_name, 0.1)
    d = registry.promote(v2, cfg, tracking_uri=uri)
    assert d.promote and "has no finite (nan)" in d.reason and "replaced" in d.reason
    assert registry.alias_version(registry.CHAMPION, cfg, uri) == v2
    assert registry._client(uri).get_model_version(model_name, v2).tags["gate.reason"] == d.reason


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


def test_slices_the_new_data_lacks_are_not_kept_on_a_rescored_champion(store, model_name):
    """The real-data road: a champion scored on data with slice labels, a candidate on data without.
    Rescoring drops the champion's old slice score, so the slice is not applicable to either and the
    candidate is judged on its headline score (twice in a row, as the second run would be)."""
    uri = store[0]
    cfg = GateConfig(model_name=model_name, critical_slices=(CriticalSlice(SMALL, 0.05),))
    v1 = make_model(store, model_name, 0.30, dv="synthetic", **{SMALL: 0.3})
    registry.promote(v1, cfg, tracking_uri=uri)
    v2 = make_model(store, model_name, 0.40, dv="release")
    d = registry.promote(v2, cfg, rescore=lambda v: ({"test/rank1": 0.2}, "release"), tracking_uri=uri)
    assert d.promote, d.reason
    client = registry._client(uri)
    assert f"metric.{SMALL}" not in client.get_model_version(model_name, v1).tags
    assert json.loads(client.get_model_version(model_name, v1).tags["rescored_from"])["metrics"][SMALL] == 0.3
    tags = client.get_model_version(model_name, v2).tags
    assert tags[f"gate.slice.{SMALL}"] == "not_applicable" and "not applicable" in tags["gate.reason"]
    # the next candidate is judged on its score, not refused for the slice nobody has
    worse, better = make_model(store, model_name, 0.35, dv="release"), make_model(store, model_name, 0.5, dv="release")
    assert not registry.promote(worse, cfg, tracking_uri=uri).promote
    assert registry.promote(better, cfg, tracking_uri=uri).promote
    # a slice the champion has and the candidate lacks still refuses
    v5 = make_model(store, model_name, 0.9, dv="release", **{SMALL: 0.4})
    assert registry.promote(v5, cfg, tracking_uri=uri).promote
    d = registry.promote(make_model(store, model_name, 0.95, dv="release"), cfg, tracking_uri=uri)
    assert not d.promote and "lacks critical slice" in d.reason


def test_without_rescoring_other_data_is_refused(store, model_name):
    uri = store[0]
    cfg = GateConfig(model_name=model_name)
    registry.promote(make_model(store, model_name, 0.5, dv="a"), cfg, tracking_uri=uri)
    d = registry.promote(make_model(store, model_name, 0.9, dv="b"), cfg, tracking_uri=uri)
    assert not d.promote and "rescore" in d.reason


def test_identical_champion_and_resubmissions(store, model_name):
    uri = store[0]
    cfg = GateConfig(model_name=model_name)
    v1 = register_dummy(uri, model_name, 0.4, "d1", sha="abc")
    assert registry.identical_champion("abc", "d1", cfg, uri) is None  # no champion yet
    registry.promote(v1, cfg, tracking_uri=uri)
    assert registry.identical_champion("abc", "d1", cfg, uri) == v1
    assert registry.identical_champion("abc", "d2", cfg, uri) is None
    assert registry.identical_champion("abd", "d1", cfg, uri) is None
    assert registry.record_resubmission(v1, cfg, details={"lpr.pipeline_run_id": "p2"}, tracking_uri=uri) == 1
    assert registry.record_resubmission(v1, cfg, tracking_uri=uri) == 2
    tags = registry._client(uri).get_model_version(model_name, v1).tags
    assert tags["lpr.resubmitted_count"] == "2" and "time" in json.loads(tags["lpr.resubmitted_last"])
    # the gate refuses an identical version that got registered anyway (a race), moving nothing
    v2 = register_dummy(uri, model_name, 0.4, "d1", sha="abc")
    d = registry.promote(v2, cfg, tracking_uri=uri)
    assert not d.promote and "identical to champion" in d.reason
    assert registry.alias_version(registry.CHAMPION, cfg, uri) == v1


# ------------------------------------------------------------------------------------ the lock itself


def _client(uri):
    return registry._client(uri)


def test_lock_waits_for_a_live_holder_and_never_breaks_it(store, model_name, tmp_path):
    """A holder that keeps renewing its ticket is waited for, even past its time to live."""
    uri = store[0]
    ctx = mp.get_context("spawn")
    ready = tmp_path / "ready"
    holder = ctx.Process(target=hold_lock, args=(uri, model_name, 1.0, str(ready), 4.0))
    holder.start()
    try:
        wait_for_file(ready, proc=holder)
        t0 = time.monotonic()
        with RegistryLock(_client(uri), model_name, ttl_s=1.0, wait_s=60) as lock:
            waited = time.monotonic() - t0
            assert lock.broken == []
            assert int(lock.ticket) > int(ready.read_text())
        holder.join(30)
        assert holder.exitcode == 0  # it held to the end and released normally
        assert waited > 2.0
    finally:
        holder.kill()


def test_a_stale_lock_of_a_killed_holder_is_broken_after_its_ttl(store, model_name, tmp_path):
    uri = store[0]
    ctx = mp.get_context("spawn")
    ready = tmp_path / "ready"
    holder = ctx.Process(target=hold_lock, args=(uri, model_name, 1.5, str(ready)))
    holder.start()
    try:
        stale = wait_for_file(ready, proc=holder)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join()
    t0 = time.monotonic()
    with RegistryLock(_client(uri), model_name, ttl_s=1.5, wait_s=60) as lock:
        assert time.monotonic() - t0 >= 1.5  # not before the holder's time to live
        assert len(lock.broken) == 1 and f"ticket {stale}" in lock.broken[0] and "test holder" in lock.broken[0]
    # a promotion after a crashed one goes through and records what it broke
    holder = ctx.Process(target=hold_lock, args=(uri, model_name, 1.0, str(tmp_path / "ready2")))
    holder.start()
    try:
        wait_for_file(tmp_path / "ready2", proc=holder)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join()
    v = register_dummy(uri, model_name, 0.3)
    registry.promote(v, GateConfig(model_name=model_name, lock_ttl_s=1.0), tracking_uri=uri)
    assert "test holder" in _client(uri).get_model_version(model_name, v).tags["gate.lock_broken"]


def test_a_stalled_holder_learns_it_lost_the_lock(store, model_name):
    uri = store[0]
    first = RegistryLock(_client(uri), model_name, ttl_s=1.0).acquire()
    first._stop.set()  # stalls: stops renewing (as a SIGSTOPped process would)
    first._thread.join()
    with RegistryLock(_client(uri), model_name, ttl_s=1.0, wait_s=30) as second:
        assert second.broken
        with pytest.raises(LockLost, match="broken as stale"):
            first.ensure_held()
        second.ensure_held()
    first.release()  # harmless: its ticket is already gone


def test_lock_timeout_names_the_holder_and_withdraws_the_ticket(store, model_name):
    uri = store[0]
    with RegistryLock(_client(uri), model_name, purpose="promote v7", ttl_s=30):
        with pytest.raises(LockTimeout, match="'promote v7' on .* pid"):
            RegistryLock(_client(uri), model_name, ttl_s=30, wait_s=0.5).acquire()
        live = _client(uri).search_model_versions(f"name = '{lock_model_name(model_name)}'")
        assert len(live) == 1  # only the holder's ticket: the waiter withdrew its own


@pytest.mark.slow
def test_promotions_racing_in_processes_leave_one_consistent_champion(store, model_name):
    uri = store[0]
    cfg = GateConfig(model_name=model_name)
    first = make_model(store, model_name, 0.40)
    registry.promote(first, cfg, tracking_uri=uri)
    scores = {make_model(store, model_name, s): s for s in (0.50, 0.60, 0.45, math.nan)}
    results = race([(uri, model_name, v) for v in scores])
    assert set(results) == set(scores) and sum(results.values()) >= 1
    check_race_outcome(uri, model_name, scores, first=first)
    assert registry.alias_version(registry.CHAMPION, cfg, uri) == next(v for v, s in scores.items() if s == 0.60)

"""The dvc.lock exchange: entries published under a run, read back whole, merged and assembled."""

import pytest
import yaml

from components.exchange import ExchangeError, LockExchange, dump_lock, lock_document, merge_lock

ENTRY_A = {"cmd": "python a.py", "deps": [{"path": "a.py", "hash": "md5", "md5": "1" * 32, "size": 3}],
           "outs": [{"path": "data/a", "hash": "md5", "md5": "2" * 32 + ".dir", "size": 9, "nfiles": 1}]}
ENTRY_B = {"cmd": "python b.py", "deps": [{"path": "data/a", "hash": "md5", "md5": "2" * 32 + ".dir"}],
           "params": {"params.yaml": {"b.lr": 0.003}}, "outs": [{"path": "data/b", "md5": "3" * 32}]}


def test_merge_replaces_and_adds_entries_and_keeps_the_others_in_dvc_yaml_order():
    lock = {"schema": "2.0", "stages": {"b": {"cmd": "stale"}, "c": {"cmd": "python c.py"}}}
    merged = merge_lock(lock, {"a": ENTRY_A, "b": ENTRY_B}, order=["a", "b", "c"])
    assert merged == {"schema": "2.0", "stages": {"a": ENTRY_A, "b": ENTRY_B, "c": {"cmd": "python c.py"}}}
    assert list(merge_lock(None, {"b": ENTRY_B, "a": ENTRY_A}, order=["a", "b"])["stages"]) == ["a", "b"]
    assert list(lock_document({"z": {}, "a": {}}, order=["a"])["stages"]) == ["a", "z"]
    assert yaml.safe_load(dump_lock(merged)) == merged


@pytest.mark.parametrize("run_id", ["manual__2026-11-27T05:00:00+00:00", "run/with/slashes", "r1"])
def test_local_entries_round_trip_per_run(tmp_path, run_id):
    exchange = LockExchange(str(tmp_path / "runs"), run_id)
    assert exchange.get("a") is None
    url = exchange.publish("a", ENTRY_A)
    assert url.startswith(str(tmp_path / "runs")) and url.endswith("/a.lock.yaml")
    exchange.publish("b", ENTRY_B)
    assert exchange.get("a") == ENTRY_A
    assert exchange.entries(["a", "b", "c"]) == {"a": ENTRY_A, "b": ENTRY_B}
    assert exchange.lock(["b", "a", "c"]) == {"schema": "2.0", "stages": {"b": ENTRY_B, "a": ENTRY_A}}
    # each entry is itself a dvc.lock, in one folder per run
    (entry,) = [p for p in (tmp_path / "runs").rglob("a.lock.yaml")]
    assert yaml.safe_load(entry.read_text()) == {"schema": "2.0", "stages": {"a": ENTRY_A}}
    assert LockExchange(str(tmp_path / "runs"), "another-run").get("a") is None


def test_a_damaged_entry_names_its_url(tmp_path):
    exchange = LockExchange(str(tmp_path), "r1")
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "a.lock.yaml").write_text("schema: '2.0'\nstages: {b: {}}\n")
    with pytest.raises(ExchangeError, match=r"r1/a.lock.yaml: not a dvc.lock entry of stage 'a'"):
        exchange.get("a")


def test_missing_url_or_run_id_says_what_to_set():
    with pytest.raises(ExchangeError, match="LPR_RUNS_URL"):
        LockExchange("", "r1")
    with pytest.raises(ExchangeError, match="LPR_PIPELINE_RUN_ID"):
        LockExchange("/tmp/runs", "")


@pytest.mark.integration
def test_entries_on_an_s3_object_store(s3):
    url = f"s3://{s3['BUCKET']}/lpr/runs"
    exchange = LockExchange(url, "manual__2026-11-27T05:00:00+00:00")
    assert exchange.get("a") is None
    assert exchange.publish("a", ENTRY_A) == f"{url}/manual__2026-11-27T05:00:00+00:00/a.lock.yaml"
    reader = LockExchange(url + "/", "manual__2026-11-27T05:00:00+00:00")  # another pod, the same run
    assert reader.get("a") == ENTRY_A
    assert reader.lock(["a", "b"])["stages"] == {"a": ENTRY_A}

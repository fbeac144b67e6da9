import pytest

from lpr_core.dvcgraph import load_stages


def write(tmp_path, text):
    p = tmp_path / "dvc.yaml"
    p.write_text(text)
    return p


def test_orders_stages_by_data_flow_not_file_order(tmp_path):
    p = write(
        tmp_path,
        """
stages:
  evaluate:
    cmd: python -m x.evaluate --index data/index
    deps: [data/index/live]
    metrics: [{data/eval/metrics.json: {cache: false}}]
  index:
    cmd: python -m x.index
    deps: [data/download]
    params: [{params.yaml: [index.kind]}]
    outs: [data/index]
  download:
    cmd: [python -m x.download, echo done]
    deps: [urls]
    params: [download.image_size, download.processes]
    outs: [data/download]
""",
    )
    stages = load_stages(p)
    assert [s.name for s in stages] == ["download", "index", "evaluate"]
    by = {s.name: s for s in stages}
    assert by["evaluate"].upstream == ("index",)
    assert by["index"].params == ("index.kind",)
    assert by["download"].params == ("download.image_size", "download.processes")
    assert by["download"].cmd == "python -m x.download && echo done"
    assert by["evaluate"].outs == ("data/eval/metrics.json",)


def test_cycle_is_reported(tmp_path):
    p = write(tmp_path, "stages:\n  a: {cmd: a, deps: [y], outs: [x]}\n  b: {cmd: b, deps: [x], outs: [y]}\n")
    with pytest.raises(ValueError, match="cycle"):
        load_stages(p)


def test_missing_cmd_and_empty_file_are_errors(tmp_path):
    with pytest.raises(ValueError, match="no cmd"):
        load_stages(write(tmp_path, "stages:\n  a: {deps: [x]}\n"))
    with pytest.raises(ValueError, match="no stages"):
        load_stages(write(tmp_path, "stages: {}\n"))


def test_prefix_match_is_by_path_component(tmp_path):
    p = write(tmp_path, "stages:\n  a: {cmd: a, outs: [data/d]}\n  b: {cmd: b, deps: [data/dl], outs: [z]}\n")
    assert {s.name: s.upstream for s in load_stages(p)}["b"] == ()

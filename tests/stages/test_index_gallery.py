"""The ``index_gallery`` stage on the tiny synthetic world, with a tiny untrained encoder.

The stage runs in-process through its ``main`` (the command line DVC calls). The world, its
download (manifests + resized JPEGs made with Pillow), the prepared tables and the tiny
checkpoints are built once per session by :func:`tiny_inputs`, which the ``evaluate`` tests share.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from lpr_core.config import load_params, to_mapping
from lpr_core.index.store import EMBEDDINGS_FILE, IMAGES_FILE, SUMMARY_FILE
from lpr_core.stages.index_gallery import IndexGalleryParams, main
from tests.tracking.helpers import tracking_uri_restored

REPO = Path(__file__).resolve().parents[2]
IMAGE_SIZE = 128  # the download image size of the repo's params (demo scale)
#: a tiny encoder: trains nothing, embeds fast; it records crop_boxes as train_encoder does
TINY_ENCODER = dict(
    backbone="resnet10",
    backbone_width=16,
    image_size=32,
    num_frames=3,
    embed_dim=16,
    decoder_dim=16,
    heads=2,
    pmd=False,
    pfr=False,
    aggregator="transformer",
    dropout=0.0,
)
TINY_DETECTOR = dict(arch="fasterrcnn_mobilenet_v3_large_320_fpn", min_size=64, max_size=96, rpn_proposals=50, rois_per_image=16, box_head_dim=64)


@dataclass(frozen=True)
class Inputs:
    """The inputs of the two stages, as DVC lays them out."""

    root: Path
    world: Path
    download: Path
    prepared: Path
    encoder: Path
    detector: Path


_CACHE: dict[str, object] = {}


def build_inputs(root: Path) -> Inputs:
    """World + download + prepared tables + tiny encoder (trained-with-crops record) and detector."""
    import torch

    from lpr_core.data.prepare import PrepareParams, prepare
    from lpr_core.formats.parquet import write_table
    from lpr_core.models.detector import DetectorConfig, build_detector, save_detector
    from lpr_core.models.encoder import EncoderConfig, build_encoder, save_encoder
    from tests.validation.world import build_tiny

    world, download = build_tiny(root, IMAGE_SIZE)
    prepared = root / "prepared"
    prepared.mkdir()
    result = prepare(world, download, PrepareParams(query_attributes="_source/clips.json"))
    for name, table in result.tables.items():
        write_table(table, prepared / f"{name}.parquet")
    torch.manual_seed(0)
    encoder = root / "models" / "encoder"
    save_encoder(
        build_encoder(EncoderConfig(**TINY_ENCODER)),
        encoder / "encoder.pt",
        extra={"data": {"crop_boxes": True, "box_padding": 0.1}, "step": 0},
    )
    detector = root / "models" / "detector"
    config = DetectorConfig(**TINY_DETECTOR)
    save_detector(build_detector(config), config, detector / "detector.pt")
    return Inputs(root, world, download, prepared, encoder, detector)


def tiny_inputs(tmp_path_factory) -> Inputs:
    """The session's shared inputs (built on first use)."""
    if "inputs" not in _CACHE:
        _CACHE["inputs"] = build_inputs(tmp_path_factory.mktemp("stage_inputs"))
    return _CACHE["inputs"]  # type: ignore[return-value]


def section(name: str, default: object, **changes) -> dict:
    """The repo's params section ``name`` (the dataclass defaults while it is not there yet),
    shrunk for a test: ``changes`` replace nested keys (``embed={"batch_size": 4}``)."""
    base = load_params(REPO / "params.yaml").get(name) or to_mapping(default)
    out = json.loads(json.dumps(base))
    for key, value in changes.items():
        if isinstance(value, dict):
            out.setdefault(key, {}).update(value)
        else:
            out[key] = value
    return out


def write_params(path: Path, **sections: dict) -> Path:
    """A params file holding the given sections."""
    path.write_text(yaml.safe_dump(sections), encoding="utf-8")
    return path


def index_params(path: Path, **changes) -> Path:
    """A params file with a shrunk ``index_gallery`` section."""
    changes.setdefault("embed", {})
    changes["embed"] = {"batch_size": 8, "num_workers": 0, **changes["embed"]}
    return write_params(path, index_gallery=section("index_gallery", IndexGalleryParams(), **changes))


def run_index(
    inputs: Inputs, out: Path, params: Path, prepared: Path | None = None, download: Path | None = None
) -> int:
    return main(
        [
            "--prepared",
            str(prepared or inputs.prepared),
            "--download",
            str(download or inputs.download),
            "--encoder",
            str(inputs.encoder),
            "--out",
            str(out),
            "--params",
            str(params),
        ]
    )


def indexed(tmp_path_factory) -> Path:
    """The session's index directory of the tiny world (built on first use)."""
    if "index" not in _CACHE:
        inputs = tiny_inputs(tmp_path_factory)
        root = tmp_path_factory.mktemp("index")
        out = root / "index"
        assert run_index(inputs, out, index_params(root / "params.yaml")) == 0
        _CACHE["index"] = out
    return _CACHE["index"]  # type: ignore[return-value]


def derived_download(src: Path, dst: Path, edit: dict) -> Path:
    """A download directory sharing ``src``'s images, with edited manifests: ``edit`` maps a
    manifest name (``test_frames``) to a function of its table."""
    (dst / "manifests").mkdir(parents=True)
    for item in src.iterdir():
        if item.name != "manifests":
            (dst / item.name).symlink_to(item.resolve())
    for path in (src / "manifests").glob("*.parquet"):
        table = pq.read_table(path)
        if path.stem in edit:
            table = edit[path.stem](table)
        pq.write_table(table, dst / "manifests" / path.name)
    return dst


def fail_rows(table: pa.Table, column: str, values: set[str]) -> pa.Table:
    """``table`` with the rows whose ``column`` is in ``values`` turned into failed downloads."""
    hit = [v in values for v in table.column(column).to_pylist()]
    status = ["failed" if h else s for h, s in zip(hit, table.column("status").to_pylist())]
    error = ["http_404: planted" if h else e for h, e in zip(hit, table.column("error").to_pylist())]
    for name, values_ in (("status", status), ("error", error)):
        i = table.schema.get_field_index(name)
        table = table.set_column(i, table.schema.field(i), pa.array(values_, table.schema.field(i).type))
    return table


def gallery_table(prepared: Path) -> dict[str, list[str]]:
    table = pq.read_table(prepared / "test_gallery.parquet")
    out: dict[str, list[str]] = {}
    for live_id, image_id in zip(table.column("live_id").to_pylist(), table.column("image_id").to_pylist()):
        out.setdefault(live_id, []).append(image_id)
    return out


@pytest.fixture(scope="session")
def inputs(tmp_path_factory) -> Inputs:
    return tiny_inputs(tmp_path_factory)


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory) -> Path:
    return indexed(tmp_path_factory)


def test_one_index_per_livestream_with_the_gallery_order_and_the_encoder_embeddings(inputs, index_dir):
    import torch

    from lpr_core.data.datasets import ManifestImages
    from lpr_core.embedding import eval_transform, load_encoder_checkpoint
    from lpr_core.index import load_gallery_indexes
    from lpr_core.index.store import load_gallery_embeddings

    galleries = gallery_table(inputs.prepared)
    indexes = load_gallery_indexes(index_dir, device="cpu")
    assert list(indexes) == list(galleries)
    for live_id, gi in indexes.items():
        assert list(gi.image_ids) == galleries[live_id]  # index order = gallery order (ties)
        assert gi.spec.kind == "flat"
    ids, emb = load_gallery_embeddings(index_dir)
    assert sorted(ids) == sorted({i for members in galleries.values() for i in members})
    assert emb.shape == (len(ids), TINY_ENCODER["embed_dim"]) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    row = {i: r for r, i in enumerate(ids)}
    for gi in indexes.values():  # the index holds exactly the saved embeddings
        np.testing.assert_array_equal(gi.vectors(), emb[[row[i] for i in gi.image_ids]])
    # an independent embedding of two images, straight through the encoder
    model, _ = load_encoder_checkpoint(inputs.encoder)
    images = ManifestImages.from_download(inputs.download, "test", "images")
    tf = eval_transform(model)
    with torch.no_grad():
        ref = model.encode_images(torch.stack([tf(images.open(i)) for i in ids[:2]])).numpy()
    np.testing.assert_allclose(emb[:2], ref, atol=1e-5)
    summary = json.loads((index_dir / SUMMARY_FILE).read_text())
    assert summary["num_livestreams"] == len(galleries)
    assert summary["num_embedded"] == len(ids) and summary["num_missing_images"] == 0
    assert summary["encoder_sha256"] and summary["timings_s"]["total"] > 0
    assert not list(index_dir.parent.glob(".index.*"))  # no temporary directory left behind


def test_the_run_is_logged_to_mlflow(inputs, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    # a store of its own: the session's index may have been built while another test pointed MLflow
    # elsewhere, and this test asks what one run of the stage logs
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with tracking_uri_restored():
        assert run_index(inputs, tmp_path / "index", index_params(tmp_path / "params.yaml")) == 0
    client = MlflowClient(tracking_uri=uri)
    runs = [
        r
        for exp in client.search_experiments()
        for r in client.search_runs([exp.experiment_id], "tags.`lpr.stage` = 'index_gallery'")
        if r.info.status == "FINISHED" and r.data.params.get("index_gallery.index.kind") == "flat"
    ]
    assert runs
    for run in runs:
        assert run.data.params["index_gallery.embed.batch_size"] == "8"
        assert run.data.metrics["index_gallery/num_embedded"] > 0
        assert run.data.metrics["index_gallery/time_total_s"] > 0
        assert "index_gallery/num_missing_images" in run.data.metrics
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == [SUMMARY_FILE]


def test_an_image_that_failed_to_download_is_left_out_and_recorded(inputs, tmp_path, capsys):
    galleries = gallery_table(inputs.prepared)
    live_id = next(iter(galleries))
    lost = galleries[live_id][1]
    download = derived_download(
        inputs.download, tmp_path / "download", {"test_images": lambda t: fail_rows(t, "image_id", {lost})}
    )
    out = tmp_path / "index"
    assert run_index(inputs, out, index_params(tmp_path / "p.yaml"), download=download) == 0
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["missing_image_ids"] == [lost] and summary["num_missing_images"] == 1
    meta = json.loads((out / live_id / "meta.json").read_text())
    assert meta["missing_image_ids"] == [lost]
    kept = (out / live_id / "image_ids.txt").read_text().split()
    assert kept == [i for i in galleries[live_id] if i != lost]
    assert lost not in pq.read_table(out / IMAGES_FILE).column("image_id").to_pylist()
    assert lost in capsys.readouterr().out

    # skip_missing false: a clear error, and the earlier output is left as it was
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert (
        run_index(inputs, out, index_params(tmp_path / "p2.yaml", skip_missing=False), download=download) == 1
    )
    err = capsys.readouterr().err
    assert lost in err and "skip_missing" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_an_unsafe_live_id_never_becomes_a_path(inputs, tmp_path, capsys):
    prepared = tmp_path / "prepared"
    shutil.copytree(inputs.prepared, prepared)
    table = pq.read_table(prepared / "test_gallery.parquet")
    evil = "../../escaped"
    live = table.column("live_id").to_pylist()
    live[3] = evil
    table = table.set_column(0, "live_id", pa.array(live, pa.string()))
    pq.write_table(table, prepared / "test_gallery.parquet")
    out = tmp_path / "deep" / "er" / "index"
    assert run_index(inputs, out, index_params(tmp_path / "p.yaml"), prepared=prepared) == 1
    err = capsys.readouterr().err
    assert "row 3" in err and "escaped" in err
    assert not out.exists()
    assert not any("escaped" in p.name for p in tmp_path.rglob("*"))


def test_a_typo_in_the_params_section_is_named(inputs, tmp_path, capsys):
    params = index_params(tmp_path / "p.yaml", index={"kind": "flat", "nprobes": 3})
    assert run_index(inputs, tmp_path / "index", params) == 1
    assert "nprobes" in capsys.readouterr().err
    assert not (tmp_path / "index").exists()


def test_the_repo_params_section_parses():
    from lpr_core.config import load_section

    params = load_section(IndexGalleryParams, "index_gallery", REPO / "params.yaml")
    assert params.index.kind in ("flat", "ivf", "hnsw")


def test_an_approximate_index_kind_is_built_from_the_params(inputs, index_dir, tmp_path):
    from lpr_core.index import load_gallery_indexes

    out = tmp_path / "index"
    assert run_index(inputs, out, index_params(tmp_path / "p.yaml", index={"kind": "hnsw", "hnsw_m": 8})) == 0
    hnsw, flat = load_gallery_indexes(out, device="cpu"), load_gallery_indexes(index_dir, device="cpu")
    assert {g.spec.kind for g in hnsw.values()} == {"hnsw"}
    for live_id, g in hnsw.items():
        assert g.image_ids == flat[live_id].image_ids
    np.testing.assert_array_equal(np.load(out / EMBEDDINGS_FILE), np.load(index_dir / EMBEDDINGS_FILE))

"""Check tables: the inputs turned into one pandas DataFrame per entity, ready for expectations.

Relational checks (a ground-truth image in its livestream's gallery, a box against its frame, a
query's decodable frames) become derived boolean or count columns, computed with
vectorised joins (integer keys, ``pd.Index.get_indexer``, ``np.isin``), so that each expectation
is a plain built-in one on a column. Row-level checks of half a million rows that a built-in
expectation would run in Python row by row (the id grammar of the manifests) are computed here
once, in Arrow, as boolean columns. Every table has an ``id`` column naming the row's entity
(a clip id, frame id, image id, live id, category id or input name): it is the id reported when
a row fails. Small tables also carry a ``detail`` column, shown next to a failing id.

A boolean column is ``pd.BooleanDtype``: a missing value (``<NA>``) means "cannot be checked"
(for instance a box of a frame that did not download) and is skipped by the expectations.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lpr_core.data.boxes import clip_to_frame, keep_ratio_size
from lpr_core.formats.readers import SCHEMAS
from lpr_core.formats.schema import URL_LISTS
from lpr_core.validation.inputs import MANIFESTS, ValidationInputs
from lpr_core.validation.params import ValidateParams
from lpr_core.validation.patterns import FRAME_PATTERN, UUID_PATTERN

__all__ = [
    "TABLE_NAMES",
    "BOX_SPLITS",
    "schema_problems",
    "keep_ratio_ok",
    "normalize_manifest",
    "build_tables",
]

#: The check tables, in the order they are validated.
TABLE_NAMES: tuple[str, ...] = (
    "files",
    "manifests",
    "test_livestreams",
    "test_queries",
    "test_gallery",
    "boxes",
    "box_edges",
    "train_clips",
    "categories",
)

#: The splits of the annotated boxes: ``train`` (training_videoinfo), ``test`` (test_frameid2gtbox).
BOX_SPLITS: tuple[str, ...] = ("train", "test")

_URL_LIST_OF = {v: k for k, v in URL_LISTS.items()}  # (split, kind) -> url list kind


def _bool(values, mask=None) -> pd.arrays.BooleanArray:
    """A nullable boolean array; ``mask`` marks the missing (uncheckable) values."""
    values = np.asarray(values, dtype=bool)
    if mask is None:
        mask = np.zeros(len(values), dtype=bool)
    return pd.arrays.BooleanArray(values, np.asarray(mask, dtype=bool))


_MAX_DETAILS = 1000  # rows per table that get a ``detail`` text (the ones that fail)


def _details(n: int, rows: np.ndarray, text) -> np.ndarray:
    """A ``detail`` column: ``text(i)`` for the first failing ``rows``, "" elsewhere."""
    out = np.full(n, "", dtype=object)
    for i in np.asarray(rows)[:_MAX_DETAILS]:
        out[i] = text(int(i))
    return out


def _np(arr: pa.Array | pa.ChunkedArray, dtype=None) -> np.ndarray:
    out = arr.to_numpy(zero_copy_only=False) if len(arr) else np.empty(0, dtype=dtype or object)
    return out.astype(dtype) if dtype is not None else out


def schema_problems(schema: pa.Schema, expected: pa.Schema) -> list[str]:
    """What differs between ``schema`` and ``expected``: missing columns and wrong types.

    Extra columns are allowed (a newer writer may add some); the order is not checked.
    """
    problems = []
    for f in expected:
        i = schema.get_field_index(f.name)
        if i < 0:
            problems.append(f"missing column {f.name}")
        elif not schema.field(i).type.equals(f.type):
            problems.append(f"column {f.name} is {schema.field(i).type}, expected {f.type}")
    return problems


def _positive(*arrays: np.ndarray) -> np.ndarray:
    ok = np.ones(len(arrays[0]), dtype=bool)
    for a in arrays:
        ok &= np.asarray(a, dtype=np.float64) > 0  # False for NaN too
    return ok


def keep_ratio_ok(
    width: np.ndarray,
    height: np.ndarray,
    original_width: np.ndarray,
    original_height: np.ndarray,
    image_size: int,
    *,
    resize_only_if_bigger: bool = True,
    tolerance: float = 1.0,
) -> np.ndarray:
    """Whether downloaded sizes are what img2dataset's ``keep_ratio`` resize gives.

    The expected size is :func:`lpr_core.data.boxes.keep_ratio_size`: the smaller side becomes
    ``image_size`` and the other keeps the aspect ratio; with ``resize_only_if_bigger`` an
    original whose smaller side is at most ``image_size`` is kept as it is. A missing (NaN) or
    non-positive size is not ok.

    Args:
        width, height: downloaded sizes, shape ``(n,)``.
        original_width, original_height: original sizes, shape ``(n,)``.
        image_size: img2dataset's ``image_size``.
        resize_only_if_bigger: img2dataset's option of that name.
        tolerance: allowed difference per side in pixels.

    Returns:
        A boolean array of shape ``(n,)``.
    """
    w, h = np.asarray(width, dtype=np.float64), np.asarray(height, dtype=np.float64)
    ow, oh = np.asarray(original_width, dtype=np.float64), np.asarray(original_height, dtype=np.float64)
    ok = _positive(w, h, ow, oh)
    ew, eh = keep_ratio_size(ow[ok], oh[ok], image_size, resize_only_if_bigger)
    ok[ok] = (np.abs(w[ok] - ew) <= tolerance) & (np.abs(h[ok] - eh) <= tolerance)
    return ok


# ------------------------------------------------------------------------------------- manifests

_MANIFEST_NUMERIC = ("width", "height", "original_width", "original_height")


def normalize_manifest(table: pa.Table | None, split: str, kind: str) -> pd.DataFrame | None:
    """The columns of a manifest the checks need, as a DataFrame (None when unusable).

    Columns: ``id``, ``id_ok`` (the id follows the frame or image id grammar; NA for a null
    id), ``status``, the four sizes (float, NaN when null or absent), ``sha256`` (images),
    ``clip_id`` and ``frame_index`` (frames). A manifest without its id or ``status``
    column is unusable (its schema check fails).
    """
    id_col = "frame_id" if kind == "frames" else "image_id"
    if table is None or id_col not in table.column_names or "status" not in table.column_names:
        return None
    n = table.num_rows
    ids = pc.cast(table[id_col], pa.string())
    # the id grammar, one RE2 pass here (NA: no id to check)
    id_ok = pc.match_substring_regex(ids, FRAME_PATTERN if kind == "frames" else UUID_PATTERN)
    cols: dict[str, object] = {
        "id": _np(ids),
        "id_ok": _bool(_np(id_ok.fill_null(False), bool), _np(id_ok.is_null(), bool)),
        "status": _np(pc.cast(table["status"], pa.string())),
    }
    for c in _MANIFEST_NUMERIC:
        if c in table.column_names and pa.types.is_integer(table.schema.field(c).type):
            cols[c] = _np(pc.cast(table[c], pa.float64()).fill_null(np.nan), np.float64)
        else:
            cols[c] = np.full(n, np.nan)
    if kind == "images":
        cols["sha256"] = _np(pc.cast(table["sha256"], pa.string())) if "sha256" in table.column_names else None
    else:
        if "clip_id" in table.column_names and "frame_index" in table.column_names:
            cols["clip_id"] = _np(pc.cast(table["clip_id"], pa.string()))
            cols["frame_index"] = _np(pc.cast(table["frame_index"], pa.int64()).fill_null(-1), np.int64)
        else:  # derive them from the frame id
            fid = pc.cast(table[id_col], pa.string())
            cols["clip_id"] = _np(pc.utf8_slice_codeunits(fid, 0, -5))
            cols["frame_index"] = _np(
                pc.cast(pc.utf8_slice_codeunits(fid, -4), pa.int64(), safe=False).fill_null(-1), np.int64
            )
    df = pd.DataFrame(cols)
    df["split"], df["kind"] = split, kind
    return df


def _frame_keys(clip_codes: np.ndarray, frame_index: np.ndarray) -> np.ndarray:
    return clip_codes.astype(np.int64) * 65536 + np.asarray(frame_index, dtype=np.int64)


def _lookup(keys_table: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Row position in ``keys_table`` of every key (first occurrence), -1 where absent."""
    uniq = pd.Index(keys_table)
    if not uniq.is_unique:
        first = ~pd.Index(keys_table).duplicated(keep="first")
        pos = np.flatnonzero(first)
        return np.where((r := pd.Index(keys_table[first]).get_indexer(keys)) >= 0, pos[r], -1)
    return uniq.get_indexer(keys)


# ---------------------------------------------------------------------------------------- tables


def _files_table(inputs: ValidationInputs, manifests: dict, params: ValidateParams) -> pd.DataFrame:
    rows = []
    for name, info in inputs.sources.items():
        row = {
            "id": name,
            "present": info.present,
            "required": name in params.required,
            "rows": info.rows_read - info.rows_rejected,
            "rows_rejected": info.rows_rejected,
            "reject_fraction": np.nan,
            "schema_ok": pd.NA,
            "success_rate": np.nan,
            "detail": info.error,
        }
        if name.startswith("manifest/"):
            split, kind = name.split("/", 1)[1].split("_", 1)
            table = inputs.manifests[(split, kind)]
            if table is not None:
                problems = schema_problems(table.schema, MANIFESTS[(split, kind)])
                row["schema_ok"] = not problems
                rate, detail = _success_rate(inputs, manifests.get((split, kind)), split, kind)
                row["success_rate"] = rate
                row["detail"] = "; ".join(problems + [detail])
        elif info.present:
            row["schema_ok"] = inputs.annotations[name].schema.equals(SCHEMAS[name])
            row["reject_fraction"] = info.rows_rejected / info.rows_read if info.rows_read else 0.0
            if info.rows_rejected:
                examples = " | ".join(f"{f}:{line}: {why}" for f, line, why in info.rejects[:3])
                row["detail"] = f"{info.rows_rejected} of {info.rows_read} rows rejected, e.g. {examples}"
        rows.append(row)
    df = pd.DataFrame(rows)
    df["present_or_optional"] = df["present"] | ~df["required"]
    df["schema_ok"] = df["schema_ok"].astype("boolean")
    return df


def _success_rate(inputs: ValidationInputs, m: pd.DataFrame | None, split: str, kind: str) -> tuple[float, str]:
    """Share of the listed URLs (or of the manifest rows) that downloaded."""
    if m is None:
        return np.nan, "manifest unusable"
    ok_ids = pd.unique(m.loc[m["status"].to_numpy() == "success", "id"])
    listed = inputs.annotations.get(_URL_LIST_OF[(split, kind)])
    if listed is not None and listed.num_rows and inputs.sources[_URL_LIST_OF[(split, kind)]].present:
        listed_ids = _frame_ids(listed["clip_id"], listed["frame_index"]) if kind == "frames" else listed["image_id"]
        listed_np = pd.unique(_np(listed_ids))
        n_ok = int((pd.Index(listed_np).get_indexer(ok_ids) >= 0).sum())  # hashed: np.isin on objects is O(n*m)
        n = len(listed_np)
        what = "listed URLs"
    else:
        n_ok, n = len(ok_ids), int(m["id"].nunique())
        what = "manifest rows"
    rate = n_ok / n if n else 1.0
    return rate, f"{n_ok} of {n} {what} downloaded ({rate:.2%})"


def _attach_decoded(m: pd.DataFrame, decoded: pd.DataFrame) -> None:
    """Add the ``decoded`` column (NA where the file was not in the decode sample)."""
    values = np.zeros(len(m), dtype=bool)
    mask = np.ones(len(m), dtype=bool)
    if len(decoded) and len(m):
        split, kind = m["split"].iat[0], m["kind"].iat[0]
        d = decoded.loc[(decoded["split"] == split) & (decoded["kind"] == kind)]
        pos = _lookup(d["id"].to_numpy(dtype=object), m["id"].to_numpy(dtype=object))
        hit = pos >= 0
        values[hit] = d["decoded"].to_numpy(dtype=bool)[pos[hit]]
        mask[hit] = False
    m["decoded"] = _bool(values, mask)


def _manifests_table(manifests: dict, params: ValidateParams) -> pd.DataFrame:
    parts = [m for m in manifests.values() if m is not None]
    if not parts:
        return pd.DataFrame(
            {
                "id": pd.Series(dtype=object),
                "split": pd.Series(dtype=object),
                "kind": pd.Series(dtype=object),
                "status": pd.Series(dtype=object),
                "frame_id_ok": pd.Series(dtype="boolean"),
                "image_id_ok": pd.Series(dtype="boolean"),
                "size_ok": pd.Series(dtype="boolean"),
                "sha256": pd.Series(dtype=object),
                "sha_unique": pd.Series(dtype="boolean"),
                "decoded": pd.Series(dtype="boolean"),
                "detail": pd.Series(dtype=object),
            }
        )
    cols = ["id", "id_ok", "split", "kind", "status", *_MANIFEST_NUMERIC, "sha256", "decoded"]
    df = pd.concat([p.reindex(columns=cols) for p in parts], ignore_index=True)
    success = df["status"].to_numpy() == "success"
    is_frame = df["kind"].to_numpy() == "frames"
    id_unknown = df["id_ok"].isna().to_numpy()
    id_ok = df["id_ok"].fillna(False).to_numpy(dtype=bool)
    size_ok = keep_ratio_ok(
        df["width"].to_numpy(),
        df["height"].to_numpy(),
        df["original_width"].to_numpy(),
        df["original_height"].to_numpy(),
        params.image_size,
        resize_only_if_bigger=params.resize_only_if_bigger,
        tolerance=params.size_tolerance_px,
    )
    out = pd.DataFrame({"id": df["id"], "split": df["split"], "kind": df["kind"], "status": df["status"]})
    # the id grammar per kind (NA on the other kind's rows, and where the id is missing)
    out["frame_id_ok"] = _bool(id_ok, id_unknown | ~is_frame)
    out["image_id_ok"] = _bool(id_ok, id_unknown | is_frame)
    out["size_ok"] = _bool(size_ok, ~success)
    w, h, ow, oh = (df[c].to_numpy() for c in _MANIFEST_NUMERIC)
    out["detail"] = _details(
        len(df),
        np.flatnonzero(success & ~size_ok),
        lambda i: f"downloaded {w[i]:.0f}x{h[i]:.0f} from an original {ow[i]:.0f}x{oh[i]:.0f} "
        f"(image_size {params.image_size}, keep_ratio)",
    )
    # duplicate sha256 across different image ids (re-uploads, or an image in two splits)
    is_image = (df["kind"].to_numpy() == "images") & success
    sha = df["sha256"].where(is_image)
    out["sha256"] = sha
    has_sha = is_image & sha.notna().to_numpy()
    ids_per_sha = df.loc[has_sha].groupby("sha256")["id"].nunique()
    shared = sha.map(ids_per_sha).to_numpy(dtype=np.float64, na_value=np.nan) > 1
    out["sha_unique"] = _bool(~shared, ~has_sha)
    out["decoded"] = df["decoded"].astype("boolean")
    for c in ("split", "kind", "status"):
        out[c] = out[c].astype("category")
    return out


def _queries_and_lives(inputs: ValidationInputs, frames: pd.DataFrame | None):
    gt = inputs.annotations["test_gt_images"]
    gallery = inputs.annotations["test_gallery"]
    clip_ids = _np(gt["clip_id"])
    live_ids = _np(gt["live_id"])
    n = len(clip_ids)
    n_gt = _np(pc.list_value_length(gt["gt_image_ids"]).fill_null(0), np.int64) if n else np.zeros(0, np.int64)

    # every ground-truth image in the gallery of the query's own livestream
    pair_key = pd.Index(
        (_np(gallery["live_id"]).astype(object) + "/" + _np(gallery["image_id"]).astype(object))
        if gallery.num_rows
        else []
    )
    if n:
        parent = _np(pc.list_parent_indices(gt["gt_image_ids"]), np.int64)
        images = _np(pc.list_flatten(gt["gt_image_ids"])).astype(object)
        found = pair_key.get_indexer(live_ids[parent].astype(object) + "/" + images) >= 0
        missing = np.bincount(parent[~found], minlength=n)
        absent: dict[int, list[str]] = {}
        for i in np.flatnonzero(~found)[: 10 * _MAX_DETAILS]:
            absent.setdefault(int(parent[i]), []).append(str(images[i]))
    else:
        missing = np.zeros(0, np.int64)
        absent = {}

    # decodable frames per query: downloaded (status success), not failing the decode
    n_decodable = np.zeros(n, dtype=np.int64)
    if frames is not None and len(frames) and n:
        good = (frames["status"].to_numpy() == "success") & frames["decoded"].fillna(True).to_numpy(dtype=bool)
        ok = frames.loc[good, ["id", "clip_id"]].drop_duplicates("id")
        n_decodable = ok["clip_id"].value_counts().reindex(clip_ids, fill_value=0).to_numpy(dtype=np.int64)

    queries = pd.DataFrame(
        {
            "id": clip_ids.astype(object),
            "live_id": live_ids.astype(object),
            "n_gt_images": n_gt,
            "gt_in_gallery": _bool(missing == 0),
            "n_decodable_frames": n_decodable,
            "detail": _details(
                n,
                np.flatnonzero(missing > 0),
                lambda i: f"not in the gallery of {live_ids[i]}: {' '.join(absent.get(i, []))}",
            ),
        }
    )

    gal_counts = pd.Series(_np(gallery["live_id"]).astype(object)).value_counts() if gallery.num_rows else pd.Series()
    q_counts = pd.Series(live_ids.astype(object)).value_counts()
    lives = pd.DataFrame(
        {
            "id": q_counts.index.to_numpy(dtype=object),
            "n_queries": q_counts.to_numpy(dtype=np.int64),
            "n_gallery_images": gal_counts.reindex(q_counts.index, fill_value=0).to_numpy(dtype=np.int64),
        }
    )
    return queries, lives


def _gallery_table(inputs: ValidationInputs, images: pd.DataFrame | None) -> pd.DataFrame:
    gallery = inputs.annotations["test_gallery"]
    image_ids = _np(gallery["image_id"]).astype(object)
    if images is not None and len(images):
        ok = pd.Index(pd.unique(images.loc[images["status"].to_numpy() == "success", "id"]))
        downloaded = ok.get_indexer(image_ids) >= 0
    else:
        downloaded = np.zeros(len(image_ids), dtype=bool)
    return pd.DataFrame(
        {"id": image_ids, "live_id": _np(gallery["live_id"]).astype(object), "downloaded": _bool(downloaded)}
    )


def _train_clips_table(inputs: ValidationInputs) -> pd.DataFrame:
    vi = inputs.annotations["videoinfo"]
    n = vi.num_rows
    match = np.ones(n, dtype=bool)
    if n:
        fi, bfi, boxes = vi["frame_indices"], vi["box_frame_indices"], vi["boxes"]
        n_bfi = _np(pc.list_value_length(bfi).fill_null(0), np.int64)
        n_box = _np(pc.list_value_length(boxes).fill_null(0), np.int64)
        match &= n_bfi == n_box
        f_keys = _np(pc.list_parent_indices(fi), np.int64) * 65536 + _np(pc.list_flatten(fi), np.int64)
        b_parent = _np(pc.list_parent_indices(bfi), np.int64)
        b_keys = b_parent * 65536 + _np(pc.list_flatten(bfi), np.int64)
        unlisted = ~np.isin(b_keys, f_keys)
        match &= np.bincount(b_parent[unlisted], minlength=n) == 0
    return pd.DataFrame(
        {
            "id": _np(vi["clip_id"]).astype(object),
            "image_id": _np(vi["image_id"]).astype(object),
            "scale_type": _np(vi["scale_type"], np.int64),
            "duration_type": _np(vi["duration_type"], np.int64),
            "number_type": _np(vi["number_type"], np.int64),
            "boxes_match_frames": _bool(match),
        }
    )


def _categories_table(inputs: ValidationInputs) -> pd.DataFrame:
    vi = inputs.annotations["videoinfo"]
    pairs = pd.DataFrame(
        {"category_id": _np(vi["category_id"], np.int64), "name": _np(vi["category_name"]).astype(object)}
    ).drop_duplicates()
    if not len(pairs):
        return pd.DataFrame(
            {
                "id": pd.Series(dtype=object),
                "n_names": pd.Series(dtype=np.int64),
                "n_ids_sharing_name": pd.Series(dtype=np.int64),
                "detail": pd.Series(dtype=object),
            }
        )
    ids_per_name = pairs.groupby("name")["category_id"].nunique()
    pairs["ids_of_name"] = pairs["name"].map(ids_per_name)
    g = pairs.groupby("category_id")
    out = pd.DataFrame(
        {
            "n_names": g["name"].nunique(),
            "n_ids_sharing_name": g["ids_of_name"].max(),
            "detail": g["name"].agg(lambda s: "names: " + " | ".join(sorted(map(str, s))[:5])),
        }
    )
    out.insert(0, "id", out.index.astype(str))
    return out.reset_index(drop=True)


def _index_in(values: np.ndarray, index: pd.Index) -> np.ndarray:
    """Position of each value in ``index`` (-1 if absent), hashing each distinct value once."""
    codes, uniques = pd.factorize(values, sort=False)
    pos = index.get_indexer(uniques)
    return np.where(codes >= 0, pos[codes], -1)


def _frame_ids(clip_ids: pa.ChunkedArray | pa.Array, frame_index: pa.ChunkedArray | pa.Array) -> pa.Array:
    """``<clip_id>-NNNN`` for every row (Arrow kernels, no Python loop)."""
    padded = pc.utf8_lpad(pc.cast(frame_index, pa.string()), 4, "0")
    return pc.binary_join_element_wise(clip_ids, padded, "-")


def _boxes_table(inputs: ValidationInputs, manifests: dict, params: ValidateParams) -> pd.DataFrame:
    # (split, frame rows' clip ids, frame indices, frame ids, box -> frame row, box coords, annotated)
    parts = []
    tb = inputs.annotations["test_frame_boxes"]
    gt_clips = pd.Index(_np(inputs.annotations["test_gt_images"]["clip_id"]).astype(object))
    if tb.num_rows:
        clip = _np(tb["clip_id"]).astype(object)
        parent = _np(pc.list_parent_indices(tb["boxes"]), np.int64)
        coords = _np(pc.list_flatten(pc.list_flatten(tb["boxes"])), np.float64).reshape(-1, 4)
        frame_id = _np(_frame_ids(tb["clip_id"], tb["frame_index"])).astype(object)
        annotated = _index_in(clip, gt_clips) >= 0
        parts.append(("test", clip, _np(tb["frame_index"], np.int64), frame_id, parent, coords, annotated))
    vi = inputs.annotations["videoinfo"]
    if vi.num_rows:
        same = pc.equal(pc.list_value_length(vi["box_frame_indices"]), pc.list_value_length(vi["boxes"]))
        vi = vi.filter(pc.fill_null(same, False))  # the others fail train_clips.boxes_match_frames
        # box i of a clip is on frame box_frame_indices[i]: one row per box
        row_clip = pc.take(vi["clip_id"], pc.list_parent_indices(vi["box_frame_indices"]))
        fidx = pc.list_flatten(vi["box_frame_indices"])
        coords = _np(pc.list_flatten(pc.list_flatten(vi["boxes"])), np.float64).reshape(-1, 4)
        frame_id = _np(_frame_ids(row_clip, fidx)).astype(object)
        n_rows = len(frame_id)
        parts.append(("train", _np(row_clip).astype(object), _np(fidx, np.int64), frame_id,
                      np.arange(n_rows), coords, np.ones(n_rows, dtype=bool)))

    frames_out = []
    for split, clip, fidx, frame_id, parent, coords, annotated in parts:
        n = len(parent)
        well_formed = (coords[:, 0] < coords[:, 2]) & (coords[:, 1] < coords[:, 3]) & np.isfinite(coords).all(1)
        # the original size of each box's frame (NaN: the frame did not download, the box is not checked)
        width, height = np.full(n, np.nan), np.full(n, np.nan)
        m = manifests.get((split, "frames"))
        if m is not None and len(m):
            mf = m.loc[m["status"].to_numpy() == "success"]
            m_codes, m_clips = pd.factorize(mf["clip_id"].to_numpy(dtype=object), sort=False)
            clip_codes = _index_in(clip, pd.Index(m_clips))
            row_pos = _lookup(_frame_keys(m_codes, mf["frame_index"].to_numpy()), _frame_keys(clip_codes, fidx))
            row_pos[clip_codes < 0] = -1  # a clip the manifest does not know
            pos = row_pos[parent]
            hit = pos >= 0
            width[hit] = mf["original_width"].to_numpy()[pos[hit]]
            height[hit] = mf["original_height"].to_numpy()[pos[hit]]
        clip_ = clip_to_frame(coords, width, height)  # what prepare does to the same boxes
        unchecked = ~clip_.known | ~well_formed
        outside = np.where(unchecked, np.nan, clip_.outside_fraction)
        bad = ~well_formed | (clip_.known & (~clip_.keeps_area | (outside > params.max_box_outside_fraction)))
        detail = _details(
            n,
            np.flatnonzero(bad),
            lambda i, c=coords, w=width, h=height, o=outside: (
                f"box {c[i].round(1).tolist()} in an original {w[i]:.0f}x{h[i]:.0f} frame"
                + (f": {o[i]:.0%} of it outside" if np.isfinite(o[i]) else "")
            ),
        )
        frames_out.append(
            pd.DataFrame(
                {
                    "id": frame_id[parent],
                    "split": split,
                    "x1": coords[:, 0],
                    "y1": coords[:, 1],
                    "x2": coords[:, 2],
                    "y2": coords[:, 3],
                    "well_formed": _bool(well_formed),
                    "past_edge": _bool(clip_.past_edge, unchecked),
                    "keeps_area": _bool(clip_.keeps_area, unchecked),
                    "outside_fraction": outside,
                    "clip_annotated": _bool(annotated[parent]),
                    "detail": detail,
                }
            )
        )
    if not frames_out:
        return pd.DataFrame(
            {
                "id": pd.Series(dtype=object),
                "split": pd.Series(dtype="category"),
                **{c: pd.Series(dtype=np.float64) for c in ("x1", "y1", "x2", "y2")},
                **{c: pd.Series(dtype="boolean") for c in ("well_formed", "past_edge", "keeps_area")},
                "outside_fraction": pd.Series(dtype=np.float64),
                "clip_annotated": pd.Series(dtype="boolean"),
                "detail": pd.Series(dtype=object),
            }
        )
    out = pd.concat(frames_out, ignore_index=True)
    out["split"] = out["split"].astype("category")
    return out


def _box_edges_table(boxes: pd.DataFrame, params: ValidateParams) -> pd.DataFrame:
    """One row per split (:data:`BOX_SPLITS`, always both): boxes, how many could be checked, ran
    past the frame edge, kept no area, lay mostly outside, and the share past the edge."""
    rows = []
    for split in BOX_SPLITS:
        b = boxes.loc[(boxes["split"] == split).to_numpy()]
        checked = int(b["past_edge"].notna().sum())
        past = int(b["past_edge"].fillna(False).sum())
        no_area = int((b["keeps_area"] == False).sum())  # noqa: E712 (NA-aware)
        mostly = int((b["outside_fraction"] > params.max_box_outside_fraction).sum())
        share = past / checked if checked else 0.0
        rows.append({
            "id": split, "boxes": len(b), "checked": checked, "past_edge": past, "no_area_left": no_area,
            "mostly_outside": mostly, "past_edge_fraction": share,
            "detail": f"{past} of {checked} checked boxes run past the frame edge ({share:.1%}); "
                      f"{no_area} keep no area, {mostly} lie mostly outside; {len(b) - checked} not checked",
        })
    return pd.DataFrame(rows)


def build_tables(
    inputs: ValidationInputs, decoded: pd.DataFrame, params: ValidateParams
) -> dict[str, pd.DataFrame]:
    """Every check table (see :data:`TABLE_NAMES`), keyed by name.

    Args:
        inputs: annotation tables, manifests and what was found (:func:`load_inputs`).
        decoded: the decode results of the image sample (:func:`lpr_core.validation.images.decode_sample`).
        params: thresholds (sizes and tolerances are used here, the rest by the suites).
    """
    manifests = {key: normalize_manifest(t, *key) for key, t in inputs.manifests.items()}
    for m in manifests.values():
        if m is not None:
            _attach_decoded(m, decoded)
    mtable = _manifests_table(manifests, params)
    queries, lives = _queries_and_lives(inputs, manifests.get(("test", "frames")))
    boxes = _boxes_table(inputs, manifests, params)
    tables = {
        "files": _files_table(inputs, manifests, params),
        "manifests": mtable,
        "test_livestreams": lives,
        "test_queries": queries,
        "test_gallery": _gallery_table(inputs, manifests.get(("test", "images"))),
        "boxes": boxes,
        "box_edges": _box_edges_table(boxes, params),
        "train_clips": _train_clips_table(inputs),
        "categories": _categories_table(inputs),
    }
    assert tuple(tables) == TABLE_NAMES
    return {name: _compact(df) for name, df in tables.items()}


def _compact(df: pd.DataFrame) -> pd.DataFrame:
    """String columns as categoricals: great-expectations hashes every batch, and hashing (or
    copying) a categorical costs a fraction of an object column of the same strings."""
    for c in df.columns:
        if df[c].dtype == object:
            # categories in order of appearance: sorting half a million strings costs seconds
            codes, uniques = pd.factorize(df[c], sort=False)
            df[c] = pd.Categorical.from_codes(codes, categories=uniques)
    return df

"""The expectation suites: one per check table of :mod:`lpr_core.validation.tables`.

Only built-in great-expectations expectations are used. Thresholds are suite parameters
(``{"$PARAMETER": name}``), given at run time from the ``validate`` section of ``params.yaml``
(:meth:`ValidateParams.expectation_parameters`), so the committed suites never hold a number
that ``params.yaml`` owns. Every expectation has a ``meta.check`` (a short stable name used in
the stage's summary and failing ids) and a description (shown in Data Docs).
"""

from __future__ import annotations

from typing import Any

from lpr_core.formats.schema import DURATION_TYPES, NUMBER_TYPES, SCALE_TYPES
from lpr_core.validation.patterns import CLIP_PATTERN, FRAME_PATTERN, SHA256_PATTERN, UUID_PATTERN
from lpr_core.validation.tables import BOX_SPLITS, TABLE_NAMES

__all__ = ["UUID_PATTERN", "CLIP_PATTERN", "FRAME_PATTERN", "SHA256_PATTERN", "suite_names", "build_suites"]


_SPLIT_BOXES = {"train": "training (training_videoinfo)", "test": "test (test_frameid2gtbox)"}


def _p(name: str) -> dict[str, str]:
    return {"$PARAMETER": name}


def suite_names() -> tuple[str, ...]:
    """Suite names, one per check table (the suite is named like its table)."""
    return TABLE_NAMES


def _specs() -> dict[str, list[tuple[str, str, dict[str, Any], str]]]:
    """``table -> [(check, expectation class name, kwargs, description)]``."""
    return {
        "files": [
            ("present", "ExpectColumnValuesToBeInSet", {"column": "present_or_optional", "value_set": [True]},
             "Every required input (LPR4M file kind, download manifest) is present and readable."),
            ("schema", "ExpectColumnValuesToBeInSet", {"column": "schema_ok", "value_set": [True]},
             "Every input table has its schema: the expected columns with the expected Arrow types."),
            ("reader_rejects", "ExpectColumnValuesToBeBetween",
             {"column": "reject_fraction", "min_value": 0.0, "max_value": _p("max_reject_fraction")},
             "Per LPR4M file kind, the lenient readers rejected at most max_reject_fraction of the rows "
             "(malformed rows, ids off the grammar, frame and box lists of different lengths, type codes "
             "outside their sets, duplicate keys)."),
            ("download_success_rate", "ExpectColumnValuesToBeBetween",
             {"column": "success_rate", "min_value": _p("min_download_success_rate"), "max_value": 1.0},
             "Per split and kind, at least min_download_success_rate of the listed URLs downloaded."),
        ],
        "manifests": [
            ("status", "ExpectColumnValuesToBeInSet", {"column": "status", "value_set": ["success", "failed"]},
             "A manifest row's status is success or failed."),
            ("unique", "ExpectCompoundColumnsToBeUnique", {"column_list": ["split", "kind", "id"]},
             "One row per id in each manifest."),
            # half a million ids: matched once in Arrow when the table is built (a regex
            # expectation runs Python's re row by row); the failing rows are reported by id alike
            ("frame_id", "ExpectColumnValuesToBeInSet", {"column": "frame_id_ok", "value_set": [True]},
             f"Frame manifest ids follow the frame id grammar ({FRAME_PATTERN})."),
            ("image_id", "ExpectColumnValuesToBeInSet", {"column": "image_id_ok", "value_set": [True]},
             f"Image manifest ids follow the image id grammar, a UUID ({UUID_PATTERN})."),
            ("keep_ratio_size", "ExpectColumnValuesToBeInSet", {"column": "size_ok", "value_set": [True]},
             "Downloaded sizes follow img2dataset keep_ratio: the smaller side is image_size unless the "
             "original was smaller, the aspect ratio is kept."),
            ("decodes", "ExpectColumnValuesToBeInSet",
             {"column": "decoded", "value_set": [True], "mostly": _p("min_decoded_fraction")},
             "The sampled downloaded files decode (Pillow verify and load)."),
            ("sha256", "ExpectColumnValuesToMatchRegex", {"column": "sha256", "regex": SHA256_PATTERN},
             "A downloaded shop image has a sha256 (64 lowercase hex digits)."),
            ("duplicate_images", "ExpectColumnValuesToBeInSet",
             {"column": "sha_unique", "value_set": [True], "mostly": _p("min_unique_image_fraction")},
             "Shop images with the same sha256 under different image ids (re-uploads, or an image in both "
             "splits) are reported; the stage fails above max_duplicate_image_fraction."),
        ],
        "test_livestreams": [
            ("live_id", "ExpectColumnValuesToMatchRegex", {"column": "id", "regex": UUID_PATTERN},
             "Live ids follow the grammar (a UUID)."),
            ("has_gallery", "ExpectColumnValuesToBeBetween", {"column": "n_gallery_images", "min_value": 1},
             "Every livestream that has queries has a gallery."),
        ],
        "test_queries": [
            ("clip_id", "ExpectColumnValuesToMatchRegex", {"column": "id", "regex": CLIP_PATTERN},
             "Query clip ids follow the clip id grammar."),
            ("unique", "ExpectColumnValuesToBeUnique", {"column": "id"}, "Query clip ids are unique."),
            ("has_gt", "ExpectColumnValuesToBeBetween", {"column": "n_gt_images", "min_value": 1},
             "Every query has at least one ground-truth image."),
            ("gt_in_gallery", "ExpectColumnValuesToBeInSet", {"column": "gt_in_gallery", "value_set": [True]},
             "Every ground-truth image of a query is in the gallery of the query's own livestream."),
            ("decodable_frames", "ExpectColumnValuesToBeBetween",
             {"column": "n_decodable_frames", "min_value": _p("min_decodable_frames")},
             "Every query clip has at least min_decodable_frames downloaded frames that decode."),
        ],
        "test_gallery": [
            ("image_id", "ExpectColumnValuesToMatchRegex", {"column": "id", "regex": UUID_PATTERN},
             "Gallery image ids follow the grammar (a UUID)."),
            ("live_id", "ExpectColumnValuesToMatchRegex", {"column": "live_id", "regex": UUID_PATTERN},
             "Gallery live ids follow the grammar (a UUID)."),
            ("unique", "ExpectCompoundColumnsToBeUnique", {"column_list": ["live_id", "id"]},
             "An image appears once in a livestream's gallery."),
            ("downloaded", "ExpectColumnValuesToBeInSet",
             {"column": "downloaded", "value_set": [True], "mostly": _p("min_gallery_downloaded_fraction")},
             "Every test gallery image downloaded (at least min_gallery_downloaded_fraction of them)."),
        ],
        # no id regex here: a box's frame id is rebuilt from parts the readers already checked.
        # A box past the frame edge is fine (prepare clips it): only what would break training or
        # evaluation fails, and the share of such boxes per split (box_edges)
        "boxes": [
            ("well_formed", "ExpectColumnValuesToBeInSet", {"column": "well_formed", "value_set": [True]},
             "Boxes are well formed: x1 < x2 and y1 < y2, finite."),
            ("area_left", "ExpectColumnValuesToBeInSet", {"column": "keeps_area", "value_set": [True]},
             "Every box keeps some area once clipped to its frame (prepare clips boxes past the frame edge, "
             "in original pixels); boxes of frames that did not download are not checked."),
            ("mostly_inside", "ExpectColumnValuesToBeBetween",
             {"column": "outside_fraction", "min_value": 0.0, "max_value": _p("max_box_outside_fraction")},
             "At most max_box_outside_fraction of a box's area lies outside its frame (a box mostly outside "
             "does not show its product)."),
            ("clip_annotated", "ExpectColumnValuesToBeInSet", {"column": "clip_annotated", "value_set": [True]},
             "Every boxed test frame belongs to a query clip."),
        ],
        # one row per split; the observed value is the split's share of boxes past the frame edge
        "box_edges": [
            (f"{split}_past_edge", "ExpectColumnMaxToBeBetween",
             {"column": "past_edge_fraction", "min_value": 0.0, "max_value": _p("max_clipped_box_fraction"),
              "row_condition": f'id=="{split}"', "condition_parser": "pandas"},
             f"The share of {what} boxes that run past their frame edge (clipped by prepare) is at most "
             "max_clipped_box_fraction; a larger share means boxes in another coordinate system or frame size.")
            for split, what in ((s, _SPLIT_BOXES[s]) for s in BOX_SPLITS)
        ],
        "train_clips": [
            ("clip_id", "ExpectColumnValuesToMatchRegex", {"column": "id", "regex": CLIP_PATTERN},
             "Training clip ids follow the clip id grammar."),
            ("unique", "ExpectColumnValuesToBeUnique", {"column": "id"}, "Training clip ids are unique."),
            ("image_id", "ExpectColumnValuesToMatchRegex", {"column": "image_id", "regex": UUID_PATTERN},
             "Training shop image ids follow the grammar (a UUID)."),
            ("scale_type", "ExpectColumnValuesToBeInSet",
             {"column": "scale_type", "value_set": sorted(SCALE_TYPES)}, "Product scale type codes are in their set."),
            ("duration_type", "ExpectColumnValuesToBeInSet",
             {"column": "duration_type", "value_set": sorted(DURATION_TYPES)},
             "Visible duration type codes are in their set."),
            ("number_type", "ExpectColumnValuesToBeInSet",
             {"column": "number_type", "value_set": sorted(NUMBER_TYPES)},
             "Product number type codes are in their set."),
            ("boxes_match_frames", "ExpectColumnValuesToBeInSet",
             {"column": "boxes_match_frames", "value_set": [True]},
             "Every box list belongs to a listed frame of its clip (frame and box lists agree)."),
        ],
        "categories": [
            ("one_name_per_id", "ExpectColumnValuesToBeInSet", {"column": "n_names", "value_set": [1]},
             "A category id has one category name."),
            ("one_id_per_name", "ExpectColumnValuesToBeInSet", {"column": "n_ids_sharing_name", "value_set": [1]},
             "A category name belongs to one category id."),
        ],
    }


def build_suites() -> dict[str, Any]:
    """The expectation suites (``great_expectations.ExpectationSuite``), keyed by table name."""
    import great_expectations as gx

    specs = _specs()
    assert tuple(specs) == TABLE_NAMES
    suites = {}
    for table, checks in specs.items():
        expectations = [
            getattr(gx.expectations, cls_name)(**kwargs, description=description, meta={"check": check})
            for check, cls_name, kwargs, description in checks
        ]
        # built in one go: ``add_expectation`` on a suite named like a stored one would write to
        # the store of the current Data Context
        suites[table] = gx.ExpectationSuite(name=table, expectations=expectations)
    return suites

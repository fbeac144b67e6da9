"""Evaluation with the LPR protocol: rank-k accuracy, mAP, MRR, slices, intervals and a report.

Pipeline of the ``evaluate`` stage::

    results = score_embeddings(gt, query_ids, query_embeddings, galleries)   # or score_predictions
    summary = summarize(results)                  # {"rank1": ..., "mAP": ..., "MRR": ...}
    ci = metric_cis(results)                      # bootstrap over livestreams
    slices = slice_metrics(results, {"category": [...], ...})
    write_metrics("metrics.json", summary, ci)    # {"test/rank1": ...}
    write_rank_k_curve(...); write_slice_tables(...); write_report(..., render_report(...))

See :mod:`lpr_core.evaluation.ranking` for the tie rule and edge cases. The ``evaluate`` stage's
whole run (embedding the queries, crops, the saved gallery, report, candidate) is
:func:`lpr_core.evaluation.run.evaluate`; training validation scores clips end to end with
:func:`lpr_core.evaluation.retrieval.score_clips`. Those modules import torch and are not
re-exported here.
"""

from lpr_core.evaluation.bootstrap import bootstrap_ci, metric_cis
from lpr_core.evaluation.metrics import DEFAULT_KS, metric_names, per_query_metrics, rank_k_curve, summarize
from lpr_core.evaluation.outputs import (
    dvc_metrics,
    write_json,
    write_metrics,
    write_per_query,
    write_rank_k_curve,
    write_slice_tables,
)
from lpr_core.evaluation.ranking import (
    MISS,
    Gallery,
    QueryResults,
    check_ground_truth,
    galleries_from_embeddings,
    score_embeddings,
    score_predictions,
    top_k_predictions,
    top_k_stable,
)
from lpr_core.evaluation.report import (
    FailureExample,
    RetrievalExample,
    make_examples,
    render_report,
    select_examples,
    write_report,
)
from lpr_core.evaluation.slices import LIVESTREAM, SliceMetrics, slice_metrics
from lpr_core.formats.predictions import (
    EvaluationInputError,
    check_predictions_in_galleries,
    load_predictions,
)
from lpr_core.formats.readers import load_galleries, load_ground_truth

__all__ = [
    "DEFAULT_KS",
    "LIVESTREAM",
    "MISS",
    "EvaluationInputError",
    "FailureExample",
    "Gallery",
    "QueryResults",
    "RetrievalExample",
    "SliceMetrics",
    "bootstrap_ci",
    "check_ground_truth",
    "check_predictions_in_galleries",
    "dvc_metrics",
    "galleries_from_embeddings",
    "load_galleries",
    "load_ground_truth",
    "load_predictions",
    "make_examples",
    "metric_cis",
    "metric_names",
    "per_query_metrics",
    "rank_k_curve",
    "render_report",
    "score_embeddings",
    "score_predictions",
    "select_examples",
    "slice_metrics",
    "summarize",
    "top_k_predictions",
    "top_k_stable",
    "write_json",
    "write_metrics",
    "write_per_query",
    "write_rank_k_curve",
    "write_report",
    "write_slice_tables",
]

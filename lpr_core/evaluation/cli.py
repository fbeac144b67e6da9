"""``lpr evaluate-predictions``: score an official-format prediction file against the ground truth.

Prints rank-1/3/5/10 accuracy, mAP, MRR and the number of queries without a prediction, over all
queries of the ground truth (a query without prediction is a miss), on stdout; notes and errors are
logged (stderr).
"""

from __future__ import annotations

import argparse
import logging

from lpr_core.evaluation.metrics import DEFAULT_KS
from lpr_core.formats.predictions import (
    EvaluationInputError,
    check_predictions_in_galleries,
    load_predictions,
    unsorted_queries,
)
from lpr_core.formats.readers import load_galleries, load_ground_truth

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's options."""
    parser.add_argument("--gt", required=True, metavar="GT_JSON", help="test_videoid_to_gtimage json: {video_id: [image_id, ...]}")
    parser.add_argument("--pred", required=True, metavar="PRED_JSON", help="predictions: {video_id: [[image_id, score], ...]}, best first")
    parser.add_argument("--gallery", metavar="GALLERY_JSON", help="test_liveid_to_gallery json: check that predictions stay in their livestream's gallery")
    parser.add_argument("--ks", type=int, nargs="+", default=list(DEFAULT_KS), metavar="K", help="rank-k cut-offs (default: 1 3 5 10)")
    parser.add_argument("--ci", action="store_true", help="add 95%% intervals (bootstrap over livestreams, 1000 draws, seed 0)")
    parser.add_argument("--metrics-out", metavar="JSON", help="also write the metrics as a DVC metrics JSON (split/metric keys)")
    parser.add_argument("--split", default="test", help="metric name prefix in --metrics-out (default: test)")


def run(args: argparse.Namespace) -> int:
    """Score the prediction file; exit 0, or 2 with a message on bad input."""
    from lpr_core.evaluation.bootstrap import metric_cis
    from lpr_core.evaluation.metrics import metric_names, summarize
    from lpr_core.evaluation.outputs import write_metrics
    from lpr_core.evaluation.ranking import score_predictions
    try:
        metric_names(args.ks)
        gt = load_ground_truth(args.gt)
        predictions = load_predictions(args.pred)
        if args.gallery:
            check_predictions_in_galleries(predictions, load_galleries(args.gallery), source=args.pred)
    except (EvaluationInputError, ValueError) as exc:
        log.error("error: %s", exc)
        return 2
    results = score_predictions(gt, predictions)
    summary = summarize(results, args.ks)
    ci = metric_cis(results, args.ks) if args.ci else {}
    extra = sum(1 for key in predictions if key not in gt)
    unsorted = unsorted_queries(predictions)
    print(f"queries: {summary['num_queries']}")
    for name in metric_names(args.ks):
        label = f"rank-{name[4:]}" if name.startswith("rank") else name
        line = f"{label + ':':<9} {100 * summary[name]:6.2f}%"
        if name in ci:
            low, high = ci[name]
            line += f"  [{100 * low:.2f}, {100 * high:.2f}]"
        print(line)
    print(f"queries without prediction: {summary['num_no_prediction']}")
    print(f"ground-truth images not in their query's list: {summary['num_gt_not_ranked']}")
    if extra:
        log.warning("note: %d prediction key(s) are not in the ground truth and were ignored", extra)
    if unsorted:
        log.warning("note: %d prediction list(s) are not sorted by score (first: %s); the file order was used as "
                    "the ranking", len(unsorted), unsorted[0])
    if args.metrics_out:
        write_metrics(args.metrics_out, summary, ci, split=args.split)
    return 0

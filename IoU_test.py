"""Evaluate a trained run on a labelled set (MVTec layout): metrics, per-image results and plots.

    python IoU_test.py --data data/demo                            # newest run in saved_models/
    python IoU_test.py --model saved_models/<run> --data path/to/set/test --decision both

Writes RUN/results/<dataset>/: metrics.json, per_image.csv, roc.png, pro.png, score_histogram.png and
worst_overlays.png (with --decision both: one such folder per rule, RUN/results/<dataset>/seed/ and
.../calibrated/, plus comparison.csv). <dataset> is the data folder's name (its parent's for a test/ folder).
Unreadable images are named, skipped and counted; metrics the set cannot give are null, and the output says why.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", metavar="RUN", help="run folder (default: the newest in saved_models/)")
    parser.add_argument("--data", metavar="DIR", required=True, help="labelled set: an MVTec-layout root "
                        "(test/good/, test/<defect>/, optional ground_truth/<defect>/<name>_mask.png) or its "
                        "test/ folder; without masks only image-level metrics are computed")
    parser.add_argument("--decision", choices=("calibrated", "seed", "both"), default="calibrated",
                        help="calibrated: the run's threshold and min blob area (calibration.json); seed: the "
                        "original per-image rule; both: the two rules on the same residual maps, side by side "
                        "(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N", help="images per batch through the "
                        "network; memory grows with N, not with the size of the set (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the output
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = parse_args(argv)
    from utils.evaluation import evaluate

    try:
        report = evaluate(args.model, args.data, decision=args.decision, batch_size=args.batch_size)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

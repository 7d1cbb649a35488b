"""Evaluate a trained run on a labelled set (MVTec layout): metrics, per-image results and plots.

    python IoU_test.py --data data/demo                            # newest run in saved_models/
    python IoU_test.py --model saved_models/<run> --data path/to/set/test --decision both

Writes RUN/results/<dataset>/: metrics.json, per_image.csv, roc.png, pro.png, score_histogram.png and
worst_overlays.png (with --decision both: one such folder per rule, RUN/results/<dataset>/seed/ and
.../calibrated/, plus comparison.csv). <dataset> is the data folder's name (its parent's for a test/ folder).
Unreadable images are named, skipped and counted; metrics the set cannot give are null, and the output says why.
Errors (missing folder, damaged run, unwritable results folder: checked before evaluating) are one line
`error: ...` and exit code 2.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from utils.tensorflow_startup import import_tensorflow


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


WRITE_ADVICE = "move what is in the way, or copy the run folder somewhere writable and pass --model COPY"


def check_results_folders(run_path: Path, args: argparse.Namespace) -> Path:
    """RUN/results/<dataset>/, checked writable (with its per-rule folders) before an evaluation that may take
    an hour; returns it."""
    from utils.evaluation import RULES_FOR_CHOICE, dataset_name
    from utils.run import check_writable_folder

    folder = run_path / "results" / dataset_name(args.data)
    rule_folders = [folder / rule for rule in RULES_FOR_CHOICE[args.decision]] if args.decision == "both" else [folder]
    for rule_folder in rule_folders:
        check_writable_folder(rule_folder, advice=WRITE_ADVICE)
    return folder


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = parse_args(argv)
    import_tensorflow()  # quietly, before any module imports it
    from utils.evaluation import evaluate
    from utils.run import resolve_run

    folder = None
    try:
        run_path = resolve_run(args.model)
        folder = check_results_folders(run_path, args)
        report = evaluate(run_path, args.data, decision=args.decision, batch_size=args.batch_size)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. the disk filled up while the results were written (their folder was checked)
        print(f"error: {error} (results folder {str(folder)!r}): if the results could not be written there, free "
              f"space or {WRITE_ADVICE}, then rerun", file=sys.stderr)
        return 2
    print(report.text)
    if report.write_errors:  # the metrics above are all there is: say so, and how to get the files next time
        print(f"error: results not saved in {str(folder)!r}: {'; '.join(report.write_errors)}; free space or "
              f"{WRITE_ADVICE}, then rerun", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Which threshold rule, and whether smoothing the anomaly map helps: measured on one trained run.

    python benchmarks/bench_thresholds.py --model saved_models/<run> --data ../shared/datasets/magnetic_tile

Every map is computed once (the run's held-out good images, --rounds rounds of the same images with a painted
defect, and the test split of --data), then, for each Gaussian σ of --smooth (in map pixels, 0 = as the model
gives it), scored by the calibrated rule's blob score at the run's min area:

* the map's quality: image AUROC, pixel AUROC and AUPRO on the test split, and the synthetic AUROC (the tuning
  signal: the held-out good images against the painted ones, mean over the rounds);
* each threshold rule, from good images alone, by its TPR, TNR and balanced accuracy on the test split:
  ``validation`` (the lowest threshold at which no held-out good image is NOK), ``synthetic`` (the best balanced
  accuracy on the painted pairs of the first 3 rounds: what calibration does), ``synthetic_all`` (the same over
  every round), ``good_q90`` / ``good_q95`` / ``good_q98`` (the 90th / 95th / 98th percentile of the held-out
  good images' scores: a fixed false-alarm rate of about 10 / 5 / 2 %), and ``best`` (the best balanced accuracy
  on the test split itself: the ceiling no rule from good images can pass, not a rule).

Rows go to benchmarks/results/thresholds_<dataset>.json with the command that reproduces them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

CALIBRATION_ROUNDS = 3  # what utils.calibration's synthetic method uses (SYNTHETIC_SEEDS)
GOOD_QUANTILES = (0.90, 0.95, 0.98)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, metavar="RUN", help="a trained, calibrated run folder")
    parser.add_argument("--data", required=True, help="MVTec-layout set whose test/ split is reported")
    parser.add_argument("--rounds", type=int, default=10,
                        help="rounds of painted defects on the held-out good images (default: %(default)s)")
    parser.add_argument("--smooth", type=float, nargs="+", default=[0.0, 1.0, 2.0, 4.0], metavar="SIGMA",
                        help="Gaussian σ values (map pixels) to try; 0 = the map as given (default: %(default)s)")
    parser.add_argument("--out", help="JSON file (default: benchmarks/results/thresholds_<dataset>.json)")
    args = parser.parse_args(argv)
    if args.rounds < CALIBRATION_ROUNDS:
        parser.error(f"--rounds must be at least {CALIBRATION_ROUNDS} (the calibration's own rounds)")
    if any(sigma < 0 for sigma in args.smooth):
        parser.error("--smooth values must be 0 or more")
    return args


def smoothed(anomaly_map, sigma: float):
    import cv2
    import numpy as np

    anomaly_map = np.asarray(anomaly_map, np.float32)
    return anomaly_map if sigma == 0 else cv2.GaussianBlur(anomaly_map, (0, 0), sigma)


def rates(scores, labels, threshold: float) -> dict:
    """TPR, TNR and balanced accuracy of the rule NOK ⇔ score ≥ threshold."""
    from utils.metrics import classification_metrics

    found = classification_metrics(labels, ["NOK" if score >= threshold else "OK" for score in scores])
    return {"threshold": float(threshold), "tpr": found["tpr"], "tnr": found["tnr"],
            "balanced_accuracy": found["balanced_accuracy"]}


def threshold_rules(good_scores, painted_rounds: list, test_scores, test_labels) -> dict[str, dict]:
    """Each rule's threshold (from good images, painted pairs, or the test split for `best`) and its test rates."""
    import numpy as np

    from utils.blobs import threshold_above
    from utils.calibration import best_balanced_threshold

    def painted(rounds):
        return best_balanced_threshold(np.concatenate([scores for scores, _ in rounds]),
                                       np.concatenate([labels for _, labels in rounds]))[0]

    thresholds = {"validation": threshold_above(max(good_scores)),
                  "synthetic": painted(painted_rounds[:CALIBRATION_ROUNDS]), "synthetic_all": painted(painted_rounds),
                  **{f"good_q{round(q * 100)}": float(np.quantile(good_scores, q)) for q in GOOD_QUANTILES},
                  "best": best_balanced_threshold(np.asarray(test_scores), np.asarray(test_labels))[0]}
    return {rule: rates(test_scores, test_labels, threshold) for rule, threshold in thresholds.items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utils.tensorflow_startup import import_tensorflow

    import_tensorflow()
    import numpy as np
    from tqdm import tqdm

    from utils import data as data_module
    from utils.blobs import blob_score
    from utils.calibration import anomaly_maps_for_files
    from utils.evaluation import StreamState, dataset_name, read_item, synthetic_pairs
    from utils.inspector import Inspector
    from utils.metrics import PixelScores, image_auroc
    from utils.run import append_rows

    inspector = Inspector.from_run(args.model)
    run, preprocessing = inspector.run, inspector.preprocessing
    min_area = int(run.calibration["min_area"])
    good_files = [Path(path) for path in run.config.get("validation_files", [])]
    good_maps = anomaly_maps_for_files(inspector, good_files, description="held-out good images")[1]
    painted = []
    for seed in tqdm(range(args.rounds), desc="painted rounds", unit="round"):
        images, labels = synthetic_pairs(inspector, seed=seed)
        painted.append((inspector.maps_for(images)[2], np.array(labels)))
    test = []  # (map, ground truth at the photo's pixels or None when unknown, defective?)
    items = data_module.find_test_items(args.data)
    reading = StreamState(records={})  # evaluation's reader: unreadable files are skipped with a warning
    for start in tqdm(range(0, len(items), inspector.batch_size), desc="test split", unit="batch"):
        loaded = [(*read, item.is_defective) for item in items[start:start + inspector.batch_size]
                  if (read := read_item(item, preprocessing, reading)) is not None]
        if loaded:
            maps = inspector.maps_for([image for image, _, _ in loaded])[2]
            test += [(anomaly_map, truth, defective) for anomaly_map, (_, truth, defective) in zip(maps, loaded)]
    test_labels = [defective for _, _, defective in test]

    rows = []
    for sigma in args.smooth:
        def scores(maps):
            return [blob_score(smoothed(anomaly_map, sigma), min_area) for anomaly_map in maps]

        painted_scores = [(np.array(scores(maps)), labels) for maps, labels in painted]
        test_scores = scores([anomaly_map for anomaly_map, _, _ in test])
        pixels = PixelScores()
        for anomaly_map, ground_truth, _ in test:
            if ground_truth is None:  # a defective image without its mask: no pixel metrics
                continue
            anomaly_map = smoothed(anomaly_map, sigma)
            if anomaly_map.shape != ground_truth.shape:  # stretched: back onto the photo, as the Inspector does
                anomaly_map = preprocessing.on_photo(anomaly_map[..., None], anomaly_map,
                                                     np.zeros(anomaly_map.shape, bool), ground_truth.shape)[1]
            pixels.add(anomaly_map, ground_truth)
        rows.append({
            "smooth_sigma": sigma, "image_auroc": image_auroc(test_labels, test_scores),
            "pixel_auroc": pixels.auroc(), "aupro": pixels.aupro(),
            "synthetic_auroc": float(np.mean([image_auroc(labels, found) for found, labels in painted_scores])),
            "rules": threshold_rules(scores(good_maps), painted_scores, test_scores, test_labels),
            "n_good_heldout": len(good_maps), "rounds": args.rounds, "min_area": min_area,
            "run_config": {key: run.config.get(key) for key in ("model", "recipe", "head", "members", "painter",
                                                                "size", "tile", "color", "epochs", "seed")},
            "command": f"python benchmarks/bench_thresholds.py --model RUN --data {args.data} --rounds {args.rounds}"
                       f" --smooth {sigma:g}"})

    print(f"{'σ':>4}{'image AUROC':>13}{'pixel AUROC':>13}{'AUPRO':>8}{'synth. AUROC':>14}   "
          "balanced accuracy (TPR/TNR) on the test split by threshold rule")
    for row in rows:
        rules = "  ".join(f"{rule} {found['balanced_accuracy']:.3f} ({found['tpr']:.2f}/{found['tnr']:.2f})"
                          for rule, found in row["rules"].items())
        print(f"{row['smooth_sigma']:>4g}{row['image_auroc']:>13.3f}{row['pixel_auroc']:>13.3f}{row['aupro']:>8.3f}"
              f"{row['synthetic_auroc']:>14.3f}   {rules}")
    out = (Path(args.out) if args.out
           else PROJECT_ROOT / "benchmarks" / "results" / f"thresholds_{dataset_name(args.data)}.json")
    append_rows(out, rows)
    print(f"rows: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

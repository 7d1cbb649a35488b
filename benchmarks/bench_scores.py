"""Which image score to take from a run's anomaly maps: measured on a tuning signal, reported on the test split.

    python benchmarks/bench_scores.py --model saved_models/<run> --data ../shared/datasets/magnetic_tile

For one trained run, every map is computed once, then scored several ways:

* ``blob``       the calibrated rule's score (utils.blobs.blob_score at the run's min area): the highest threshold
                 at which a blob of min area survives;
* ``max``        the map's maximum;
* ``mean_max``   the maximum of the map averaged over a k × k window (DRAEM's image score, k = 21 at 256 px,
                 scaled with the map's side);
* ``top1pct``    the mean of the highest 1 % of the map.

Each is scored by image AUROC on the synthetic check (the run's held-out good images, clean and with a painted
defect: the tuning signal, which picks the score) and on the test split of --data (the report). Rows go to
benchmarks/results/scores_<dataset>.json with the command that reproduces them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, metavar="RUN", help="a trained run folder")
    parser.add_argument("--data", required=True, help="MVTec-layout set whose test/ split is reported")
    parser.add_argument("--seed", type=int, default=0, help="seed of the painted defects (default: %(default)s)")
    parser.add_argument("--out", help="JSON file (default: benchmarks/results/scores_<dataset>.json)")
    return parser.parse_args(argv)


def image_scores(anomaly_map, *, min_area: int) -> dict[str, float]:
    """Every candidate score of one map."""
    import cv2
    import numpy as np

    from utils.blobs import blob_score

    side = max(3, round(21 * min(anomaly_map.shape) / 256) | 1)
    flat = np.sort(anomaly_map.ravel())
    return {"blob": blob_score(anomaly_map, min_area), "max": float(flat[-1]),
            "mean_max": float(cv2.blur(anomaly_map.astype(np.float32), (side, side)).max()),
            "top1pct": float(flat[-max(1, flat.size // 100):].mean())}


def scores_of(inspector, images: list, *, min_area: int) -> list[dict]:
    rows = []
    for start in range(0, len(images), 32):
        rows += [image_scores(anomaly_map, min_area=min_area)
                 for anomaly_map in inspector.maps_for(images[start:start + 32])[2]]
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utils.tensorflow_startup import import_tensorflow

    import_tensorflow()
    from utils.data import decode_image, find_test_items
    from utils.evaluation import dataset_name, synthetic_pairs
    from utils.inspector import Inspector
    from utils.metrics import image_auroc
    from utils.run import write_json

    inspector = Inspector.from_run(args.model)
    min_area = int(inspector.run.calibration["min_area"])
    tuning_images, tuning_labels = synthetic_pairs(inspector, seed=args.seed)
    items = find_test_items(args.data)
    test_scores = scores_of(inspector, [decode_image(item.path) for item in items], min_area=min_area)
    tuning_scores = scores_of(inspector, tuning_images, min_area=min_area)
    test_labels = [item.is_defective for item in items]
    rows = [{"score": name, "synthetic_auroc": image_auroc(tuning_labels, [row[name] for row in tuning_scores]),
             "test_image_auroc": image_auroc(test_labels, [row[name] for row in test_scores]),
             "run_config": {key: inspector.run.config.get(key) for key in ("model", "recipe", "head", "size",
                                                                         "tile", "keep_aspect", "epochs", "seed")},
             "command": f"python benchmarks/bench_scores.py --model RUN --data {args.data} --seed {args.seed}"}
            for name in test_scores[0]]
    print(f"{'score':<10}{'synthetic AUROC':>17}{'test image AUROC':>18}")
    for row in rows:
        print(f"{row['score']:<10}{row['synthetic_auroc']:>17.3f}{row['test_image_auroc']:>18.3f}")
    out = Path(args.out) if args.out else PROJECT_ROOT / "benchmarks" / "results" / f"scores_{dataset_name(args.data)}.json"
    existing = json.loads(out.read_text()) if out.is_file() else []
    write_json(out, existing + rows)
    print(f"rows: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

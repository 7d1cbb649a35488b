"""Which image score to take from a run's anomaly maps: measured on a tuning signal, reported on the test split.

    python benchmarks/bench_scores.py --model saved_models/<run> --data ../shared/datasets/magnetic_tile

For one trained run, every map is computed once, then scored several ways:

* ``blob``       the calibrated rule's score (utils.blobs.blob_score at the run's min area): the highest threshold
                 at which a blob of min area survives;
* ``max``        the map's maximum;
* ``mean_max``   the maximum of the map averaged over a k × k window (DRAEM's image score, k = 21 at 256 px,
                 scaled with the map's side);
* ``top1pct``    the mean of the highest 1 % of the map.

With ``--transforms flips`` (or ``d4``) every image is also inspected flipped (and rotated by quarter turns), each
map turned back onto the photo and the maps averaged before scoring: test-time augmentation, measured the same way.
With several runs (``--model RUN RUN2 ...``, e.g. the same recipe trained at two sizes) each image's maps of every
run are averaged before scoring, each brought to the first run's decision resolution (a stretched run's maps are
resized; the blob score takes the first run's min area): an ensemble of runs trained apart, measured before it is
built into one model. The tuning pairs are the first run's held-out images, which runs of one seed on one data set
share.

Each is scored by image AUROC on the synthetic check (the run's held-out good images, clean and with a painted
defect: the tuning signal, which picks the score) and on the test split of --data (the report). Rows go to
benchmarks/results/scores_<dataset>.json with the command that reproduces them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))


# name → (turn the photo, turn its map back); the photo is H×W or H×W×C, its map H×W
TRANSFORMS = {
    "identity": (lambda image: image, lambda anomaly_map: anomaly_map),
    "flip_lr": (lambda image: image[:, ::-1], lambda anomaly_map: anomaly_map[:, ::-1]),
    "flip_ud": (lambda image: image[::-1], lambda anomaly_map: anomaly_map[::-1]),
    "rotate_180": (lambda image: image[::-1, ::-1], lambda anomaly_map: anomaly_map[::-1, ::-1]),
    "rotate_90": (lambda image: image.swapaxes(0, 1)[::-1], lambda anomaly_map: anomaly_map[::-1].swapaxes(0, 1)),
    "rotate_270": (lambda image: image.swapaxes(0, 1)[:, ::-1],
                   lambda anomaly_map: anomaly_map[:, ::-1].swapaxes(0, 1)),
    "transpose": (lambda image: image.swapaxes(0, 1), lambda anomaly_map: anomaly_map.swapaxes(0, 1)),
    "anti_transpose": (lambda image: image[::-1, ::-1].swapaxes(0, 1),
                       lambda anomaly_map: anomaly_map.swapaxes(0, 1)[::-1, ::-1]),
}
TRANSFORM_SETS = {"none": ("identity",), "flips": ("identity", "flip_lr", "flip_ud", "rotate_180"),
                  "d4": tuple(TRANSFORMS)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, nargs="+", metavar="RUN",
                        help="a trained run folder; several: their maps averaged (see above)")
    parser.add_argument("--data", required=True, help="MVTec-layout set whose test/ split is reported")
    parser.add_argument("--seed", type=int, default=0, help="seed of the painted defects (default: %(default)s)")
    parser.add_argument("--transforms", choices=sorted(TRANSFORM_SETS), default="none",
                        help="average each map over these test-time flips / quarter turns (default: %(default)s)")
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


def averaged_maps(inspectors: list, images: list, transforms: tuple[str, ...]) -> list:
    """Each image's anomaly map, averaged over the test-time transforms (each map turned back onto the photo) and
    over the runs (each map brought to the first run's decision resolution)."""
    import numpy as np

    from utils.preprocessing import resize_to

    sums = None
    for inspector in inspectors:
        for name in transforms:
            turn, turn_back = TRANSFORMS[name]
            maps = inspector.maps_for([np.ascontiguousarray(turn(image)) for image in images])[2]
            maps = [turn_back(anomaly_map) for anomaly_map in maps]
            if sums is None:
                sums = maps
                continue
            sums = [total + (anomaly_map if anomaly_map.shape == total.shape
                             else resize_to(np.asarray(anomaly_map, np.float32), total.shape[1], total.shape[0]))
                    for total, anomaly_map in zip(sums, maps)]
    return [np.ascontiguousarray(total / (len(transforms) * len(inspectors))) for total in sums]


def scores_of(inspectors: list, images: list, *, min_area: int,
              transforms: tuple[str, ...] = ("identity",)) -> list[dict]:
    rows = []
    for start in range(0, len(images), 32):
        rows += [image_scores(anomaly_map, min_area=min_area)
                 for anomaly_map in averaged_maps(inspectors, images[start:start + 32], transforms)]
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utils.tensorflow_startup import import_tensorflow

    import_tensorflow()
    from utils.data import decode_image, find_test_items
    from utils.evaluation import dataset_name, synthetic_pairs
    from utils.inspector import Inspector
    from utils.metrics import image_auroc
    from utils.run import append_rows

    inspectors = [Inspector.from_run(run) for run in args.model]
    inspector = inspectors[0]
    min_area = int(inspector.run.calibration["min_area"])
    tuning_images, tuning_labels = synthetic_pairs(inspector, seed=args.seed)
    items = find_test_items(args.data)
    transforms = TRANSFORM_SETS[args.transforms]
    test_scores = scores_of(inspectors, [decode_image(item.path) for item in items], min_area=min_area,
                            transforms=transforms)
    tuning_scores = scores_of(inspectors, tuning_images, min_area=min_area, transforms=transforms)
    test_labels = [item.is_defective for item in items]
    configs = [{key: each.run.config.get(key) for key in ("model", "recipe", "head", "members", "painter", "size",
                                                          "tile", "keep_aspect", "epochs", "seed")}
               for each in inspectors]
    runs = " ".join(["RUN"] + [f"RUN{number}" for number in range(2, len(inspectors) + 1)])
    rows = [{"score": name, "transforms": args.transforms,
             "synthetic_auroc": image_auroc(tuning_labels, [row[name] for row in tuning_scores]),
             "test_image_auroc": image_auroc(test_labels, [row[name] for row in test_scores]),
             "run_config": configs[0], **({"averaged_with": configs[1:]} if len(configs) > 1 else {}),
             "command": f"python benchmarks/bench_scores.py --model {runs} --data {args.data} --seed {args.seed}"
                        + (f" --transforms {args.transforms}" if args.transforms != "none" else "")}
            for name in test_scores[0]]
    print(f"test-time transforms: {', '.join(transforms)}")
    print(f"{'score':<10}{'synthetic AUROC':>17}{'test image AUROC':>18}")
    for row in rows:
        print(f"{row['score']:<10}{row['synthetic_auroc']:>17.3f}{row['test_image_auroc']:>18.3f}")
    out = (Path(args.out) if args.out
           else PROJECT_ROOT / "benchmarks" / "results" / f"scores_{dataset_name(args.data)}.json")
    append_rows(out, rows)
    print(f"rows: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

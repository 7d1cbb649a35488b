"""Quality benchmark: train each model with one recipe, evaluate it on a labelled set, print a table, save JSON.

    python benchmarks/bench_quality.py --models myCAE --size 64 --epochs 2          # a quick check
    python benchmarks/bench_quality.py --size 128 --epochs 30                        # all seven, demo set
    python benchmarks/bench_quality.py --data ../shared/datasets/magnetic_tile --size 128 --epochs 50

Each model is trained with utils.training.train (calibration included, as train.py does) on the good training
images of --data (default: the built-in demo set, generated on first use), then evaluated by utils.evaluation on
its test/ images, exactly as IoU_test.py would. One row per model: image AUROC, pixel AUROC, AUPRO, box IoU
(largest blob), balanced accuracy and training time (training + calibration, wall clock on this machine).

Rows go to benchmarks/results/quality_<dataset>.json (or --out): a list of objects with keys model, recipe, size,
epochs, image_auroc, pixel_auroc, aupro, iou_bbox_mean, balanced_accuracy, train_seconds and command (the
command that reproduces the row). Rows already in the file for another model or recipe are kept, so models can
be benchmarked one at a time. Run folders go to a temporary folder deleted at the end, unless --runs-dir is given.
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

log = logging.getLogger("bench_quality")

ROW_KEYS = ("model", "recipe", "size", "epochs", "image_auroc", "pixel_auroc", "aupro", "iou_bbox_mean",
            "balanced_accuracy", "train_seconds", "command")
TABLE_COLUMNS = (("image AUROC", "image_auroc"), ("pixel AUROC", "pixel_auroc"), ("AUPRO", "aupro"),
                 ("box IoU", "iou_bbox_mean"), ("bal. acc.", "balanced_accuracy"), ("train s", "train_seconds"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    import models

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(models.MODELS), metavar="NAME",
                        help=f"models to benchmark (default: all seven: {' '.join(models.MODELS)})")
    parser.add_argument("--data", help="MVTec-layout set with train/good and test/ (default: the demo set)")
    parser.add_argument("--size", type=int, default=128, help="image size in pixels (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=30, help="maximum epochs per model (default: %(default)s)")
    parser.add_argument("--loss", choices=("ssim", "mssim", "l2", "ssim_l1"), default="ssim",
                        help="training loss (default: %(default)s)")
    parser.add_argument("--color", choices=("grayscale", "rgb"), default="grayscale",
                        help="colour mode (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="training and evaluation batch size "
                        "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--augment", action="store_true", help="train with random flips, rotations, brightness")
    parser.add_argument("--noise", action="store_true", help="denoising training (noisy input, clean target)")
    parser.add_argument("--synthetic-defects", action="store_true", help="defect-removal training (a random blob "
                        "or stroke painted on the input, clean target)")
    parser.add_argument("--params", metavar="FILE", help="hyperparameter JSON for myCAE_optuna (default: "
                        "models/myCAE_optuna.json)")
    parser.add_argument("--runs-dir", help="keep the run folders here (default: a temporary folder, deleted)")
    parser.add_argument("--out", help="JSON file for the rows (default: benchmarks/results/quality_<dataset>.json)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.models if name not in models.MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(models.MODELS)}")
    return args


def recipe_of(args: argparse.Namespace) -> dict:
    """Everything besides model, size and epochs that decides what is trained and how it is judged."""
    return {"loss": args.loss, "color": args.color, "batch_size": args.batch_size, "seed": args.seed,
            "augment": args.augment, "noise": args.noise, "synthetic_defects": args.synthetic_defects,
            "params": args.params, "decision": "calibrated"}


def reproducing_command(args: argparse.Namespace, model: str) -> str:
    """The command line that trains and evaluates this one model with this recipe again."""
    words = ["python", "benchmarks/bench_quality.py", "--models", model, "--size", str(args.size),
             "--epochs", str(args.epochs), "--loss", args.loss, "--color", args.color,
             "--batch-size", str(args.batch_size), "--seed", str(args.seed)]
    words += ["--data", args.data] if args.data else []
    words += ["--augment"] if args.augment else []
    words += ["--noise"] if args.noise else []
    words += ["--synthetic-defects"] if args.synthetic_defects else []
    words += ["--params", args.params] if args.params else []
    return shlex.join(words)


def data_root(args: argparse.Namespace) -> Path:
    from utils.synthetic import ensure_demo_set

    return Path(args.data) if args.data else ensure_demo_set(PROJECT_ROOT / "data" / "demo")


def benchmark_model(args: argparse.Namespace, model: str, data: Path, runs_dir: Path) -> dict:
    """Train `model`, evaluate it on the test images of `data`, return its row."""
    from utils.evaluation import evaluate
    from utils.training import TrainConfig, train

    config = TrainConfig(data=str(data), model=model, size=args.size, epochs=args.epochs, color=args.color,
                         loss=args.loss, batch_size=args.batch_size, seed=args.seed, out=str(runs_dir),
                         augment=args.augment, noise=args.noise, synthetic_defects=args.synthetic_defects,
                         params=args.params if model == "myCAE_optuna" else None)
    started = time.perf_counter()
    run_dir = train(config)
    train_seconds = time.perf_counter() - started
    report = evaluate(run_dir, data, decision="calibrated", batch_size=args.batch_size)
    metrics = report.evaluations["calibrated"].metrics
    row = {"model": model, "recipe": recipe_of(args), "size": args.size, "epochs": args.epochs,
           **{key: metrics[key] for key in ("image_auroc", "pixel_auroc", "aupro", "iou_bbox_mean",
                                            "balanced_accuracy")},
           "train_seconds": round(train_seconds, 1), "command": reproducing_command(args, model)}
    return {key: row[key] for key in ROW_KEYS}


def merged_rows(path: Path, new_rows: list[dict]) -> list[dict]:
    """Rows already in `path`, minus those the new rows replace (same model, size, epochs and recipe), plus these."""
    from utils.run import read_json

    def identity(row: dict) -> tuple:
        return row["model"], row["size"], row["epochs"], tuple(sorted(row["recipe"].items()))

    replaced = {identity(row) for row in new_rows}
    old_rows = read_json(path) if path.is_file() else []
    return [row for row in old_rows if identity(row) not in replaced] + new_rows


def table(rows: list[dict]) -> str:
    header = f"{'model':<14}" + "".join(f"{title:>13}" for title, _ in TABLE_COLUMNS)
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = ["n/a" if row[key] is None else f"{row[key]:.3f}" if key != "train_seconds" else f"{row[key]:.0f}"
                 for _, key in TABLE_COLUMNS]
        lines.append(f"{row['model']:<14}" + "".join(f"{cell:>13}" for cell in cells))
    return "\n".join(lines)


def run_benchmark(args: argparse.Namespace, data: Path) -> tuple[list[dict], list[str]]:
    """Benchmark every model in args.models; a model that fails is reported and the others still run."""
    runs_dir = Path(args.runs_dir) if args.runs_dir else Path(tempfile.mkdtemp(prefix="aivision-quality-"))
    rows, failures = [], []
    try:
        for model in args.models:
            log.info("Training and evaluating %s (%d px, %d epochs)...", model, args.size, args.epochs)
            try:
                rows.append(benchmark_model(args, model, data, runs_dir))
            except Exception as error:  # one model's failure must not lose the other models' rows
                log.exception("%s failed", model)
                failures.append(f"{model}: {error}")
    finally:
        if not args.runs_dir:
            shutil.rmtree(runs_dir, ignore_errors=True)
    return rows, failures


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = parse_args(argv)
    from utils.evaluation import dataset_name
    from utils.run import write_json

    data = data_root(args)
    rows, failures = run_benchmark(args, data)
    out = Path(args.out) if args.out else PROJECT_ROOT / "benchmarks" / "results" / f"quality_{dataset_name(data)}.json"
    if rows:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, merged_rows(out, rows))
    print(table(rows))
    for failure in failures:
        print(f"failed: {failure}")
    print(f"rows: {out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

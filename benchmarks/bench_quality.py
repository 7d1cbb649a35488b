"""Quality benchmark: train each model with one recipe, evaluate it on a labelled set, print a table, save JSON.

    python benchmarks/bench_quality.py --models myCAE --size 64 --epochs 2          # a quick check
    python benchmarks/bench_quality.py --size 128 --epochs 30                        # all seven, demo set
    python benchmarks/bench_quality.py --data ../shared/datasets/magnetic_tile --size 128 --epochs 50

Each model is trained with utils.training.train (calibration included, as train.py does) on the good training
images of --data (default: the built-in demo set, generated on first use), then evaluated by utils.evaluation on
its test/ images, exactly as IoU_test.py would. One row per model: image AUROC, pixel AUROC, AUPRO, box IoU
(largest blob), balanced accuracy, TPR and TNR at the calibrated threshold, training time (training +
calibration, wall clock on this machine), and the synthetic AUROC (utils.evaluation.synthetic_check: the run's
held-out good images, clean and with a painted defect), the signal to rank recipes by without the test split;
then TPR and TNR at the threshold `--threshold-from synthetic` would choose.

Rows go to benchmarks/results/quality_<dataset>.json (or --out): a list of objects with keys model, recipe, size
(null for tiles: the recipe holds the tile), epochs, image_auroc, pixel_auroc, aupro, iou_bbox_mean,
balanced_accuracy, tpr, tnr, synthetic_auroc, tpr_synthetic_threshold, tnr_synthetic_threshold, train_seconds and
command (the command that reproduces the row). Rows already in the file for another model or recipe are kept, so
models can be benchmarked one at a time. Run folders go to a temporary folder deleted at the end, unless --runs-dir
is given.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
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
            "balanced_accuracy", "tpr", "tnr", "synthetic_auroc", "tpr_synthetic_threshold",
            "tnr_synthetic_threshold", "train_seconds", "command")
TABLE_COLUMNS = (("image AUROC", "image_auroc"), ("pixel AUROC", "pixel_auroc"), ("AUPRO", "aupro"),
                 ("box IoU", "iou_bbox_mean"), ("bal. acc.", "balanced_accuracy"), ("TPR", "tpr"), ("TNR", "tnr"),
                 ("synth. AUROC", "synthetic_auroc"), ("TPR synth.", "tpr_synthetic_threshold"),
                 ("TNR synth.", "tnr_synthetic_threshold"), ("train s", "train_seconds"))


BENCH_DEFAULTS = {"size": 128, "epochs": 30}  # smaller than train.py's: seven models must fit in an afternoon
NOT_BENCH_OPTIONS = ("model", "out", "distribute")  # --models, --runs-dir; one device


def bench_defaults():
    from utils.config import TrainConfig

    return TrainConfig(**BENCH_DEFAULTS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    import models
    from utils.config import add_options

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(models.MODELS), metavar="NAME",
                        help=f"models to benchmark (default: all seven: {' '.join(models.MODELS)})")
    parser.add_argument("--runs-dir", help="keep the run folders here (default: a temporary folder, deleted)")
    parser.add_argument("--out", help="JSON file for the rows (default: benchmarks/results/quality_<dataset>.json)")
    add_options(parser, defaults=bench_defaults(), exclude=NOT_BENCH_OPTIONS)
    args = parser.parse_args(argv)
    unknown = [name for name in args.models if name not in models.MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(models.MODELS)}")
    return args


def bench_config(args: argparse.Namespace):
    """The training options of this benchmark: its defaults, then --config FILE, then the flags given."""
    from utils.config import given_options, make_config

    return make_config(getattr(args, "config", None), given_options(args), defaults=bench_defaults())


def recipe_of(config) -> dict:
    """Everything besides model, size and epochs that decides what is trained and how it is judged."""
    skipped = (*NOT_BENCH_OPTIONS, "data", "size", "epochs")
    recipe = {key: value for key, value in dataclasses.asdict(config).items() if key not in skipped}
    return {**recipe, "decision": "calibrated"}


def reproducing_command(config, model: str) -> str:
    """The command line that trains and evaluates this one model with this recipe again."""
    from utils.config import command_line

    return command_line(config, program=("benchmarks/bench_quality.py", "--models", model),
                        exclude=NOT_BENCH_OPTIONS, defaults=bench_defaults())


def data_root(data: str | None) -> Path:
    from utils.synthetic import ensure_demo_set

    return Path(data) if data else ensure_demo_set(PROJECT_ROOT / "data" / "demo")


def benchmark_model(config, model: str, runs_dir: Path) -> dict:
    """Train `model` with the benchmark's options, evaluate it on the test images of its data (the demo set when
    `config.data` is None), return its row."""
    from utils.evaluation import evaluate, synthetic_check
    from utils.training import train

    config = dataclasses.replace(config, model=model, out=str(runs_dir),
                                 params=config.params if model == "myCAE_optuna" else None)
    command = reproducing_command(config, model)  # before the demo set's path is filled in: no machine paths
    config = dataclasses.replace(config, data=str(data_root(config.data)))
    started = time.perf_counter()
    run_dir = train(config)
    train_seconds = time.perf_counter() - started
    synthetic = synthetic_check(run_dir, seed=config.seed, batch_size=config.batch_size)  # the tuning signal
    report = evaluate(run_dir, config.data, decision="calibrated", batch_size=config.batch_size)
    per_image = report.evaluations["calibrated"].rows
    metrics = {**report.evaluations["calibrated"].metrics, **synthetic,
               **rates_at_synthetic_threshold(run_dir, per_image, batch_size=config.batch_size)}
    row = {"model": model, "recipe": recipe_of(config),
           "size": None if config.tile else config.size,  # with tiles --size is unused: the recipe holds the tile
           "epochs": config.epochs,
           **{key: metrics[key] for key in ("image_auroc", "pixel_auroc", "aupro", "iou_bbox_mean",
                                            "balanced_accuracy", "tpr", "tnr", "synthetic_auroc",
                                            "tpr_synthetic_threshold", "tnr_synthetic_threshold")},
           "train_seconds": round(train_seconds, 1), "command": command}
    return {key: row[key] for key in ROW_KEYS}


def rates_at_synthetic_threshold(run_dir: Path, per_image: list[dict], *, batch_size: int) -> dict:
    """TPR and TNR on the test split at the threshold `--threshold-from synthetic` would choose
    (utils.calibration.synthetic_on), from the evaluation's own per-image scores; the run is left as it is."""
    from utils.calibration import synthetic_on
    from utils.inspector import Inspector

    inspector = Inspector.from_run(run_dir, batch_size=batch_size)
    threshold = synthetic_on(inspector, int(inspector.run.calibration["min_area"]))["threshold"]
    found = [row["score"] >= threshold for row in per_image if row["label"] == "NOK"]
    passed = [row["score"] < threshold for row in per_image if row["label"] == "OK"]
    return {"tpr_synthetic_threshold": sum(found) / len(found) if found else None,
            "tnr_synthetic_threshold": sum(passed) / len(passed) if passed else None}


def merged_rows(path: Path, new_rows: list[dict]) -> list[dict]:
    """Rows already in `path`, minus those the new rows replace (same model, size, epochs and recipe), plus these."""
    from utils.run import read_json

    def identity(row: dict) -> tuple:  # older tile rows carry the unused --size: the tile decides
        size = None if row["recipe"].get("tile") else row["size"]
        return row["model"], size, row["epochs"], json.dumps(row["recipe"], sort_keys=True)

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


def run_benchmark(args: argparse.Namespace, config) -> tuple[list[dict], list[str]]:
    """Benchmark every model in args.models; a model that fails is reported and the others still run."""
    runs_dir = Path(args.runs_dir) if args.runs_dir else Path(tempfile.mkdtemp(prefix="aivision-quality-"))
    rows, failures = [], []
    try:
        for model in args.models:
            shape = f"{config.tile} px tiles" if config.tile else f"{config.size} px"  # --size is unused with tiles
            log.info("Training and evaluating %s (%s, %d epochs)...", model, shape, config.epochs)
            try:
                rows.append(benchmark_model(config, model, runs_dir))
            except Exception as error:  # one model's failure must not lose the other models' rows
                log.exception("%s failed", model)
                failures.append(f"{model}: {error}")
    finally:
        if not args.runs_dir:
            shutil.rmtree(runs_dir, ignore_errors=True)
    return rows, failures


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from utils.tensorflow_startup import import_tensorflow

    import_tensorflow()  # quietly, before any module imports it (the model choices of --help do)
    args = parse_args(argv)
    from utils.evaluation import dataset_name
    from utils.run import write_json

    config = bench_config(args)
    data = data_root(config.data)  # generated now when it is the demo set, before any model trains
    rows, failures = run_benchmark(args, config)
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

"""Training a model on defect-free images and writing its run folder: the one fit loop of the project.

Read top to bottom: `validate` checks a `TrainConfig` (utils/config.py) before any data is read; `fit_model` is
the fit loop that train.py and every Optuna trial share (seed, model spec, datasets, checkpoints, history log,
early stopping); `train` turns a config into a run folder; `resume` continues a run from its last checkpoint
with the run's own options.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from utils import data as data_module
from utils import run as run_module
from utils.config import DISTRIBUTE_CHOICES, TrainConfig, options_of_run

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
BEST_WEIGHTS_FILE = "best_weights.npz"  # in CHECKPOINT_DIR: the best epoch's weights, for a resume
HISTORY_FILE = "history.json"
HISTORY_LOG = "history.csv"
DEMO_DATA_ROOT = Path("data/demo")


def validate(config: TrainConfig) -> None:
    """Fail early, before any data is read, with messages that say what is valid."""
    import models
    from utils.losses import get_loss

    spec = models.spec(config.model, head=config.head, members=config.members, head_levels=config.head_levels)
    spec.anomaly_map(config.anomaly_map, model=config.model)
    if config.head and not config.synthetic_defects:
        raise ValueError("--head learns the masks of synthetic defects: add --synthetic-defects")
    if config.color not in data_module.COLOR_CHOICES:
        raise ValueError(f"--color must be one of {data_module.COLOR_CHOICES}; got {config.color!r}")
    if config.distribute not in DISTRIBUTE_CHOICES:
        raise ValueError(f"--distribute must be one of {DISTRIBUTE_CHOICES}; got {config.distribute!r}")
    for name in ("epochs", "batch_size", "size"):
        if getattr(config, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive; got {getattr(config, name)!r}")
    # The loss is sized by the input's side only; "auto" colour is decided later, from the photos, so any
    # resolved mode stands in for it here.
    side = preprocessing_of(dataclasses.replace(config, color="grayscale")).input_shape[0]
    get_loss(config.loss, size=side)
    builder_hparams(config)  # a missing or malformed params file fails here, before any data is read


def with_colour_resolved(config: TrainConfig, train_files: Sequence[Path]) -> TrainConfig:
    """`config` with --color auto replaced by the mode the training photos call for (data.colour_mode_of), so
    config.json records what the run trained on and `--config` repeats it; other modes as given."""
    if config.color != "auto":
        return config
    color = data_module.colour_mode_of(train_files)
    log.info("--color auto: %s (the training photos %s)", color,
             "carry colour" if color == "rgb" else "are grey")
    return dataclasses.replace(config, color=color)


def preprocessing_of(config: TrainConfig):
    """The preprocessing step the options choose (recorded in config.json, used by every consumer)."""
    from utils.preprocessing import KeepAspect, Stretch, Tiles

    if config.color == "auto":
        raise ValueError("--color auto is decided from the training photos first (with_colour_resolved)")
    if config.tile is None and (config.tile_stride is not None or config.scale != 1.0):
        raise ValueError("--tile-stride and --scale go with --tile T")
    if config.tile is not None:
        if config.keep_aspect:
            raise ValueError("choose one of --keep-aspect and --tile: tiles already keep the aspect ratio")
        return Tiles(tile=config.tile, color_mode=config.color, stride=config.tile_stride, scale=config.scale)
    if config.keep_aspect:
        return KeepAspect(size=config.size, color_mode=config.color)
    return Stretch(size=config.size, color_mode=config.color)


def builder_hparams(config: TrainConfig) -> dict:
    """Keyword arguments for models.build, resolved so config.json can rebuild the model on its own.

    For myCAE_optuna the params file is read now and its values recorded: a later study may overwrite the file.
    Keys the file leaves out take myCAE's defaults, never the values of the shipped default file.
    """
    if config.model != "myCAE_optuna":
        if config.params is not None:
            raise ValueError(f"--params is for myCAE_optuna; {config.model} takes no params file")
        return dict(config.hparams)
    from models.my_cae import resolve_params

    return resolve_params(config.params, **config.hparams)


def make_strategy(name: str):
    """The tf.distribute strategy for --distribute; "none" is TensorFlow's default (one device)."""
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief() -> bool:
    """In multi-worker training only the chief writes the run folder (TF_CONFIG's chief, else worker 0)."""
    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = tf_config.get("task")
    if not task or task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and task.get("index", 0) == 0 and "chief" not in tf_config.get("cluster", {})


def git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def versions() -> dict:
    import keras
    import numpy
    import tensorflow

    return {"python": platform.python_version(), "tensorflow": tensorflow.__version__, "keras": keras.__version__,
            "numpy": numpy.__version__}


def resolve_data_root(config: TrainConfig) -> Path:
    """The dataset root; the demo set is generated on first use."""
    if config.data is not None:
        return Path(config.data)
    from utils.synthetic import ensure_demo_set

    return ensure_demo_set(DEMO_DATA_ROOT)


def next_steps(run_dir: Path, config: TrainConfig) -> list[str]:
    """What train.py prints after training: on the demo set, the test AUROC the run reached (its test split is
    generated, never tuned on); then the commands to try next on the run."""
    from utils.evaluation import evaluate

    root = resolve_data_root(config)
    layout = data_module.find_layout(root)
    lines = []
    if config.data is None and layout.test_items:
        metrics = evaluate(run_dir, root, decision="calibrated").evaluations["calibrated"].metrics
        lines.append(f"demo test set: image AUROC {metrics['image_auroc']:.3f}, pixel AUROC "
                     f"{metrics['pixel_auroc']:.3f}; at the calibrated threshold TPR {metrics['tpr']:.2f}, "
                     f"TNR {metrics['tnr']:.2f} (details in {run_dir / 'results'})")
    lines.append("next:")
    defective = [item.path for item in layout.test_items if item.is_defective]
    if defective:
        lines.append(f"  python test.py --model {run_dir} --image {defective[0]}")
        lines.append(f"  python IoU_test.py --model {run_dir} --data {root}")
    source = root / "test" if layout.test_items else root
    lines.append(f"  python main.py --model {run_dir} --source {source}")
    return lines


def training_callbacks(run_dir: Path, config: TrainConfig, *, keep_checkpoint: bool = True,
                       run_config: dict | None = None) -> list:
    """Record history (and config.json's epochs_run) every epoch, checkpoint every epoch (resumable), stop early on
    val_loss with the best weights, log history.csv as we go.

    The history writer comes before the checkpoint: a run killed between the two re-runs that epoch on resume,
    whose record then replaces the first one; the other order would lose the epoch from history.json."""
    import keras

    callbacks = [
        history_writer(run_dir, run_config),
        keras.callbacks.BackupAndRestore(str(run_dir / CHECKPOINT_DIR), delete_checkpoint=not keep_checkpoint),
        early_stopping(run_dir, patience=config.patience),
        keras.callbacks.CSVLogger(str(run_dir / HISTORY_LOG), append=True),
    ]
    if config.lr_decay:
        callbacks.insert(2, learning_rate_decay(config.patience))
    return callbacks


def learning_rate_decay(patience: int):
    """--lr-decay: halve the learning rate after half the early-stopping patience (at least 2 epochs) without a
    better val_loss, so early stopping sees the lower rate's gains before it gives up. The rate lives in the
    optimizer, so a resumed run goes on at the rate it had reached."""
    import keras

    return keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=max(2, patience // 2),
                                             min_lr=1e-6, verbose=1)


def early_stopping(run_dir: Path, *, patience: int):
    """Keras' EarlyStopping on val_loss, restoring the best weights, whose state survives a resume.

    Keras' own forgets at a resume which epoch was best, how long ago it was and its weights: patience would
    restart, and the weights restored at the end would be the best since the resume. This one keeps the best
    epoch's weights in checkpoints/ and, at the start of a resumed fit, takes the best val_loss, its epoch and
    the epochs since from the history the run recorded."""
    import keras
    import numpy as np

    best_path = run_dir / CHECKPOINT_DIR / BEST_WEIGHTS_FILE

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            done = getattr(self.model, "_initial_epoch", None) or 0  # set by BackupAndRestore, which runs first
            losses = recorded_history(run_dir).get(self.monitor, [])[:done]
            finite = [(value, epoch) for epoch, value in enumerate(losses) if math.isfinite(value)]
            if not finite or not best_path.is_file():
                return
            self.best, self.best_epoch = min(finite)
            self.wait = done - 1 - self.best_epoch
            with np.load(best_path) as saved:
                self.best_weights = [saved[f"w{index}"] for index in range(len(saved.files))]

        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            if self.best_weights is not None and self.best_epoch == epoch:  # a new best: keep it for a resume
                best_path.parent.mkdir(parents=True, exist_ok=True)
                temporary = best_path.with_name(best_path.name + ".tmp.npz")
                np.savez(temporary, **{f"w{index}": array for index, array in enumerate(self.best_weights)})
                os.replace(temporary, best_path)

    return ResumableEarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)


def history_writer(run_dir: Path, run_config: dict | None = None):
    """A callback rewriting history.json (atomically) after every epoch, and config.json with `epochs_run` when
    `run_config` is given, so a killed run keeps every finished epoch for its resume.

    Values are stored by epoch number (Keras counts on across a resume): an epoch that runs again replaces its
    record instead of repeating it."""
    import keras

    history = recorded_history(run_dir)

    def record(epoch: int, logs: dict | None) -> None:
        for key, value in (logs or {}).items():
            values = history.setdefault(key, [])
            del values[epoch:]
            values.extend([math.nan] * (epoch - len(values)))  # epochs lost by a run from before this writer
            values.append(float(value))
        run_module.write_json(run_dir / HISTORY_FILE, history)
        if run_config is not None:
            run_config["epochs_run"] = epoch + 1
            run_module.write_json(run_dir / run_module.CONFIG_FILE, run_config)

    return keras.callbacks.LambdaCallback(on_epoch_end=record)


def recorded_history(run_dir: Path) -> dict:
    """The epochs recorded so far: history.json, or history.csv where that log holds more epochs (a run killed
    before history.json was written every epoch)."""
    path = run_dir / HISTORY_FILE
    history = run_module.read_json(path) if path.is_file() else {}
    logged = history_from_log(run_dir / HISTORY_LOG)
    return logged if epoch_count(logged) > epoch_count(history) else history


def epoch_count(history: dict) -> int:
    return max((len(values) for values in history.values()), default=0)


def history_from_log(path: Path) -> dict:
    """history.csv (CSVLogger's, one row per epoch) as a history dict: epochs 0, 1, … up to the first gap or
    broken row (a kill mid-write); an epoch logged twice (re-run after a resume) counts with its last row."""
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as handle:
        rows = {row.get("epoch"): row for row in csv.DictReader(handle)}
    history: dict[str, list[float]] = {}
    for epoch in range(len(rows)):
        row = rows.get(str(epoch))
        try:
            values = {key: float(value) for key, value in row.items() if key != "epoch"}
        except (AttributeError, TypeError, ValueError):
            break
        for key, value in values.items():
            history.setdefault(key, []).append(value)
    return history


def make_run_config(config: TrainConfig, root: Path, split: tuple[list, list]) -> dict:
    """config.json: every training option once (top level; hparams and anomaly map resolved), then what the run
    adds: how to rebuild the model and preprocess images like training did, and how training went."""
    import models

    train_files, validation_files = split
    preprocessing = preprocessing_of(config)
    anomaly_map = models.spec(config.model, head=config.head).anomaly_map(config.anomaly_map, model=config.model)
    return {
        **dataclasses.asdict(config),
        "data": str(root),
        "hparams": builder_hparams(config),
        "anomaly_map": anomaly_map.name,
        "input_shape": list(preprocessing.input_shape),
        "preprocessing": preprocessing.record(),
        "dataset": root.resolve().name,
        "n_train_images": len(train_files),
        "validation_files": [str(path) for path in validation_files],
        "versions": versions(),
        "git_commit": git_commit(),
        "status": "training",
    }


@dataclass
class FitOutcome:
    """What `fit_model` leaves: the trained (best-weights) models, this session's history, what was lost."""

    model: object
    encoder: object
    history: dict
    skipped: set
    replicas: int
    seconds: float


def fit_model(config: TrainConfig, run_dir: Path, run_config: dict, *, callbacks: Sequence = (),
              keep_checkpoint: bool = True, verbose: int | None = None) -> FitOutcome:
    """The one fit loop: seed, build and compile through the model spec, stream the data, fit with checkpoints in
    `run_dir`, its history log and early stopping (plus `callbacks`, e.g. an Optuna pruner)."""
    import keras

    import models

    keras.utils.set_random_seed(config.seed)
    spec = models.spec(config.model, head=config.head, members=config.members, head_levels=config.head_levels)
    strategy = make_strategy(config.distribute)
    replicas = strategy.num_replicas_in_sync
    validation_files = [Path(path) for path in run_config["validation_files"]]
    train_files = sorted(set(data_module.find_layout(run_config["data"]).train_files) - set(validation_files))
    skipped: set[str] = set()
    train_data, validation_data = data_module.training_datasets(
        train_files, validation_files, preprocessing=preprocessing_of(config), batch_size=config.batch_size * replicas,
        seed=config.seed, augment=config.augment, flips=config.flips, relight=config.relight, noise=config.noise,
        defects=config.synthetic_defects,
        painter=config.painter, skipped=skipped, fit_example=spec.fit_example, damaged_validation=config.head)
    if config.distribute != "none":
        train_data, validation_data = shard_by_data(train_data), shard_by_data(validation_data)
    with strategy.scope():
        model, encoder = models.build(config.model, tuple(run_config["input_shape"]), head=config.head,
                                      members=config.members, head_levels=config.head_levels,
                                      **run_config["hparams"])
        spec.compile(model, config)
    started = time.time()
    with warnings.catch_warnings():
        # Skipping unreadable files makes the epoch length unknown until the first epoch ends; Keras then warns
        # that the input "ran out of data", which is expected here and not a problem.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        history = model.fit(train_data, validation_data=validation_data, epochs=config.epochs, shuffle=False,
                            callbacks=[*training_callbacks(run_dir, config, keep_checkpoint=keep_checkpoint,
                                                          run_config=run_config),
                                       *callbacks],
                            verbose=(1 if sys.stdout.isatty() else 2) if verbose is None else verbose)
    return FitOutcome(model, encoder, history.history, skipped, replicas, time.time() - started)


def shard_by_data(dataset):
    """Multi-device input: every replica gets different batches of the same files."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def fit_run(run_dir: Path, config: TrainConfig, run_config: dict, extra_callbacks: Sequence = ()) -> dict:
    """Train and save the model into `run_dir`; returns the updated config.json content."""
    outcome = fit_model(config, run_dir, run_config, callbacks=extra_callbacks)
    run_module.save_model(outcome.model, run_dir / run_module.MODEL_FILE)
    run_module.save_model(outcome.encoder, run_dir / run_module.ENCODER_FILE)
    merged = recorded_history(run_dir)  # every epoch, before and after a resume (written by history_writer)
    run_config.update(status="trained", epochs_run=len(merged.get("loss", [])), replicas=outcome.replicas,
                      wall_time_s=round(run_config.get("wall_time_s", 0.0) + outcome.seconds, 1),
                      skipped_files=sorted(outcome.skipped))
    if outcome.skipped:
        log.warning("Skipped %d unreadable image(s) during training (named above).", len(outcome.skipped))
    save_plots(run_dir, outcome.model, merged)
    return run_config


def save_plots(run_dir: Path, autoencoder, history: dict) -> None:
    """plots/loss.png, plots/metric.png and the model drawing (model.png with Graphviz; model.txt always)."""
    import keras

    from utils.plots import save_training_curves

    plots = run_dir / "plots"
    plots.mkdir(exist_ok=True)
    save_training_curves(history, plots / "loss.png", plots / "metric.png")
    lines: list[str] = []
    autoencoder.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    (plots / "model.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        keras.utils.plot_model(autoencoder, to_file=str(plots / "model.png"), show_shapes=True, dpi=72)
    except (ImportError, OSError, RuntimeError, AssertionError) as error:  # pydot or `dot` missing or crashing
        log.info("model.png not drawn (%s); plots/model.txt has the layer table.", error)


def train(config: TrainConfig, *, extra_callbacks: Sequence = ()) -> Path:
    """Train `config.model` on the good images of `config.data` and return the new run folder."""
    validate(config)
    root = resolve_data_root(config)
    layout = data_module.find_layout(root)
    split = data_module.split_validation(layout.train_files, fraction=config.validation_split, seed=config.seed)
    config = with_colour_resolved(config, layout.train_files)
    out = config.out if is_chief() else tempfile.mkdtemp(prefix="aivision-worker-")
    run_dir = run_module.new_run_dir(out, config.model, layout.name)
    run_config = make_run_config(config, root, split)
    run_module.write_json(run_dir / run_module.CONFIG_FILE, run_config)
    return finish_run(run_dir, config, run_config, extra_callbacks)


def finish_run(run_dir: Path, config: TrainConfig, run_config: dict, extra_callbacks: Sequence) -> Path:
    """Train, save, then calibrate the decision threshold on the held-out validation images."""
    from utils.calibration import calibrate

    run_config = fit_run(run_dir, config, run_config, extra_callbacks)
    run_module.write_json(run_dir / run_module.CONFIG_FILE, run_config)
    if run_config["validation_files"]:
        calibration = calibrate(run_dir, threshold_from=config.threshold_from, batch_size=config.batch_size)
        log.info("Calibrated: threshold %.4f, min area %d px.", calibration["threshold"], calibration["min_area"])
    return run_dir


def resume(run_path: str | Path, *, epochs: int | None = None) -> Path:
    """Continue a run from its last checkpoint with its own options (optionally to a new total of `epochs`)."""
    run_dir = Path(run_path)
    config_path = run_dir / run_module.CONFIG_FILE
    if not config_path.is_file():
        raise ValueError(f"Cannot resume {str(run_dir)!r}: no {run_module.CONFIG_FILE} (not a run folder).")
    run_config = run_module.read_json(config_path)
    config = TrainConfig(**options_of_run(run_config))
    if epochs is not None:
        config.epochs = run_config["epochs"] = epochs
    return finish_run(run_dir, config, run_config, ())

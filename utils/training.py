"""Training an autoencoder on defect-free images and writing its run folder.

Read top to bottom: `TrainConfig` holds every choice with its default; `train` turns a config into a run folder;
`resume` continues a run from its last checkpoint with the run's own config.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from utils import data as data_module
from utils import run as run_module

log = logging.getLogger(__name__)

DISTRIBUTE_CHOICES = ("none", "mirrored", "multiworker")
CHECKPOINT_DIR = "checkpoints"
DEMO_DATA_ROOT = Path("data/demo")


@dataclass
class TrainConfig:
    data: str | None = None  # dataset root (MVTec layout or plain folder); None → the built-in demo set
    model: str = "myCAE"  # a key of models.MODELS
    epochs: int = 100  # upper bound; early stopping usually ends training sooner
    size: int = 256  # images are resized (stretched) to size × size
    color: str = "grayscale"  # "grayscale" or "rgb"
    loss: str = "ssim"  # ssim | mssim | l2 | ssim_l1 (see utils/losses.py)
    batch_size: int = 8  # per device; the global batch is batch_size × devices
    lr: float = 1e-3  # Adam learning rate
    seed: int = 0  # seeds Python, numpy, TensorFlow and the validation split
    out: str = "saved_models"  # where run folders are created
    validation_split: float = 0.1  # fraction of good training images held out for early stopping and calibration
    patience: int = 10  # epochs without a better val_loss before training stops
    augment: bool = False  # random flips, ±10° rotations, ±0.1 brightness
    noise: bool = False  # denoising training: noisy input (bright lines + σ 0.1 noise), clean target
    synthetic_defects: bool = False  # defect-removal training: a blob or stroke painted on half the inputs
    distribute: str = "none"  # none | mirrored (all local GPUs) | multiworker (machines listed in TF_CONFIG)
    params: str | None = None  # hyperparameter JSON for the model (e.g. myCAE_optuna's tuned params)
    hparams: dict = field(default_factory=dict)  # extra builder keyword arguments, recorded in config.json


def validate(config: TrainConfig) -> None:
    """Fail early, before any data is read, with messages that say what is valid."""
    import models
    from utils.losses import get_loss

    if config.model not in models.MODELS:
        raise ValueError(f"Unknown model {config.model!r}; choose one of {', '.join(sorted(models.MODELS))}")
    if config.color not in data_module.COLOR_MODES:
        raise ValueError(f"--color must be one of {data_module.COLOR_MODES}; got {config.color!r}")
    if config.distribute not in DISTRIBUTE_CHOICES:
        raise ValueError(f"--distribute must be one of {DISTRIBUTE_CHOICES}; got {config.distribute!r}")
    for name in ("epochs", "batch_size", "size"):
        if getattr(config, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive; got {getattr(config, name)!r}")
    get_loss(config.loss, size=config.size)
    builder_hparams(config)  # a missing or malformed params file fails here, before any data is read


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


def compile_autoencoder(autoencoder, config: TrainConfig) -> None:
    import keras

    from utils.losses import get_loss, ssim_metric

    metrics = [keras.metrics.MeanMetricWrapper(ssim_metric, name="ssim"), keras.metrics.MeanAbsoluteError(name="mae")]
    autoencoder.compile(optimizer=keras.optimizers.Adam(config.lr), loss=get_loss(config.loss), metrics=metrics)


def training_callbacks(run_dir: Path, config: TrainConfig, extra: Sequence) -> list:
    """Checkpoint every epoch (resumable), stop early on val_loss with the best weights, log history as we go."""
    import keras

    return [
        keras.callbacks.BackupAndRestore(str(run_dir / CHECKPOINT_DIR), delete_checkpoint=False),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        *extra,
    ]


def make_run_config(config: TrainConfig, root: Path, input_shape: tuple, split: tuple[list, list]) -> dict:
    """config.json: everything needed to rebuild the model and preprocess images like training did."""
    train_files, validation_files = split
    return {
        "model": config.model,
        "hparams": builder_hparams(config),
        "params_file": config.params,
        "input_shape": list(input_shape),
        "color_mode": config.color,
        "train_config": dataclasses.asdict(config),
        "data": str(root),
        "dataset": root.resolve().name,
        "loss": config.loss,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "seed": config.seed,
        "noise": config.noise,
        "synthetic_defects": config.synthetic_defects,
        "augment": config.augment,
        "n_train_images": len(train_files),
        "validation_files": [str(path) for path in validation_files],
        "versions": versions(),
        "git_commit": git_commit(),
        "status": "training",
    }


def fit_run(run_dir: Path, config: TrainConfig, run_config: dict, extra_callbacks: Sequence = ()) -> dict:
    """Build, train and save the model into `run_dir`; returns the updated config.json content."""
    import keras
    import tensorflow as tf

    import models

    keras.utils.set_random_seed(config.seed)
    strategy = make_strategy(config.distribute)
    replicas = strategy.num_replicas_in_sync
    root = Path(run_config["data"])
    train_files = sorted(set(data_module.find_layout(root).train_files) - set(map(Path, run_config["validation_files"])))
    skipped: set[str] = set()
    train_data, validation_data = data_module.training_datasets(
        train_files, [Path(p) for p in run_config["validation_files"]], size=config.size, color_mode=config.color,
        batch_size=config.batch_size * replicas, seed=config.seed, augment=config.augment, noise=config.noise,
        defects=config.synthetic_defects, skipped=skipped)
    if config.distribute != "none":
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        train_data, validation_data = train_data.with_options(options), validation_data.with_options(options)
    with strategy.scope():
        autoencoder, encoder = models.build(config.model, tuple(run_config["input_shape"]), **run_config["hparams"])
        compile_autoencoder(autoencoder, config)
    started = time.time()
    with warnings.catch_warnings():
        # Skipping unreadable files makes the epoch length unknown until the first epoch ends; Keras then warns
        # that the input "ran out of data", which is expected here and not a problem.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        history = autoencoder.fit(train_data, validation_data=validation_data, epochs=config.epochs, shuffle=False,
                                  callbacks=training_callbacks(run_dir, config, extra_callbacks),
                                  verbose=1 if sys.stdout.isatty() else 2)
    run_module.save_model(autoencoder, run_dir / run_module.MODEL_FILE)
    run_module.save_model(encoder, run_dir / run_module.ENCODER_FILE)
    merged = merge_history(run_dir, history.history)
    run_config.update(status="trained", epochs=config.epochs, epochs_run=len(merged.get("loss", [])),
                      replicas=replicas, distribute=config.distribute,
                      wall_time_s=round(run_config.get("wall_time_s", 0.0) + time.time() - started, 1),
                      skipped_files=sorted(skipped))
    if skipped:
        log.warning("Skipped %d unreadable image(s) during training (named above).", len(skipped))
    save_plots(run_dir, autoencoder, merged)
    return run_config


def merge_history(run_dir: Path, new_history: dict) -> dict:
    """history.json = earlier epochs (before a resume) followed by this session's epochs."""
    path = run_dir / "history.json"
    merged = run_module.read_json(path) if path.is_file() else {}
    for key, values in new_history.items():
        merged.setdefault(key, []).extend(float(value) for value in values)
    run_module.write_json(path, merged)
    return merged


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
    channels = 1 if config.color == "grayscale" else 3
    out = config.out if is_chief() else tempfile.mkdtemp(prefix="aivision-worker-")
    run_dir = run_module.new_run_dir(out, config.model, layout.name)
    run_config = make_run_config(config, root, (config.size, config.size, channels), split)
    run_module.write_json(run_dir / run_module.CONFIG_FILE, run_config)
    return finish_run(run_dir, config, run_config, extra_callbacks)


def finish_run(run_dir: Path, config: TrainConfig, run_config: dict, extra_callbacks: Sequence) -> Path:
    """Train, save, then calibrate the decision threshold on the held-out validation images."""
    from utils.calibration import calibrate

    run_config = fit_run(run_dir, config, run_config, extra_callbacks)
    run_module.write_json(run_dir / run_module.CONFIG_FILE, run_config)
    if run_config["validation_files"]:
        calibration = calibrate(run_dir, batch_size=config.batch_size)
        log.info("Calibrated: threshold %.4f, min area %d px.", calibration["threshold"], calibration["min_area"])
    return run_dir


def resume(run_path: str | Path, *, epochs: int | None = None) -> Path:
    """Continue a run from its last checkpoint with its own config (optionally to a new total of `epochs`)."""
    run_dir = Path(run_path)
    config_path = run_dir / run_module.CONFIG_FILE
    if not config_path.is_file():
        raise ValueError(f"Cannot resume {str(run_dir)!r}: no {run_module.CONFIG_FILE} (not a run folder).")
    run_config = run_module.read_json(config_path)
    config = TrainConfig(**run_config["train_config"])
    if epochs is not None:
        config.epochs = epochs
    run_config["train_config"] = dataclasses.asdict(config)
    return finish_run(run_dir, config, run_config, ())

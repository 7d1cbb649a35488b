"""Optuna hyperparameter search: tune myCAE and hand the best architecture to myCAE_optuna.

    outcome = run_study(TrainConfig(data="data/demo", size=128, epochs=30), n_trials=40)
    outcome.best_params_path   # saved_models/optuna/<study>/best_params.json, the params myCAE_optuna builds from
    outcome.run_dir            # the best trial retrained as an ordinary run folder

Each trial builds myCAE from sampled hyperparameters (`SearchSpace`), trains it in this process (through
utils.training.fit_model, train.py's own fit loop) on the good
training images and is scored on the held-out validation images. The search covers the architecture (filters per
level, levels, convolutions per level, kernel size, latent width, activation, batch norm) and the training
(learning rate, batch size, loss, denoising).

Objectives:

* ``val_loss`` (default, good images only): the best validation SSIM loss, 1 − mean SSIM, over the trial's epochs.
  Every trial is measured with this one yardstick whatever loss it trained with, because the losses live on
  different scales (an l2 loss of 0.01 is not better than an SSIM loss of 0.2) and the inspection itself compares
  images by SSIM.
* ``auroc``: image AUROC on a labelled tuning split (good/ and <defect>/ folders), with the calibrated rule's
  score (utils.blobs.blob_score at the default min area) through the Inspector. The tuning split must never be
  the set used to report results, or the reported numbers are tuned on their own test.

Pruning: after each epoch the trial reports its validation SSIM loss (with ``auroc``: its validation SSIM,
higher is better, as the study maximises) to a MedianPruner, which stops trials that are worse than the median
of earlier trials at the same epoch; they are recorded as PRUNED. A trial that raises ValueError (an impossible
combination) or runs out of memory is recorded as FAILED, with the reason in its user attribute ``error``, and
the study goes on.

Storage and resuming: studies live in an SQLite file (``<out>/optuna.db``) or any database URL; a study is run
until it holds `n_trials` finished (complete or pruned) trials, so running the same command again after a stop
resumes it, and a larger `n_trials` extends it. Several machines may work on one study through a shared database.
A trial whose process was killed is marked FAILED once its heartbeat is older than the grace period.

The study folder, ``<out>/optuna/<study>/``:

    best_params.json        the best trial's architecture in the myCAE_optuna params schema (--params FILE)
    best_trial.json         its number, value, objective, training settings, the command that retrains it and
                            the retrained run folder
    params/trial_NNNN.json  the params of each trial that has been best (a retrained run's config points here,
                            so a later, better trial never changes what an existing run was built from)
    trials/trial_NNNN/      each trial's config.json and history.csv (it trains through the same fit loop as
                            train.py, utils.training.fit_model; its checkpoints are removed when it ends)
    plots/                  optimization_history.png, param_importances.png, parallel_coordinate.png

The best trial is retrained, not reused: trials keep no weights (a long study would fill the disk), and the
retrained run gets everything an ordinary run has (checkpoints, calibration, plots). If the best trial has not
changed since the last retrain and its run folder still exists, that run is reused.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from utils import data as data_module
from utils import run as run_module
from utils.config import TrainConfig, command_line

log = logging.getLogger(__name__)

OBJECTIVES = ("val_loss", "auroc")
STORAGE_FILE = "optuna.db"  # inside TrainConfig.out
STUDIES_DIR = "optuna"  # study folders: <out>/optuna/<study>/
TRIALS_DIR = "trials"  # <study folder>/trials/trial_NNNN/: each trial's config.json and history.csv
FINISHED_STATES = ("COMPLETE", "PRUNED")  # the trials that count towards n_trials
HEARTBEAT_INTERVAL_S = 60  # a running trial writes a heartbeat this often ...
HEARTBEAT_GRACE_S = 180  # ... and is marked FAILED when its last one is older than this (its process died)
MIN_LATENT_SIZE = 2  # levels are capped so the code keeps at least 2 × 2 positions


@dataclass(frozen=True)
class SearchSpace:
    """What Optuna may choose from. Tuples of values are categorical; (low, high) pairs are ranges."""

    filters: tuple[int, ...] = (16, 32, 64, 128)  # width choices, drawn separately for every level
    levels: tuple[int, int] = (2, 5)  # inclusive range, capped by what the image size allows
    convs_per_level: tuple[int, int] = (1, 3)  # inclusive range
    kernel_size: tuple[int, ...] = (3, 5)
    latent_channels: tuple[int, ...] = (4, 8, 16, 32, 64)
    activation: tuple[str, ...] | None = None  # None: every activation myCAE offers (models.validation.ACTIVATIONS)
    batch_norm: tuple[bool, ...] = (False, True)
    lr: tuple[float, float] = (1e-4, 3e-3)  # log-uniform range of the Adam learning rate
    batch_size: tuple[int, ...] = (4, 8, 16)
    loss: tuple[str, ...] = ("ssim", "ssim_l1", "l2")
    noise: tuple[bool, ...] = (False, True)  # denoising training on or off


@dataclass
class StudyOutcome:
    """What run_study leaves behind."""

    study_name: str
    storage: str
    study_dir: Path  # <out>/optuna/<study>/
    best_params_path: Path  # best_params.json (myCAE_optuna params schema)
    best_value: float
    run_dir: Path | None  # the best trial retrained (None with retrain=False)
    trial_counts: dict  # state name → number of trials in the study


@dataclass
class StudyContext:
    """Everything a trial needs that does not change between trials: chosen once, before the first trial."""

    config: TrainConfig
    objective: str
    space: SearchSpace
    max_levels: int
    train_files: list
    validation_files: list
    tuning_images: list  # decoded labelled images for the auroc objective (empty for val_loss)
    tuning_labels: np.ndarray  # True = defective
    study_dir: Path  # <out>/optuna/<study>/: trial folders, best params, plots


# ---------------------------------------------------------------- checks and set-up


def validate_study(config: TrainConfig, *, n_trials: int, objective: str, tuning_data: str | None) -> None:
    """Fail before any trial runs, with messages that echo the bad value."""
    from utils.training import validate

    if not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"--optuna needs a positive number of trials; got {n_trials!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"--objective must be one of {', '.join(OBJECTIVES)}; got {objective!r}")
    if config.model not in ("myCAE", "myCAE_optuna"):
        raise ValueError(f"--optuna tunes myCAE (into myCAE_optuna); got --model {config.model!r}")
    if config.params is not None:
        raise ValueError(f"--optuna writes its own params file; got --params {config.params!r}")
    if config.distribute != "none":
        raise ValueError(f"--optuna trains each trial on one device; got --distribute {config.distribute!r}. "
                         "To spread a study over machines, run the same command on each with a shared --storage.")
    if config.validation_split <= 0:
        raise ValueError("--optuna scores trials on held-out images; "
                         f"got --validation-split {config.validation_split!r}")
    if objective == "auroc" and tuning_data is None:
        raise ValueError("--objective auroc needs --tuning-data DIR (labelled good/ and <defect>/ images)")
    if objective != "auroc" and tuning_data is not None:
        raise ValueError(f"--tuning-data is only used with --objective auroc; got --objective {objective!r}")
    validate(dataclasses.replace(config, model="myCAE"))


def level_limit(size: int, space: SearchSpace) -> int:
    """The most levels the search may use at `size`: each level halves the image, which must stay divisible."""
    low, high = space.levels
    limit = 0
    while limit < high and size % 2 ** (limit + 1) == 0 and size // 2 ** (limit + 1) >= MIN_LATENT_SIZE:
        limit += 1
    if limit < low:
        raise ValueError(f"--size {size} allows at most {limit} level(s) (halvings down to a {MIN_LATENT_SIZE} px "
                         f"code); the search space starts at {low}. Use a size that is a multiple of {2 ** low}.")
    return limit


def check_tuning_data(tuning_data: str | Path, data_root: Path) -> list:
    """Labelled tuning items; the training set's own test split is refused: results are reported on it."""
    folder = Path(tuning_data).resolve()
    if folder in (data_root.resolve(), (data_root / "test").resolve()):
        raise ValueError(f"--tuning-data {str(tuning_data)!r} is the test set of --data, the set results are "
                         "reported on. Tune on a separate labelled split (good/ and <defect>/ folders).")
    items = data_module.find_test_items(folder)
    labels = {item.is_defective for item in items}
    if len(labels) < 2:
        raise ValueError(f"--tuning-data {str(tuning_data)!r} needs both good and defective images for AUROC.")
    return items


def make_context(config: TrainConfig, layout, *, objective: str, tuning_data: str | None, space: SearchSpace,
                 study_name: str) -> StudyContext:
    """Split the training images of `layout` (data.find_layout's) as a retrain does and load the tuning set."""
    root = layout.root
    train_files, validation_files = data_module.split_validation(
        layout.train_files, fraction=config.validation_split, seed=config.seed)
    images, labels = [], []
    if objective == "auroc":
        items = check_tuning_data(tuning_data, root)
        images = [data_module.decode_image(item.path) for item in items]
        labels = [item.is_defective for item in items]
    return StudyContext(config=dataclasses.replace(config, data=str(root)), objective=objective, space=space,
                        max_levels=level_limit(config.size, space), train_files=train_files,
                        validation_files=validation_files, tuning_images=images,
                        tuning_labels=np.array(labels, dtype=bool), study_dir=study_folder(config, study_name))


def study_folder(config: TrainConfig, study_name: str) -> Path:
    return Path(config.out) / STUDIES_DIR / run_module.safe_name(study_name)


def default_study_name(config: TrainConfig, dataset: str) -> str:
    """myCAE_<dataset>_<size>px_<color>: results at one size and colour mode are only comparable among themselves."""
    return f"myCAE_{run_module.safe_name(dataset)}_{config.size}px_{config.color}"


def default_storage(config: TrainConfig) -> str:
    path = Path(config.out) / STORAGE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


# ---------------------------------------------------------------- the study


def open_study(name: str, storage_url: str, *, context: StudyContext, pruner):
    """Create the study or load it to resume; a resumed study must have the same objective, size and colour."""
    import optuna

    from sqlalchemy.exc import ArgumentError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
        try:
            storage = optuna.storages.RDBStorage(storage_url, heartbeat_interval=HEARTBEAT_INTERVAL_S,
                                                 grace_period=HEARTBEAT_GRACE_S)
        except ArgumentError:
            raise ValueError(f"--storage {printable_url(storage_url)!r} is not a database URL; e.g. "
                             "sqlite:///saved_models/optuna.db or postgresql://user@host/optuna") from None
    direction = "maximize" if context.objective == "auroc" else "minimize"
    # Unseeded sampler: a resumed study or a second machine must not replay the same random first trials.
    study = optuna.create_study(study_name=name, storage=storage, direction=direction, load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(), pruner=pruner or default_pruner())
    settings = {"objective": context.objective, "size": context.config.size, "color": context.config.color}
    if not study.user_attrs:
        for key, value in {**settings, "data": context.config.data, "epochs": context.config.epochs}.items():
            study.set_user_attr(key, value)
    recorded = {key: study.user_attrs.get(key) for key in settings}
    if recorded != settings or study.direction.name.lower() != direction:
        raise ValueError(f"Study {name!r} was created with {recorded}; this call asks for {settings}. "
                         "Resume it with the same settings or pass a new --study NAME.")
    return study


def default_pruner():
    """Median rule: after 2 warm-up epochs, stop a trial worse than the median of earlier trials at that epoch."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)


def count_states(study) -> dict:
    counts: dict = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def run_study(config: TrainConfig, *, n_trials: int, study_name: str | None = None, storage: str | None = None,
              objective: str = "val_loss", tuning_data: str | None = None, space: SearchSpace = SearchSpace(),
              pruner=None, retrain: bool = True) -> StudyOutcome:
    """Run (or resume) the study until it holds `n_trials` finished trials, then save and retrain its best.

    config: data, size, color, epochs (per trial), seed, out, validation_split, patience, augment and
    synthetic_defects apply to every trial; model, loss, lr, batch_size and noise are chosen by the search.
    pruner: an optuna pruner (default: `default_pruner()`). Returns a StudyOutcome; see the module docstring for
    the study folder.
    """
    import optuna

    from utils.training import resolve_data_root, with_colour_resolved

    validate_study(config, n_trials=n_trials, objective=objective, tuning_data=tuning_data)
    layout = data_module.find_layout(resolve_data_root(config))  # listed once, for all that follows
    config = with_colour_resolved(config, layout.train_files)
    name = study_name or default_study_name(config, layout.name)
    context = make_context(config, layout, objective=objective, tuning_data=tuning_data, space=space, study_name=name)
    storage_url = storage or default_storage(config)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our one line per trial replaces Optuna's
    study = open_study(name, storage_url, context=context, pruner=pruner)
    remaining = n_trials - sum(count_states(study).get(state, 0) for state in FINISHED_STATES)
    print(f"Study {name!r} ({printable_url(storage_url)}): {describe_counts(count_states(study))}; "
          f"{max(0, remaining)} more trial(s) to reach {n_trials} finished.", flush=True)
    if remaining > 0:
        optimize(study, context, n_trials=n_trials, remaining=remaining)
    return finish_study(study, storage_url, context, retrain=retrain)


def optimize(study, context: StudyContext, *, n_trials: int, remaining: int) -> None:
    """Run up to `remaining` trials; other workers' trials count too (the study stops at n_trials finished)."""
    import optuna

    stop_at_total = optuna.study.MaxTrialsCallback(
        n_trials, states=tuple(optuna.trial.TrialState[state] for state in FINISHED_STATES))
    try:
        study.optimize(lambda trial: run_trial(trial, context), n_trials=remaining, gc_after_trial=True,
                       catch=failure_types(), callbacks=[print_progress, stop_at_total])
    except KeyboardInterrupt:
        # Optuna has already recorded the interrupted trial as FAILED; finished trials are safe in the database.
        print(f"Study {study.study_name!r} stopped: {describe_counts(count_states(study))}. "
              "Run the same command again to resume it.", file=sys.stderr, flush=True)
        raise


def describe_counts(counts: dict) -> str:
    """{"COMPLETE": 3, "PRUNED": 1} → "3 complete, 1 pruned"."""
    return ", ".join(f"{number} {state.lower()}" for state, number in sorted(counts.items())) or "no trials yet"


def printable_url(url: str) -> str:
    """The storage URL with any password masked, fit for logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a database URL, so no password to find in it; RDBStorage will refuse it
        return url


def failure_types() -> tuple:
    """Exceptions that fail one trial but not the study: impossible combinations and running out of memory."""
    import tensorflow as tf

    return (ValueError, MemoryError, tf.errors.ResourceExhaustedError)


# ---------------------------------------------------------------- one trial


def suggest(trial, space: SearchSpace, max_levels: int) -> tuple[dict, dict]:
    """(myCAE hyperparameters, training settings) drawn for `trial`; filters get one width per level."""
    from models.validation import ACTIVATIONS

    levels = trial.suggest_int("levels", space.levels[0], max_levels)
    filters = [trial.suggest_categorical(f"filters_level{level}", space.filters) for level in range(1, levels + 1)]
    model_params = {
        "filters": filters,
        "levels": levels,
        "convs_per_level": trial.suggest_int("convs_per_level", *space.convs_per_level),
        "kernel_size": trial.suggest_categorical("kernel_size", space.kernel_size),
        "latent_channels": trial.suggest_categorical("latent_channels", space.latent_channels),
        "activation": trial.suggest_categorical("activation", space.activation or ACTIVATIONS),
        "batch_norm": trial.suggest_categorical("batch_norm", space.batch_norm),
    }
    training = {
        "lr": trial.suggest_float("lr", *space.lr, log=True),
        "batch_size": trial.suggest_categorical("batch_size", space.batch_size),
        "loss": trial.suggest_categorical("loss", space.loss),
        "noise": trial.suggest_categorical("noise", space.noise),
    }
    return model_params, training


def split_params(params: dict) -> tuple[dict, dict]:
    """A finished trial's flat Optuna params → (myCAE_optuna params, training settings)."""
    from models.my_cae import MY_CAE_HPARAMS

    filters = [params[f"filters_level{level}"] for level in range(1, params["levels"] + 1)]
    model_params = {name: filters if name == "filters" else params[name] for name in MY_CAE_HPARAMS}
    training = {name: params[name] for name in ("lr", "batch_size", "loss", "noise")}
    return model_params, training


class PruningReporter:
    """Reports each epoch's validation SSIM to the trial; stops training (not the process) when told to prune.

    Optuna's own Keras callback lives in a separate package; this is all that is needed here.
    """

    def __init__(self, trial, *, maximize: bool):
        self.trial, self.maximize = trial, maximize
        self.pruned_after_epoch: int | None = None

    def callback(self):
        import keras

        reporter = self

        class Report(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                ssim = float((logs or {})["val_ssim"])
                reporter.trial.report(ssim if reporter.maximize else 1.0 - ssim, step=epoch)
                if reporter.trial.should_prune():
                    reporter.pruned_after_epoch = epoch + 1
                    self.model.stop_training = True

        return Report()


def run_trial(trial, context: StudyContext) -> float:
    """Build, train and score one trial; the failure reason, if any, is kept as the trial's user attribute."""
    import keras
    import optuna

    keras.backend.clear_session()  # each trial starts from an empty graph: memory does not grow over a study
    started = time.time()
    try:
        return train_trial(trial, context)
    except optuna.TrialPruned:
        raise
    except Exception as error:
        trial.set_user_attr("error", f"{type(error).__name__}: {error}"[:500])
        raise
    finally:
        trial.set_user_attr("wall_time_s", round(time.time() - started, 1))
        keras.backend.clear_session()


def train_trial(trial, context: StudyContext) -> float:
    """Train myCAE with the trial's choices through the one fit loop; returns the objective value (raises
    TrialPruned when pruned). The trial's folder holds its config, history log and, while it trains, checkpoints."""
    import optuna

    from utils.training import fit_model, make_run_config

    model_params, training = suggest(trial, context.space, context.max_levels)
    trial_config = dataclasses.replace(context.config, model="myCAE", hparams=model_params, **training)
    trial_dir = context.study_dir / TRIALS_DIR / f"trial_{trial.number:04d}"
    trial_dir.mkdir(parents=True, exist_ok=True)
    run_config = make_run_config(trial_config, Path(trial_config.data),
                                 (context.train_files, context.validation_files))
    run_module.write_json(trial_dir / run_module.CONFIG_FILE, run_config)
    reporter = PruningReporter(trial, maximize=context.objective == "auroc")
    outcome = fit_model(trial_config, trial_dir, run_config, callbacks=[reporter.callback()], keep_checkpoint=False,
                        verbose=1 if sys.stdout.isatty() else 0)
    ssim_losses = [1.0 - value for value in outcome.history["val_ssim"]]
    trial.set_user_attr("epochs_run", len(ssim_losses))
    trial.set_user_attr("val_ssim_loss", float(min(ssim_losses)))
    if reporter.pruned_after_epoch is not None:
        raise optuna.TrialPruned(f"pruned after epoch {reporter.pruned_after_epoch}")
    if context.objective == "val_loss":
        return float(min(ssim_losses))
    return tuning_auroc(outcome.model, trial_dir, context)


def tuning_auroc(model, trial_dir: Path, context: StudyContext) -> float:
    """Image AUROC on the tuning split through the Inspector, scored as the calibrated rule scores.

    The trial's model is saved into its folder and loaded back like any run (load_run is the one way to an
    Inspector), then deleted: trials keep no weights."""
    from utils.blobs import blob_score
    from utils.calibration import default_min_area
    from utils.inspector import Inspector
    from utils.metrics import image_auroc

    model_path = trial_dir / run_module.MODEL_FILE
    run_module.save_model(model, model_path)
    try:
        # The seed rule needs no calibration; only the maps are used, and the score (the highest threshold at
        # which a blob of the default min area survives) does not depend on a threshold.
        inspector = Inspector(run_module.load_run(trial_dir), decision="seed", batch_size=context.config.batch_size)
        maps = inspector.maps_for(context.tuning_images)[2]
    finally:
        model_path.unlink(missing_ok=True)
    min_area = default_min_area(context.config.size)
    return float(image_auroc(context.tuning_labels, [blob_score(anomaly_map, min_area) for anomaly_map in maps]))


def print_progress(study, trial) -> None:
    """One line per finished trial on stdout: state, value, the best so far and the choices."""
    value = "" if trial.value is None else f" value {trial.value:.4f}"
    try:
        best = f" | best {study.best_value:.4f} (trial {study.best_trial.number})"
    except ValueError:  # no completed trial yet
        best = ""
    detail = trial.user_attrs.get("error", "")
    if trial.state.name == "PRUNED":
        detail = f"pruned after {trial.user_attrs.get('epochs_run', '?')} epoch(s)"
    params = ", ".join(f"{key}={value:.2g}" if isinstance(value, float) else f"{key}={value}"
                       for key, value in trial.params.items())
    print(f"trial {trial.number} {trial.state.name}{value}{best} | {trial.user_attrs.get('wall_time_s', '?')} s "
          f"| {params}{' | ' + detail if detail else ''}", flush=True)


# ---------------------------------------------------------------- after the trials


def finish_study(study, storage_url: str, context: StudyContext, *, retrain: bool) -> StudyOutcome:
    """Write best params, summary and plots into the study folder; retrain the best trial as a run folder."""
    counts = count_states(study)
    if not counts.get("COMPLETE"):
        raise ValueError(f"Study {study.study_name!r} has no completed trial yet ({counts or 'no trials'}); the "
                         "failed trials' reasons are printed above. Run more trials or widen the search.")
    study_dir = context.study_dir
    best = study.best_trial
    model_params, training = split_params(best.params)
    trial_params_path = study_dir / "params" / f"trial_{best.number:04d}.json"
    trial_params_path.parent.mkdir(parents=True, exist_ok=True)
    run_module.write_json(trial_params_path, model_params)
    best_params_path = study_dir / "best_params.json"
    run_module.write_json(best_params_path, model_params)
    save_study_plots(study, study_dir / "plots")
    summary_path = study_dir / "best_trial.json"
    summary = best_trial_summary(study, best, context, trial_params_path, training)
    run_dir = reusable_run(summary_path, best.number) if retrain else None
    if retrain and run_dir is None:
        run_dir = retrain_best(context.config, trial_params_path, training)
    summary["run_dir"] = None if run_dir is None else str(run_dir)
    run_module.write_json(summary_path, summary)
    print(f"Best trial {best.number}: {context.objective} {best.value:.4f}; params in {best_params_path}", flush=True)
    return StudyOutcome(study_name=study.study_name, storage=storage_url, study_dir=study_dir,
                        best_params_path=best_params_path, best_value=float(best.value), run_dir=run_dir,
                        trial_counts=counts)


def best_trial_summary(study, best, context: StudyContext, params_path: Path, training: dict) -> dict:
    """best_trial.json: what the best trial was, how it scored, and the command that retrains it."""
    command = command_line(retrain_config(context.config, params_path, training))
    return {"study": study.study_name, "trial": best.number, "objective": context.objective, "value": best.value,
            "direction": study.direction.name.lower(), "params_file": str(params_path), "training": training,
            "optuna_params": best.params, "epochs_run": best.user_attrs.get("epochs_run"),
            "trial_counts": count_states(study), "retrain_command": command}


def reusable_run(summary_path: Path, best_number: int) -> Path | None:
    """The run folder retrained earlier for this same best trial, if it is still there."""
    if not summary_path.is_file():
        return None
    previous = run_module.read_json(summary_path)
    run_dir = previous.get("run_dir")
    if previous.get("trial") != best_number or not run_dir:
        return None
    return Path(run_dir) if (Path(run_dir) / run_module.MODEL_FILE).is_file() else None


def retrain_best(config: TrainConfig, params_path: Path, training: dict) -> Path:
    """Train myCAE_optuna from the best params with the best trial's training settings: an ordinary run folder."""
    import keras

    from utils.training import train

    keras.backend.clear_session()
    print(f"Retraining the best trial as myCAE_optuna from {params_path} ...", flush=True)
    return train(retrain_config(config, params_path, training))


def retrain_config(config: TrainConfig, params_path: Path, training: dict) -> TrainConfig:
    """The study's options with the best trial's architecture (as myCAE_optuna's params file) and training."""
    return dataclasses.replace(config, model="myCAE_optuna", params=str(params_path), hparams={}, **training)


def save_study_plots(study, plots_dir: Path) -> list[Path]:
    """Optuna's matplotlib plots as PNG; a plot the study cannot give yet is skipped with a note in the log."""
    import matplotlib
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as optuna_plots

    plots = {"optimization_history": optuna_plots.plot_optimization_history,
             "param_importances": optuna_plots.plot_param_importances,
             "parallel_coordinate": optuna_plots.plot_parallel_coordinate}
    completed = count_states(study).get("COMPLETE", 0)
    plots_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, plot in plots.items():
        if name == "param_importances" and completed < 2:
            log.info("param_importances.png skipped: it needs at least 2 completed trials (have %d).", completed)
            continue
        # Optuna's plots set a global style sheet; rc_context puts matplotlib's settings back afterwards.
        with matplotlib.rc_context(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the matplotlib backend is marked experimental
            try:
                axes = plot(study)
            except (ValueError, RuntimeError) as error:  # e.g. importances of parameters that never varied
                log.info("%s.png skipped: %s", name, error)
                continue
            figure = np.ravel(axes)[0].figure
            if name == "parallel_coordinate":  # one vertical axis per parameter: give each room for its labels
                figure.set_size_inches(max(8.0, 1.1 * len(study.best_trial.params) + 2), 6)
            figure.savefig(plots_dir / f"{name}.png", dpi=100, bbox_inches="tight")
            plt.close(figure)
        written.append(plots_dir / f"{name}.png")
    return written

"""The run folder: where a trained model, its configuration and its calibration live together.

    saved_models/<YYYYmmdd-HHMMSS>_<model>_<dataset>/
        model.keras, encoder.keras, config.json, calibration.json, history.json, history.csv, plots/, test/, results/

`load_run` is the only way a script obtains a model with its preprocessing and threshold; a damaged run file is a
one-line ValueError naming it and what to do. Every write here is atomic (written beside the target, then
renamed), so a run killed mid-save never leaves a half-written file; written files get the mode the umask gives
any new file (0644 under umask 022), so the line can run as another user than training did.
"""
from __future__ import annotations

import functools
import json
import os
import re
import secrets
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_RUNS_DIR = Path("saved_models")
MODEL_FILE = "model.keras"
ENCODER_FILE = "encoder.keras"
CONFIG_FILE = "config.json"
CALIBRATION_FILE = "calibration.json"


@dataclass
class Run:
    """A loaded run: the Keras models, config.json and calibration.json (None before calibration).

    `autoencoder` is the model the spec built (its outputs go to the anomaly map); the spec, preprocessing step
    and anomaly map are resolved from config.json.
    """

    path: Path
    autoencoder: Any
    encoder: Any
    config: dict
    calibration: dict | None

    @functools.cached_property
    def spec(self):
        import models

        return models.spec(self.config["model"], head=bool(self.config.get("head", False)))

    @property
    def anomaly_map(self):
        """The run's anomaly map (runs from before anomaly maps were choosable used 1 − SSIM)."""
        return self.spec.anomaly_map(self.config.get("anomaly_map"), model=self.config["model"])

    @functools.cached_property
    def preprocessing(self):
        from utils import preprocessing

        record = self.config.get("preprocessing")
        if record is None:  # runs from before the preprocessing step was recorded: they all stretched
            record = {"mode": "stretch", "size": self.config["input_shape"][0],
                      "color_mode": self.config.get("color_mode") or self.config.get("color", "grayscale")}
        return preprocessing.from_record(record)

    @property
    def size(self) -> int:
        return self.preprocessing.size

    @property
    def color_mode(self) -> str:
        return self.preprocessing.color_mode


def safe_name(text: str, *, default: str = "data") -> str:
    """A folder-name-safe version of `text` (letters, digits, '-', '_' and '.'), never empty, "." or ".." and
    never hidden: leading and trailing '-', '_' and '.' are dropped; `default` when nothing is left."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-_.") or default


def new_run_dir(out: str | Path, model_name: str, dataset_name: str) -> Path:
    """Create and return saved_models/<timestamp>_<model>_<dataset>/ (a suffix is added on a clash)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(out) / f"{stamp}_{safe_name(model_name)}_{safe_name(dataset_name)}"
    path, counter = base, 1
    while path.exists():
        counter += 1
        path = base.with_name(f"{base.name}-{counter}")
    (path / "plots").mkdir(parents=True)
    return path


def _temporary_path(path: Path, suffix: str) -> Path:
    """A fresh name beside `path` for an atomic write. Not created here: mkstemp would create it at mode 0600,
    and the renamed file would keep that mode; whoever creates it (open, Keras) gets the umask's mode."""
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}{suffix}")


def write_json(path: str | Path, data: Any) -> None:
    """Write `data` as indented JSON, atomically."""
    path = Path(path)
    temporary = _temporary_path(path, ".json")
    try:
        with open(temporary, "x", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, default=str)
            handle.write("\n")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def append_rows(path: str | Path, rows: list) -> None:
    """Add `rows` to the JSON list in `path` (a new file when there is none), atomically: benchmark results."""
    path = Path(path)
    write_json(path, (read_json(path) if path.is_file() else []) + list(rows))


def read_json(path: str | Path) -> Any:
    """The JSON content of `path`; a ValueError naming the file when it is not valid JSON."""
    with open(path, encoding="utf-8") as handle:
        try:
            return json.load(handle)
        except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
            raise ValueError(f"{str(path)!r} is not valid JSON ({error})") from error


def save_model(model, path: str | Path) -> None:
    """model.save(path), atomically (Keras needs the temporary name to end in .keras)."""
    path = Path(path)
    temporary = _temporary_path(path, ".keras")
    try:
        model.save(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def check_writable_folder(folder: str | Path, *, advice: str = "make it a writable folder") -> None:
    """Raise a one-line ValueError naming `folder` (and the file in its way) unless files can be written in it.

    Folders created to find out are removed again, so the check leaves no trace; run it before long work whose
    results go to `folder`.
    """
    folder = Path(folder)
    missing = [path for path in (folder, *folder.parents) if not path.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        blocker = next((path for path in (folder, *folder.parents) if path.exists()), None)
        reason = (f"{str(blocker)!r} is a file, not a folder" if blocker is not None and not blocker.is_dir()
                  else error.strerror or str(error))
        raise ValueError(f"Cannot write to {str(folder)!r}: {reason}; {advice}.") from error
    finally:
        for path in missing:  # only the folders this check created, and only while empty
            try:
                path.rmdir()
            except OSError:
                pass


def list_runs(runs_dir: str | Path = DEFAULT_RUNS_DIR) -> list[Path]:
    """Run folders holding a model, oldest first (names start with a sortable timestamp)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return sorted(path for path in runs_dir.iterdir() if (path / MODEL_FILE).is_file())


def resolve_run(path: str | Path | None, *, runs_dir: str | Path = DEFAULT_RUNS_DIR) -> Path:
    """`path` as a run folder, or the newest run in `runs_dir` when `path` is None."""
    if path is None:
        runs = list_runs(runs_dir)
        if not runs:
            raise ValueError(f"No trained run in {str(runs_dir)!r}: train one with `python train.py` "
                             "or pass --model RUN_FOLDER.")
        return runs[-1]
    path = Path(path)
    if not (path / MODEL_FILE).is_file() or not (path / CONFIG_FILE).is_file():
        raise ValueError(f"{str(path)!r} is not a run folder: it needs {MODEL_FILE} and {CONFIG_FILE} "
                         "(as written by train.py).")
    return path


def load_run(path: str | Path | None = None, *, runs_dir: str | Path = DEFAULT_RUNS_DIR,
             with_models: bool = True) -> Run:
    """Load a run folder (default: the newest in `runs_dir`): models with compile=False, config, calibration.

    ``with_models=False`` leaves the Keras models out (autoencoder and encoder None) and imports neither Keras nor
    TensorFlow: what the line needs to inspect from an export (utils/export.py).
    A file that is there but damaged is a one-line ValueError naming it and what to do."""
    path = resolve_run(path, runs_dir=runs_dir)
    restore_or_retrain = "restore the file from a backup, or retrain the run with `python train.py`"
    config = _read_run_json(path / CONFIG_FILE, restore_or_retrain)
    if "model" not in config:
        raise ValueError(f"{str(path / CONFIG_FILE)!r} names no model: {restore_or_retrain}.")
    autoencoder = _load_keras_file(path / MODEL_FILE) if with_models else None
    encoder_path = path / ENCODER_FILE
    encoder = _load_keras_file(encoder_path) if with_models and encoder_path.is_file() else None
    calibration_path = path / CALIBRATION_FILE
    calibration = (_read_run_json(calibration_path, f"recalibrate with `python train.py --calibrate {path}`")
                   if calibration_path.is_file() else None)
    return Run(path, autoencoder, encoder, config, calibration)


def _read_run_json(path: Path, advice: str) -> dict:
    try:
        content = read_json(path)
    except (ValueError, OSError) as error:
        raise ValueError(f"{_one_line(error)}: {advice}.") from error
    if not isinstance(content, dict):
        raise ValueError(f"{str(path)!r} holds a JSON {type(content).__name__}, not an object: {advice}.")
    return content


def _load_keras_file(path: Path):
    """keras.models.load_model(path, compile=False), with a damaged file named as damaged (Keras says "File not
    found" for a truncated .keras file, which is a zip archive)."""
    from utils.tensorflow_startup import import_tensorflow

    import_tensorflow()  # quietly, before Keras imports it
    import keras

    advice = "retrain the run with `python train.py`, or restore the file from a backup"
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{str(path)!r} is damaged (not a complete .keras archive; truncated?): {advice}.")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 — a damaged archive fails in many ways (zip, JSON, HDF5, layers)
        raise ValueError(f"{str(path)!r} cannot be loaded ({type(error).__name__}: {_one_line(error)}): "
                         f"{advice}.") from error


def _one_line(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"

"""The run folder: where a trained model, its configuration and its calibration live together.

    saved_models/<YYYYmmdd-HHMMSS>_<model>_<dataset>/
        model.keras, encoder.keras, config.json, calibration.json, history.json, history.csv, plots/, test/, results/

`load_run` is the only way a script obtains a model with its preprocessing and threshold. Every write here is
atomic (written beside the target, then renamed), so a run killed mid-save never leaves a half-written file.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import time
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

    @property
    def spec(self):
        import models

        return models.spec(self.config["model"], head=bool(self.config.get("head", False)))

    @property
    def anomaly_map(self):
        """The run's anomaly map (runs from before anomaly maps were choosable used 1 − SSIM)."""
        return self.spec.anomaly_map(self.config.get("anomaly_map"), model=self.config["model"])

    @property
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


def safe_name(text: str) -> str:
    """A folder-name-safe version of `text` (letters, digits, '-', '_' and '.')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "data"


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


def _atomic_target(path: Path, suffix: str) -> str:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(handle)
    return temporary


def write_json(path: str | Path, data: Any) -> None:
    """Write `data` as indented JSON, atomically."""
    path = Path(path)
    temporary = _atomic_target(path, ".json")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, default=str)
        handle.write("\n")
    os.replace(temporary, path)


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def save_model(model, path: str | Path) -> None:
    """model.save(path), atomically (Keras needs the temporary name to end in .keras)."""
    path = Path(path)
    temporary = _atomic_target(path, ".keras")
    try:
        model.save(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


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


def load_run(path: str | Path | None = None, *, runs_dir: str | Path = DEFAULT_RUNS_DIR) -> Run:
    """Load a run folder (default: the newest in `runs_dir`): models with compile=False, config, calibration."""
    import keras

    path = resolve_run(path, runs_dir=runs_dir)
    autoencoder = keras.models.load_model(path / MODEL_FILE, compile=False)
    encoder_path = path / ENCODER_FILE
    encoder = keras.models.load_model(encoder_path, compile=False) if encoder_path.is_file() else None
    calibration_path = path / CALIBRATION_FILE
    calibration = read_json(calibration_path) if calibration_path.is_file() else None
    return Run(path, autoencoder, encoder, read_json(path / CONFIG_FILE), calibration)

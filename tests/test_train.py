"""train.py end to end on a tiny demo set: the run folder, resuming, distribution, errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import PROJECT_ROOT, TINY_SIZE

RUN_FILES = ["model.keras", "encoder.keras", "config.json", "history.json", "history.csv",
             "plots/loss.png", "plots/metric.png"]


def run_script(*args: str, cwd: Path = PROJECT_ROOT, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(extra_env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def test_tiny_run_folder_is_complete(tiny_run):
    for name in RUN_FILES:
        assert (tiny_run / name).is_file(), name
    assert (tiny_run / "plots" / "model.png").is_file() or (tiny_run / "plots" / "model.txt").is_file()
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["model"] == "myCAE" and config["input_shape"] == [TINY_SIZE, TINY_SIZE, 1]
    assert config["epochs_run"] == 2 and config["status"] == "trained"
    for key in ("loss", "batch_size", "lr", "seed", "data", "versions", "git_commit", "wall_time_s", "hparams"):
        assert key in config
    history = json.loads((tiny_run / "history.json").read_text())
    assert len(history["loss"]) == 2 and len(history["val_loss"]) == 2


def test_saved_model_reloads_safely_with_identical_predictions(tiny_run):
    import keras

    from utils.run import load_run

    run = load_run(tiny_run)
    reloaded = keras.models.load_model(tiny_run / "model.keras", compile=False, safe_mode=True)
    images = np.random.default_rng(0).random((2, TINY_SIZE, TINY_SIZE, 1), dtype=np.float32)
    np.testing.assert_array_equal(run.autoencoder.predict(images, verbose=0), reloaded.predict(images, verbose=0))
    assert run.encoder is not None and run.size == TINY_SIZE and run.color_mode == "grayscale"


def test_cli_trains_resumes_and_prints_the_run_folder_last(tiny_demo, tmp_path):
    first = run_script("train.py", "--data", str(tiny_demo), "--size", "64", "--epochs", "1", "--batch-size", "8",
                       "--out", str(tmp_path), "--model", "mvtecCAE", "--synthetic-defects")
    assert first.returncode == 0, first.stderr[-2000:]
    run_dir = Path(first.stdout.strip().splitlines()[-1])
    assert run_dir.parent == tmp_path and (run_dir / "model.keras").is_file()
    resumed = run_script("train.py", "--resume", str(run_dir), "--epochs", "3")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert resumed.stdout.strip().splitlines()[-1] == str(run_dir)
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history["loss"]) == 3  # 1 epoch, then epochs 2 and 3 after the resume
    config = json.loads((run_dir / "config.json").read_text())
    assert config["epochs_run"] == 3
    assert config["synthetic_defects"] and "train_config" not in config  # the resume kept the recipe


@pytest.mark.parametrize("model_name", ["mvtecCAE", "baselineCAE", "inceptionCAE", "resnetCAE", "skipCAE",
                                        "myCAE", "myCAE_optuna"])
def test_every_model_trains_one_epoch_at_64_px(tiny_demo, tmp_path, model_name):
    from utils.config import TrainConfig
    from utils.training import train

    run_dir = train(TrainConfig(data=str(tiny_demo), model=model_name, size=64, epochs=1, batch_size=8,
                                out=str(tmp_path), hparams={"filters": 8} if model_name == "myCAE_optuna" else {}))
    assert (run_dir / "model.keras").is_file()
    history = json.loads((run_dir / "history.json").read_text())
    assert np.isfinite(history["loss"][0]) and np.isfinite(history["val_loss"][0])


@pytest.mark.parametrize("flags, message", [
    (["--model", "noSuchCAE"], "myCAE"),
    (["--loss", "mssim", "--size", "64"], "176"),
    (["--data", "no/such/folder"], "train/good"),
])
def test_bad_options_exit_2_with_a_helpful_message(tmp_path, flags, message):
    result = run_script("train.py", "--out", str(tmp_path), "--epochs", "1", "--size", "32", *flags)
    assert result.returncode == 2
    assert message in result.stderr


MIRRORED_SCRIPT = """
import sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[3])
from utils.config import TrainConfig
from utils.training import train
run = train(TrainConfig(data=sys.argv[1], out=sys.argv[2], size=32, epochs=1, batch_size=2, distribute="mirrored"))
print(run)
"""


def test_mirrored_training_on_two_logical_cpus_runs_and_saves(tiny_demo, tmp_path):
    result = run_script("-c", MIRRORED_SCRIPT, str(tiny_demo), str(tmp_path), str(PROJECT_ROOT))
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    config = json.loads((run_dir / "config.json").read_text())
    assert config["replicas"] == 2 and config["distribute"] == "mirrored"
    assert (run_dir / "model.keras").is_file()

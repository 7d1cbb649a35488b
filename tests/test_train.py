"""train.py end to end on a tiny demo set: the run folder, resuming, distribution, errors."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import PROJECT_ROOT, TINY_SIZE
from test_tensorflow_startup import assert_quiet_start

RUN_FILES = ["model.keras", "encoder.keras", "config.json", "history.json", "history.csv",
             "plots/loss.png", "plots/metric.png"]


def run_script(*args: str, cwd: Path = PROJECT_ROOT, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(extra_env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def load_script(name: str):
    """A script of the project (test.py, IoU_test.py…) as a module, to call its main(argv) in this process.

    Loaded from its file under a private name: `test` would be the standard library's regression-test package."""
    spec = importlib.util.spec_from_file_location(f"aivision_script_{Path(name).stem}", PROJECT_ROOT / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def test_color_auto_trains_the_demo_in_colour_and_grey_photos_in_grey(tiny_demo, tmp_path):
    """--color auto decides from the training photos and records what it decided, so the run's config.json
    repeats it."""
    import shutil

    import cv2

    from utils.config import TrainConfig
    from utils.training import train

    grey_set = tmp_path / "grey"
    shutil.copytree(tiny_demo / "train", grey_set / "train")
    for path in (grey_set / "train").rglob("*.png"):
        cv2.imwrite(str(path), cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2GRAY))
    for root, color, channels in ((tiny_demo, "rgb", 3), (grey_set, "grayscale", 1)):
        run_dir = train(TrainConfig(data=str(root), model="myCAE", size=TINY_SIZE, epochs=1, batch_size=4,
                                    color="auto", out=str(tmp_path / "runs")))
        config = json.loads((run_dir / "config.json").read_text())
        assert (config["color"], config["preprocessing"]["color_mode"]) == (color, color)
        assert config["input_shape"][-1] == channels


def test_cli_trains_resumes_and_prints_the_run_folder_last(tiny_demo, tmp_path):
    first = run_script("train.py", "--data", str(tiny_demo), "--size", "64", "--epochs", "1", "--batch-size", "8",
                       "--out", str(tmp_path), "--recipe", "seed", "--model", "mvtecCAE", "--synthetic-defects",
                       "--threshold-from", "synthetic")
    assert first.returncode == 0, first.stderr[-2000:]
    assert_quiet_start(first.stderr)
    run_dir = Path(first.stdout.strip().splitlines()[-1])
    assert run_dir.parent == tmp_path and (run_dir / "model.keras").is_file()
    assert f"python IoU_test.py --model {run_dir} --data {tiny_demo}" in first.stdout  # what to try next
    assert "demo test set" not in first.stdout  # a user's own test split is not evaluated unasked
    resumed = run_script("train.py", "--resume", str(run_dir), "--epochs", "3")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert resumed.stdout.strip().splitlines()[-1] == str(run_dir)
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history["loss"]) == 3  # 1 epoch, then epochs 2 and 3 after the resume
    config = json.loads((run_dir / "config.json").read_text())
    assert config["epochs_run"] == 3
    assert config["synthetic_defects"] and "train_config" not in config  # the resume kept the recipe
    assert json.loads((run_dir / "calibration.json").read_text())["method"] == "synthetic"  # and its threshold rule


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


def test_history_is_written_every_epoch_and_a_rerun_epoch_replaces_its_record(tmp_path):
    """What a resume does after a kill: the epoch interrupted (or checkpointed late) runs again."""
    from utils.training import history_writer

    run_config = {"model": "myCAE", "status": "training"}
    first = history_writer(tmp_path, run_config)
    first.on_epoch_end(0, {"loss": 0.9, "val_loss": 0.8})
    assert json.loads((tmp_path / "history.json").read_text()) == {"loss": [0.9], "val_loss": [0.8]}
    assert json.loads((tmp_path / "config.json").read_text())["epochs_run"] == 1
    first.on_epoch_end(1, {"loss": 0.7, "val_loss": 0.6})
    resumed = history_writer(tmp_path, dict(run_config))  # a new process, reading what the killed one wrote
    resumed.on_epoch_end(1, {"loss": 0.5, "val_loss": 0.4})
    resumed.on_epoch_end(2, {"loss": 0.3, "val_loss": 0.2})
    assert json.loads((tmp_path / "history.json").read_text()) == {"loss": [0.9, 0.5, 0.3],
                                                                   "val_loss": [0.8, 0.4, 0.2]}
    assert json.loads((tmp_path / "config.json").read_text())["epochs_run"] == 3


def test_early_stopping_after_a_resume_counts_patience_from_the_best_epoch_before_the_kill(tmp_path):
    """Keras' EarlyStopping starts afresh at a resume: patience restarts, and the weights it restores at the end
    are the best since the resume, though an epoch before the kill was better."""
    import keras
    import numpy as np

    from utils.training import early_stopping, history_writer

    def model_with_weight(value: float):
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
        model.set_weights([np.full((1, 1), value, np.float32)])
        return model

    def epoch(callbacks, model, index: int, weight: float, val_loss: float) -> None:
        model.set_weights([np.full((1, 1), weight, np.float32)])
        for callback in callbacks:
            callback.on_epoch_end(index, {"loss": val_loss, "val_loss": val_loss})

    first_model = model_with_weight(0.0)
    first = [history_writer(tmp_path), early_stopping(tmp_path, patience=3)]
    for callback in first:
        callback.set_model(first_model)
        callback.on_train_begin()
    for index, (weight, val_loss) in enumerate([(1.0, 0.8), (2.0, 0.5), (3.0, 0.6)]):
        epoch(first, first_model, index, weight, val_loss)
    # killed after epoch 2's checkpoint; a new process resumes at epoch 3 with epoch 2's weights
    resumed_model = model_with_weight(3.0)
    resumed_model._initial_epoch = 3  # what BackupAndRestore sets when it restores the checkpoint
    resumed_model.stop_training = False  # what fit sets
    resumed = [history_writer(tmp_path), early_stopping(tmp_path, patience=3)]
    for callback in resumed:
        callback.set_model(resumed_model)
        callback.on_train_begin()
    stopping = resumed[1]
    assert (stopping.best, stopping.best_epoch, stopping.wait) == (0.5, 1, 1)
    epoch(resumed, resumed_model, 3, 4.0, 0.7)
    assert not resumed_model.stop_training
    epoch(resumed, resumed_model, 4, 5.0, 0.7)
    assert resumed_model.stop_training and stopping.stopped_epoch == 4  # 3 epochs after the best, epoch 1
    stopping.on_train_end()
    assert resumed_model.get_weights()[0][0, 0] == 2.0  # epoch 1's weights, from before the kill


def test_history_of_a_run_killed_before_history_json_existed_is_rebuilt_from_history_csv(tmp_path):
    from utils.training import history_writer

    (tmp_path / "history.csv").write_text("epoch,loss,val_loss\n0,0.9,0.8\n1,0.7,0.6\n")
    history_writer(tmp_path, {}).on_epoch_end(2, {"loss": 0.5, "val_loss": 0.4})
    assert json.loads((tmp_path / "history.json").read_text()) == {"loss": [0.9, 0.7, 0.5],
                                                                   "val_loss": [0.8, 0.6, 0.4]}


BLOCKED_TRAINING_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[3])
import keras
from utils.config import TrainConfig
from utils.training import train


class WaitInTheSecondEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            sys.stdin.read()  # the test never writes to or closes stdin: blocked until killed


train(TrainConfig(data=sys.argv[1], out=sys.argv[2], model="myCAE", size=32, epochs=3, batch_size=4),
      extra_callbacks=[WaitInTheSecondEpoch()])
"""


def wait_for_file(pattern: str, folder: Path, process: subprocess.Popen, *, deadline_s: float = 300.0) -> Path:
    """The first file matching `pattern` under `folder`, waiting on the process (it must not exit) meanwhile."""
    give_up = time.monotonic() + deadline_s
    while time.monotonic() < give_up:
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
        try:
            process.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"training exited with {process.returncode} before writing {pattern}")
    pytest.fail(f"no {pattern} under {folder} after {deadline_s:.0f} s")


def test_history_survives_kill_9_in_the_second_epoch_and_a_resume(tiny_demo, tmp_path):
    out, log = tmp_path / "runs", tmp_path / "training.log"
    with open(log, "w") as log_file:
        process = subprocess.Popen([sys.executable, "-c", BLOCKED_TRAINING_SCRIPT, str(tiny_demo), str(out),
                                    str(PROJECT_ROOT)], stdin=subprocess.PIPE, stdout=log_file, stderr=log_file,
                                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        try:
            checkpoint = wait_for_file("*/checkpoints/training_metadata.json", out, process)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
            process.stdin.close()
    assert process.returncode == -signal.SIGKILL, log.read_text()[-2000:]
    run_dir = checkpoint.parents[1]
    assert json.loads(checkpoint.read_text())["epoch"] == 1  # killed in epoch 2, after epoch 1's checkpoint

    resumed = run_script("train.py", "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history["loss"]) == 3 and len(history["val_loss"]) == 3
    config = json.loads((run_dir / "config.json").read_text())
    assert config["epochs_run"] == 3 and config["status"] == "trained"
    with open(run_dir / "history.csv", newline="") as handle:
        logged = {int(row["epoch"]): float(row["loss"]) for row in csv.DictReader(handle)}
    for epoch, loss in logged.items():  # the CSV log and history.json tell the same story
        assert history["loss"][epoch] == pytest.approx(loss, rel=1e-6)


def test_after_training_on_the_demo_set_the_test_auroc_and_next_commands_are_told(tiny_run, tiny_demo, monkeypatch):
    from utils import training
    from utils.config import TrainConfig

    monkeypatch.setattr(training, "resolve_data_root", lambda config: tiny_demo)  # the demo set, tiny
    lines = training.next_steps(tiny_run, TrainConfig())
    assert lines[0].startswith("demo test set: image AUROC 0.") or lines[0].startswith("demo test set: image AUROC 1.")
    assert (tiny_run / "results" / tiny_demo.name / "metrics.json").is_file()
    assert any(line.strip().startswith(f"python test.py --model {tiny_run} --image ") for line in lines)
    assert lines[-1].strip() == f"python main.py --model {tiny_run} --source {tiny_demo / 'test'}"


def test_lr_decay_halves_the_rate_after_half_the_patience_without_a_better_val_loss(tmp_path):
    import keras

    from utils.config import TrainConfig
    from utils.training import training_callbacks

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    plain = training_callbacks(tmp_path, TrainConfig(patience=6))
    decaying = training_callbacks(tmp_path, TrainConfig(patience=6, lr_decay=True))
    assert len(decaying) == len(plain) + 1
    (decay,) = [callback for callback in decaying if isinstance(callback, keras.callbacks.ReduceLROnPlateau)]
    decay.set_model(model)
    decay.on_train_begin()
    rates = []
    for epoch, val_loss in enumerate([1.0, 0.9, 0.95, 0.92, 0.91, 0.93]):  # best at epoch 1, then 3 worse
        decay.on_epoch_end(epoch, {"val_loss": val_loss})
        rates.append(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))
    assert rates[:4] == pytest.approx([1e-3] * 4)  # two epochs without a better loss: not yet
    assert rates[4] == pytest.approx(5e-4)  # the third (half of patience 6) halves it

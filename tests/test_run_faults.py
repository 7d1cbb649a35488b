"""Faults around the run folder: file modes, corrupt run files, unwritable outputs. Each is one line
`error: ...` from the scripts (exit code 2), never a traceback, and never the loss of work already done.

Unwritable outputs are made by putting a regular file where a folder must go: the tests run as root, for whom
chmod does not stop writes, but nobody can create a folder inside a file (NotADirectoryError).
"""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from test_train import load_script, run_script
from utils import run as run_module


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    """A private copy of the tiny run, free to damage."""
    return Path(shutil.copytree(tiny_run, tmp_path / tiny_run.name, ignore=shutil.ignore_patterns("test",
                                                                                                   "results")))


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_one_line_error(exit_code: int, stderr: str, *fragments: str) -> str:
    """Exit 2, no traceback, exactly one `error:` line holding every fragment; returns that line."""
    assert exit_code == 2, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------- file modes


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o027, 0o640)])
def test_atomically_written_files_follow_the_umask(tmp_path, umask, expected):
    import keras

    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 3, padding="same")(inputs))
    previous = os.umask(umask)
    try:
        run_module.write_json(tmp_path / "config.json", {"model": "myCAE"})
        run_module.write_json(tmp_path / "config.json", {"model": "myCAE", "rewritten": True})  # replace, too
        run_module.save_model(model, tmp_path / "model.keras")
    finally:
        os.umask(previous)
    for name in ("config.json", "model.keras"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.json", "model.keras"]  # no temporaries


def test_a_trained_run_is_readable_by_other_users(tiny_run):
    """The tiny run was trained under the test process's umask (022 unless the machine says otherwise)."""
    umask = os.umask(0)
    os.umask(umask)
    for name in ("model.keras", "encoder.keras", "config.json", "calibration.json", "history.json"):
        assert stat.S_IMODE((tiny_run / name).stat().st_mode) == 0o666 & ~umask, name


# ---------------------------------------------------------------- corrupt run files


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


def corrupt_middle(path: Path) -> None:
    """Still a zip file (the central directory is intact), but the compressed members are garbage."""
    content = bytearray(path.read_bytes())
    content[200:len(content) // 2] = bytes(len(content) // 2 - 200)
    path.write_bytes(bytes(content))


@pytest.mark.parametrize("name, damage, advice", [
    ("model.keras", truncate, "retrain"),
    ("model.keras", corrupt_middle, "retrain"),
    ("encoder.keras", truncate, "retrain"),
    ("config.json", truncate, "restore"),
    ("config.json", lambda path: path.write_text("[1, 2]"), "restore"),
    ("calibration.json", lambda path: path.write_text('{"threshold": '), "--calibrate"),
])
def test_a_corrupt_run_file_is_a_value_error_naming_it(run_copy, name, damage, advice):
    damage(run_copy / name)
    with pytest.raises(ValueError) as caught:
        run_module.load_run(run_copy)
    message = str(caught.value)
    assert str(run_copy / name) in message and advice in message and "\n" not in message
    assert "not found" not in message.lower()  # the file is there: it is damaged, not missing


def test_test_script_reports_a_corrupt_model_as_one_line(run_copy, tiny_demo, capsys):
    truncate(run_copy / "model.keras")
    exit_code = load_script("test.py").main(["--model", str(run_copy), "--data", str(tiny_demo)])
    assert_one_line_error(exit_code, capsys.readouterr().err, str(run_copy / "model.keras"), "retrain")


def test_iou_script_reports_a_broken_config_as_one_line(run_copy, tiny_demo, capsys):
    (run_copy / "config.json").write_text('{"model": ')
    exit_code = load_script("IoU_test.py").main(["--model", str(run_copy), "--data", str(tiny_demo)])
    assert_one_line_error(exit_code, capsys.readouterr().err, str(run_copy / "config.json"))


def test_iou_script_reports_a_missing_data_folder_as_one_line(run_copy, tmp_path, capsys):
    exit_code = load_script("IoU_test.py").main(["--model", str(run_copy), "--data", str(tmp_path / "no_set")])
    assert_one_line_error(exit_code, capsys.readouterr().err, str(tmp_path / "no_set"))
    assert not (run_copy / "results").exists()  # the failed command left nothing behind


# ---------------------------------------------------------------- unwritable outputs


def test_test_script_with_an_unwritable_picture_folder_prints_the_verdict_then_one_error(run_copy, tiny_demo):
    (run_copy / "test").write_text("a file where the pictures folder belongs")
    result = run_script("test.py", "--model", str(run_copy), "--data", str(tiny_demo), "--index", "0")
    assert_one_line_error(result.returncode, result.stderr, str(run_copy / "test"))
    assert result.stdout.split()[0] in ("OK", "NOK") and "score" in result.stdout  # the inspection is not lost


def test_iou_script_with_an_unwritable_results_folder_fails_before_evaluating(run_copy, tiny_demo):
    (run_copy / "results").write_text("a file where the results folder belongs")
    result = run_script("IoU_test.py", "--model", str(run_copy), "--data", str(tiny_demo))
    assert_one_line_error(result.returncode, result.stderr, str(run_copy / "results"))
    assert "evaluating" not in result.stderr  # checked first: no evaluation is wasted


def test_iou_script_that_cannot_save_after_evaluating_still_prints_the_metrics(run_copy, tiny_demo, capsys):
    blocked = run_copy / "results" / tiny_demo.name / "metrics.json"
    blocked.mkdir(parents=True)  # a folder where the file must go: the write fails only after the evaluation
    exit_code = load_script("IoU_test.py").main(["--model", str(run_copy), "--data", str(tiny_demo)])
    captured = capsys.readouterr()
    assert_one_line_error(exit_code, captured.err, "results not saved", str(blocked.parent))
    assert "image AUROC" in captured.out  # the work of the whole evaluation reaches the user anyway


def test_the_writability_probe_leaves_no_trace_and_names_the_blocking_file(run_copy):
    """IoU_test.py checks its results folder before evaluating; the check itself creates nothing lasting."""
    folder = run_copy / "results" / "demo" / "seed"
    run_module.check_writable_folder(folder)
    assert not (run_copy / "results").exists()
    (run_copy / "results").mkdir()
    (run_copy / "results" / "keep.txt").write_text("an earlier result")
    run_module.check_writable_folder(folder)
    assert sorted(path.name for path in (run_copy / "results").iterdir()) == ["keep.txt"]
    (run_copy / "results" / "demo").write_text("a file where a folder belongs")
    with pytest.raises(ValueError) as caught:
        run_module.check_writable_folder(folder)
    assert str(run_copy / "results" / "demo") in str(caught.value) and "not a folder" in str(caught.value)


# ---------------------------------------------------------------- folder names


@pytest.mark.parametrize("text", ["", ".", "..", "...", "/", "../..", "-", "_"])
def test_safe_name_is_never_empty_or_a_dot_name(text):
    name = run_module.safe_name(text)
    assert name and name.strip(".") and "/" not in name and not name.startswith(".")
    assert run_module.safe_name(text, default="image") in ("image", name)


def test_safe_name_keeps_ordinary_names():
    assert run_module.safe_name("myCAE") == "myCAE"
    assert run_module.safe_name("crack_006") == "crack_006"
    assert run_module.safe_name("magnetic tile v1.2") == "magnetic-tile-v1.2"


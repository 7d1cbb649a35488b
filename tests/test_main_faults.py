"""main.py when something is wrong, as real processes with real files and a real Mosquitto broker:

* a problem the user has to fix (an unwritable --journal, a missing or damaged run folder, a broker that
  rejects the credentials or whose certificate does not verify) is one line ``error: ...`` and exit status 2:
  no traceback, no usage block, and the journal of earlier runs is left as it was;
* a broker that cannot be reached is logged while the line runs, and the line goes on journaling;
* the first line printed names the run, its model, the journal and the broker.

Unwritable places: the tests run as root, for whom chmod stops nothing, so the journal is put under a regular
file (NotADirectoryError even for root) or into /sys, where nobody may create a file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.line_fixtures import (PROJECT_ROOT, WAIT_S, Broker, broker, configure_broker, find_mosquitto,  # noqa: F401
                                 free_port, main_py_command, make_tls_files, read_journal, start_main_py,
                                 start_secured_broker, wait_until, write_password_file)
from utils.journal import DeliveryMarker, Journal

PREFIX = "test/faults"
STARTUP_S = 180.0  # main.py imports TensorFlow and loads the model before it connects; slow on a busy machine


def run_main(*arguments: str, timeout_s: float = STARTUP_S) -> subprocess.CompletedProcess:
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(main_py_command(*arguments), cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=timeout_s, env=environment)


def assert_one_line_error(completed: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, no traceback, no usage, exactly one `error:` line holding every fragment; returns that line."""
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr and "usage:" not in completed.stderr, completed.stderr[-3000:]
    lines = [line for line in completed.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, completed.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def mqtt_flags(port: int) -> list[str]:
    return ["--mqtt-host", "127.0.0.1", "--mqtt-port", str(port), "--topic-prefix", PREFIX]


def drop_part(source: Path, folder: Path, name: str) -> None:
    """Deliver a part the way a camera PC should: write under a temporary name, then rename."""
    temporary = folder / f"{name}.tmp"
    shutil.copy(source, temporary)
    temporary.rename(folder / name)


def model_name_of(run: Path) -> str:
    return json.loads((run / "config.json").read_text())["model"]


@pytest.fixture(scope="module")
def demo_test_images(tiny_demo) -> list[Path]:
    return sorted((tiny_demo / "test").rglob("*.png"))


@pytest.fixture
def parts(tiny_demo, tmp_path) -> Path:
    """A folder of two good parts."""
    folder = tmp_path / "parts"
    folder.mkdir()
    for path in sorted((tiny_demo / "test" / "good").glob("*.png"))[:2]:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture
def earlier_journal(tmp_path) -> Path:
    """A journal with two results an earlier run could not deliver (its delivery marker still at 0)."""
    path = tmp_path / "line.jsonl"
    journal = Journal(path)
    for seq in (1, 2):
        journal.append({"type": "result", "seq": journal.next_seq(), "ts": "2024-05-01T06:00:00.000Z",
                        "source": f"earlier{seq}.png", "verdict": "OK", "score": 0.1, "threshold": 0.2,
                        "max_blob_area": 0, "min_area": 5, "blobs": [], "latency_ms": 1.0, "model": "myCAE"})
    journal.close()
    DeliveryMarker(path).write(0)
    return path


# ---------------------------------------------------------------- problems the user has to fix


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    """A private copy of the tiny run, free to damage."""
    return Path(shutil.copytree(tiny_run, tmp_path / tiny_run.name))


def test_a_journal_under_a_regular_file_is_one_error_line(tiny_run, parts, tmp_path):
    blocking_file = tmp_path / "not_a_folder"
    blocking_file.write_text("a file where the journal's folder should be")
    journal = blocking_file / "journal.jsonl"
    completed = run_main("--model", str(tiny_run), "--source", str(parts), "--journal", str(journal))
    assert_one_line_error(completed, f"cannot write the journal {journal}", "Not a directory", "--journal")
    assert blocking_file.read_text().startswith("a file")


def test_a_journal_in_a_read_only_place_is_one_error_line(tiny_run, parts):
    journal = Path("/sys/aivision-test-journal.jsonl")
    if not Path("/sys").is_dir():
        pytest.skip("no /sys on this system: no place that is read-only even for root")
    completed = run_main("--model", str(tiny_run), "--source", str(parts), "--journal", str(journal))
    assert_one_line_error(completed, f"cannot write the journal {journal}", "Permission denied", "--journal")


def test_a_journal_in_use_by_another_line_is_one_error_line(tiny_run, parts, earlier_journal):
    running_line = Journal(earlier_journal)
    try:
        completed = run_main("--model", str(tiny_run), "--source", str(parts), "--journal", str(earlier_journal))
    finally:
        running_line.close()
    assert_one_line_error(completed, str(earlier_journal), "in use by another running line", "--journal")
    assert len(read_journal(earlier_journal)) == 2


def test_a_missing_run_folder_is_one_error_line(parts, tmp_path):
    missing = tmp_path / "no_such_run"
    completed = run_main("--model", str(missing), "--source", str(parts), "--journal", str(tmp_path / "j.jsonl"))
    assert_one_line_error(completed, str(missing), "is not a run folder", "train.py")
    assert not (tmp_path / "j.jsonl").exists()  # nothing was started


@pytest.mark.parametrize("name, damage, expected", [
    ("model.keras", lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]), "is damaged"),
    ("model.keras", lambda path: path.write_bytes(b"not a zip archive at all"), "is damaged"),
    ("config.json", lambda path: path.write_text('{"model": '), "cannot be read"),
    ("model.keras", lambda path: write_zip(path, {"config.json": "not JSON"}), "cannot be loaded"),
])
def test_a_damaged_run_folder_is_one_error_line(run_copy, parts, tmp_path, name, damage, expected):
    damage(run_copy / name)
    completed = run_main("--model", str(run_copy), "--source", str(parts), "--journal", str(tmp_path / "j.jsonl"))
    assert_one_line_error(completed, str(run_copy / name), expected)


def write_zip(path: Path, members: dict[str, str]) -> None:
    """A sound zip archive holding `members`: what a .keras file looks like to a check of the archive alone."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)


# ---------------------------------------------------------------- brokers that say no, or are away


@pytest.fixture
def password_broker(tmp_path) -> Broker:
    secured = start_secured_broker(tmp_path / "password_broker",
                             password_file=write_password_file(tmp_path / "passwd", "line1", "secret"))
    yield secured
    secured.stop()


def test_wrong_credentials_end_main_py_with_one_error_line_and_keep_the_journal(
        tiny_run, parts, password_broker, earlier_journal, tmp_path):
    wrong = tmp_path / "line1.secret"
    wrong.write_text("not the password\n")
    before = earlier_journal.read_bytes()
    completed = run_main("--model", str(tiny_run), "--source", str(parts), *mqtt_flags(password_broker.port),
                         "--username", "line1", "--password-file", str(wrong), "--journal", str(earlier_journal))
    assert_one_line_error(completed, f"127.0.0.1:{password_broker.port}", "Not authorized", "--password-file")
    assert earlier_journal.read_bytes() == before and DeliveryMarker(earlier_journal).read() == 0


def test_a_broker_certificate_that_does_not_verify_ends_main_py_with_one_error_line(tiny_run, parts, tmp_path):
    tls = make_tls_files(tmp_path / "tls")
    tls_broker = start_secured_broker(tmp_path / "tls_broker", tls=tls)
    try:
        completed = run_main("--model", str(tiny_run), "--source", str(parts), *mqtt_flags(tls_broker.port),
                             "--tls", "--ca", str(tls["other_ca"]), "--journal", str(tmp_path / "line.jsonl"))
    finally:
        tls_broker.stop()
    assert_one_line_error(completed, f"127.0.0.1:{tls_broker.port}", "certificate", "--ca")


def test_a_client_certificate_the_broker_refuses_ends_main_py_with_one_error_line(tiny_run, parts, tmp_path):
    """With TLS 1.3 the refusal comes after the handshake and looked like a connection merely closed: retried."""
    tls = make_tls_files(tmp_path / "tls")
    tls_broker = start_secured_broker(tmp_path / "tls_broker", tls=tls, require_certificate=True)
    try:
        completed = run_main("--model", str(tiny_run), "--source", str(parts), *mqtt_flags(tls_broker.port),
                             "--tls", "--ca", str(tls["ca"]), "--cert", str(tls["stranger_cert"]),
                             "--key", str(tls["stranger_key"]), "--journal", str(tmp_path / "line.jsonl"))
    finally:
        tls_broker.stop()
    assert_one_line_error(completed, f"127.0.0.1:{tls_broker.port}", "client certificate", "--cert")


def test_credentials_rejected_mid_run_end_the_run_with_status_2_and_a_journaled_part_stays(
        broker, tiny_run, demo_test_images, tmp_path):
    """The run ends at the latest with the next part, which is journaled first (at once if utils/line.py hands
    the publisher's on_permanent_error to its stop event; then the part may arrive after the end)."""
    watch_folder, journal, log_path = tmp_path / "incoming", tmp_path / "line.jsonl", tmp_path / "main.log"
    watch_folder.mkdir()
    process = start_main_py("--model", str(tiny_run), "--source", f"watch:{watch_folder}", *mqtt_flags(broker.port),
                            "--journal", str(journal), "--shifts", "none", log_path=log_path)
    try:
        wait_until(lambda: f"MQTT connected to 127.0.0.1:{broker.port}" in log_path.read_text(),
                   "main.py to connect", timeout_s=STARTUP_S)
        broker.stop()  # the broker comes back asking for passwords that this line does not have
        configure_broker(broker, password_file=write_password_file(tmp_path / "passwd", "line1", "secret"))
        broker.start()
        wait_until(lambda: "rejected the line's credentials" in log_path.read_text(), "main.py to meet the rejection")
        drop_part(demo_test_images[0], watch_folder, "after_rejection.png")
        assert process.wait(timeout=WAIT_S) == 2, log_path.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=WAIT_S)
    output = log_path.read_text()
    (error,) = [line for line in output.splitlines() if line.startswith("error: ")]
    assert "Not authorized" in error and str(journal) in error and "Traceback" not in output
    assert [record["source"] for record in read_journal(journal)] in ([], [str(watch_folder / "after_rejection.png")])


def test_an_unreachable_broker_is_logged_while_the_line_runs_and_journals(tiny_run, demo_test_images, tmp_path):
    port = free_port()  # nothing listens there
    watch_folder, journal, log_path = tmp_path / "incoming", tmp_path / "line.jsonl", tmp_path / "main.log"
    watch_folder.mkdir()
    process = start_main_py("--model", str(tiny_run), "--source", f"watch:{watch_folder}", *mqtt_flags(port),
                            "--journal", str(journal), "--shifts", "none", log_path=log_path)
    try:
        # The publisher's own report (not only the check before the model loads), while main.py runs.
        wait_until(lambda: "the line goes on and keeps results in" in log_path.read_text()
                   or process.poll() is not None, "main.py to report the unreachable broker", timeout_s=STARTUP_S)
        assert process.poll() is None, log_path.read_text()[-3000:]
        drop_part(demo_test_images[0], watch_folder, "during_outage.png")
        wait_until(lambda: len(read_journal(journal)) == 1, "the line to journal a part during the outage")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=WAIT_S) == 0, log_path.read_text()[-3000:]  # an outage is not the user's error
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=WAIT_S)
    lines = log_path.read_text().splitlines()
    reports = [line for line in lines if f"MQTT broker 127.0.0.1:{port} cannot be reached" in line]
    assert reports and all("connection refused" in line for line in reports)
    start = [index for index, line in enumerate(lines) if line.startswith("start ")]
    assert lines[start[0]] == (f"start run={tiny_run} model={model_name_of(tiny_run)} journal={journal} "
                               f"mqtt=127.0.0.1:{port} prefix={PREFIX}")
    assert "cannot be reached now" in reports[0] and lines.index(reports[0]) < start[0]  # said before the model loads


# ---------------------------------------------------------------- what main.py prints


@pytest.fixture(scope="module")
def line_without_broker(tiny_run, tiny_demo, tmp_path_factory):
    """main.py without MQTT over two good parts: (completed process, journal path)."""
    folder = tmp_path_factory.mktemp("print")
    journal = folder / "line.jsonl"
    completed = run_main("--model", str(tiny_run), "--source", str(tiny_demo / "test" / "good"),
                         "--journal", str(journal))
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed, journal


def test_the_first_line_names_the_run_its_model_and_the_journal(line_without_broker, tiny_run):
    completed, journal = line_without_broker
    assert completed.stdout.splitlines()[0] == \
        f"start run={tiny_run} model={model_name_of(tiny_run)} journal={journal} no MQTT"


def test_printed_scores_have_four_significant_digits_and_the_journal_keeps_them_all(line_without_broker):
    completed, journal = line_without_broker
    printed = [dict(field.split("=", 1) for field in line.split()[2:] if "=" in field)
               for line in completed.stdout.splitlines() if line.startswith("seq=")]
    results = [record for record in read_journal(journal) if record["type"] == "result"]
    assert printed and len(printed) == len(results)
    for fields, record in zip(printed, results):
        for key in ("score", "threshold"):
            assert fields[key] == f"{record[key]:.4g}", (key, fields[key], record[key])
    assert any(len(repr(record["score"])) > 8 for record in results)  # the journal keeps full precision

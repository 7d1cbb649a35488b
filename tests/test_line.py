"""The line: stats, shifts and records on an injected clock, then main.py end to end through the real Inspector
and a real Mosquitto broker (every part once, stats that add up, bad files, a broker killed mid-run, Last Will).
"""

from __future__ import annotations

import base64
import io
import json
import queue
import shutil
import signal
import subprocess
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.line_fixtures import (WAIT_S, broker, main_py_command, read_journal, start_main_py,  # noqa: F401
                                 subscriber_factory, wait_until)
from tests.test_tensorflow_startup import assert_quiet_start
from utils.journal import Journal
from utils.line import (Arrived, InspectionLine, LineStats, PartBatcher, ShiftSchedule, SourceEnded, error_record,
                        inspected_sources, iso_utc, result_record)
from utils.plots import png_bytes, result_pictures
from utils.sources import SourceError, SourceItem

PREFIX = "test/line1"
RESULT_FIELDS = {"seq", "ts", "source", "verdict", "score", "threshold", "max_blob_area", "min_area", "blobs",
                 "latency_ms", "model"}
STATS_FIELDS = {"total", "ok", "nok", "errors", "defect_pct", "parts_per_min", "since"}
STARTUP_S = 180.0  # main.py imports TensorFlow and loads the model before it connects; slow on a busy machine
ZONE = timezone(timedelta(hours=1))


class SettableClock:
    """The line's injectable clock: returns whatever time the test set last."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def at(hour: int, minute: int, second: int = 0, day: int = 1) -> datetime:
    return datetime(2024, 5, day, hour, minute, second, tzinfo=ZONE)


# ---------------------------------------------------------------- stats and shifts, no model


def test_stats_add_up_and_parts_per_minute_slide():
    stats = LineStats(since=at(6, 0), window_s=60)
    for second, verdict in ((0, "OK"), (10, "NOK"), (20, "OK"), (30, "OK")):
        stats.add(verdict, at(6, 1, second))
    stats.add_error()
    snapshot = stats.as_dict(at(6, 1, 30))
    assert snapshot == {"total": 4, "ok": 3, "nok": 1, "errors": 1, "defect_pct": 25.0, "parts_per_min": 4.0,
                        "since": "2024-05-01T05:00:00.000Z"}
    assert stats.parts_per_min(at(6, 2, 25)) == 1.0  # only the part at 6:01:30 is within the last minute
    assert stats.parts_per_min(at(6, 3)) == 0.0
    with pytest.raises(ValueError, match="'maybe'"):
        stats.add("maybe", at(6, 3))


def test_shift_schedule_finds_the_running_shift_across_midnight():
    schedule = ShiftSchedule.parse("06:00, 14:00,22:00")
    assert schedule.shift_start(at(13, 59)) == at(6, 0)
    assert schedule.shift_start(at(14, 0)) == at(14, 0)
    assert schedule.shift_start(at(3, 0, day=2)) == at(22, 0, day=1)
    assert ShiftSchedule.name(at(22, 0)) == "22:00"
    assert ShiftSchedule.parse("none").shift_start(at(12, 0)) is None
    with pytest.raises(ValueError, match="'6 Uhr'"):
        ShiftSchedule.parse("6 Uhr")


# ---------------------------------------------------------------- the line with the real Inspector


@pytest.fixture(scope="module")
def inspector(tiny_run):
    from utils.inspector import Inspector

    return Inspector.from_run(tiny_run)


@pytest.fixture(scope="module")
def demo_test_images(tiny_demo) -> list[Path]:
    return sorted((tiny_demo / "test").rglob("*.png"))


def test_result_record_follows_the_contract_and_images_decode(inspector, demo_test_images):
    image = cv2.imread(str(demo_test_images[0]), cv2.IMREAD_GRAYSCALE)
    (result,) = inspector.inspect([image])
    record = result_record(result, seq=7, at=at(6, 0), source="part.png", latency_ms=12.345, model="myCAE")
    assert set(record) == RESULT_FIELDS | {"type"}
    assert record["ts"] == "2024-05-01T05:00:00.000Z" and record["latency_ms"] == 12.3
    assert record["verdict"] in ("OK", "NOK") and isinstance(record["max_blob_area"], int)
    json.dumps(record, allow_nan=False)
    pictures = result_pictures(result)
    assert list(pictures) == ["input", "reconstruction", "residual", "defect"]  # the P/image/<kind> kinds
    for picture in pictures.values():
        decoded = cv2.imdecode(np.frombuffer(png_bytes(picture), np.uint8), cv2.IMREAD_COLOR)
        assert decoded.shape == (*image.shape[:2], 3)  # the photo's own pixels
        np.testing.assert_array_equal(decoded[:, :, ::-1], picture)  # the PNG holds the picture, in RGB order


def test_line_counts_journals_and_resets_at_shift_boundaries(inspector, demo_test_images, tmp_path):
    image = cv2.imread(str(demo_test_images[0]), cv2.IMREAD_GRAYSCALE)
    clock = SettableClock(at(13, 58))
    events = [(at(13, 58), SourceItem("a.png", image)), (at(13, 59), SourceError("b.png", "corrupt")),
              (at(13, 59, 30), SourceItem("c.png", image)), (at(14, 0, 20), None),  # idle tick after 14:00
              (at(14, 1), SourceItem("d.png", image))]

    def source():
        for moment, event in events:
            clock.now = moment
            yield event

    journal = Journal(tmp_path / "line.jsonl")
    output = io.StringIO()
    line = InspectionLine(inspector=inspector, journal=journal, shifts=ShiftSchedule.parse("06:00,14:00,22:00"),
                          clock=clock, output=output)
    final = line.run(source(), threading.Event())
    journal.close()

    records = read_journal(tmp_path / "line.jsonl")
    assert [record["type"] for record in records] == ["result", "error", "result", "shift", "result"]
    assert [record.get("seq") for record in records] == [1, 2, 3, None, 4]
    shift = records[3]
    assert shift["name"] == "06:00" and shift["end"] == iso_utc(at(14, 0))
    assert (shift["total"], shift["errors"], shift["ok"] + shift["nok"]) == (2, 1, 2)
    assert final["total"] == 1 and final["errors"] == 0 and final["since"] == iso_utc(at(14, 0))
    lines = output.getvalue().splitlines()
    assert sum(text.startswith("seq=") for text in lines) == 4 and "ERROR source=b.png" in lines[1]


# ---------------------------------------------------------------- batching parts that arrive together


class ScriptedArrivals:
    """A `receive` for PartBatcher on a fake timer: events arrive at scripted times, and waiting for one only
    advances the timer (by the timeout when nothing comes in time), so deadlines are checked without waiting."""

    def __init__(self, script: list[tuple[float, object]]) -> None:
        self.script, self.now, self.timeouts = list(script), 0.0, []

    def timer(self) -> float:
        return self.now

    def receive(self, timeout: float | None):
        self.timeouts.append(timeout)
        if not self.script:
            return SourceEnded()
        arrives_at, event = self.script[0]
        if timeout is not None and arrives_at > self.now + timeout:
            self.now += timeout
            raise queue.Empty
        self.script.pop(0)
        self.now = max(self.now, arrives_at)
        return Arrived(event, arrives_at, at(6, 0))


def item(name: str) -> SourceItem:
    return SourceItem(name, np.zeros((4, 4), np.uint8))


def sources_of(batch: list[Arrived]) -> list[str | None]:
    return [arrived.event.id if arrived.event is not None else None for arrived in batch]


def test_batcher_takes_what_arrives_within_the_delay_up_to_max_batch_and_errors_do_not_count():
    arrivals = ScriptedArrivals([(0.000, item("a")), (0.005, SourceError("b", "corrupt")), (0.010, item("c")),
                                 (0.015, item("d")), (0.016, item("e")), (0.050, item("f"))])
    batcher = PartBatcher(max_batch=3, max_delay_s=0.020, timer=arrivals.timer)
    first, ended = batcher.gather(arrivals.receive)
    assert sources_of(first) == ["a", "b", "c", "d"] and ended is None  # full at 3 parts; b is an error
    second, _ = batcher.gather(arrivals.receive)
    assert sources_of(second) == ["e"]  # f comes 34 ms after e: e waited its 20 ms, then went alone
    assert arrivals.now == pytest.approx(0.036)
    third, ended = batcher.gather(arrivals.receive)
    assert sources_of(third) == ["f"] and ended == SourceEnded()  # the source's end closes the batch at once


def test_batcher_sends_a_part_that_waited_behind_a_busy_model_without_a_further_wait():
    arrivals = ScriptedArrivals([(0.0, item("a")), (0.001, item("b")), (0.5, item("c"))])
    arrivals.now = 0.3  # the model was busy: a and b have waited 300 ms already
    batch, _ = PartBatcher(max_batch=8, max_delay_s=0.020, timer=arrivals.timer).gather(arrivals.receive)
    assert sources_of(batch) == ["a", "b"] and arrivals.timeouts == [None, 0.0, 0.0]
    assert arrivals.now == 0.3  # c, not yet arrived, was not waited for


def test_an_idle_tick_ends_a_batch_and_bad_settings_are_refused():
    arrivals = ScriptedArrivals([(0.0, item("a")), (0.001, None), (0.002, item("b"))])
    batcher = PartBatcher(max_batch=8, max_delay_s=1.0, timer=arrivals.timer)
    assert sources_of(batcher.gather(arrivals.receive)[0]) == ["a", None]
    assert sources_of(batcher.gather(arrivals.receive)[0]) == ["b"]
    with pytest.raises(ValueError, match="max batch must be an integer >= 1; got 0"):
        PartBatcher(max_batch=0, max_delay_s=0.02)
    with pytest.raises(ValueError, match="max batch delay must be a finite number of seconds >= 0"):
        PartBatcher(max_batch=2, max_delay_s=float("nan"))


class RecordingInspector:
    """The real Inspector, with the batches the line gave it recorded; a part whose id is in `poison` makes the
    whole batch fail, as a part the model cannot take would."""

    def __init__(self, inspector, poison: set[int] = frozenset()) -> None:
        self.inner, self.poison, self.batches = inspector, poison, []
        self.model_name, self.batch_size = inspector.model_name, inspector.batch_size

    def inspect(self, images):
        self.batches.append(len(images))
        if any(id(image) in self.poison for image in images):
            raise ValueError("the model cannot take this part")
        return self.inner.inspect(images)


def test_parts_that_arrive_together_are_inspected_in_batches_and_reported_in_arrival_order(
        inspector, demo_test_images, tmp_path):
    images = [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in demo_test_images[:6]]
    events = [SourceItem(f"{index}.png", image) for index, image in enumerate(images)]
    events.insert(2, SourceError("bad.png", "corrupt"))
    poisoned = images[4].copy()
    events[5] = SourceItem("4.png", poisoned)  # fails its batch; only it may become an error record
    recording = RecordingInspector(inspector, poison={id(poisoned)})
    journal = Journal(tmp_path / "line.jsonl")
    line = InspectionLine(inspector=recording, journal=journal, output=io.StringIO(), max_batch=3,
                          max_batch_delay_s=60.0)  # batches close when full or when the source ends
    final = line.run(iter(events), threading.Event())
    journal.close()

    records = read_journal(tmp_path / "line.jsonl")
    assert [(record["type"], record["source"]) for record in records] == [
        ("result", "0.png"), ("result", "1.png"), ("error", "bad.png"), ("result", "2.png"),
        ("result", "3.png"), ("error", "4.png"), ("result", "5.png")]
    assert [record["seq"] for record in records] == list(range(1, 8))
    assert "inspection failed: the model cannot take this part" in records[5]["error"]
    assert recording.batches == [3, 3, 1, 1, 1]  # 0-2, then 3-5 failed, then each of them alone
    assert (final["total"], final["errors"]) == (5, 2)
    direct = inspector.inspect([images[5]])[0]
    assert records[6]["score"] == pytest.approx(direct.score, rel=1e-5)  # a batch decides as one part alone


def test_main_py_checks_its_batching_flags_while_parsing(capsys):
    import main

    parser = main.build_parser()
    arguments = parser.parse_args(["--source", "parts", "--max-batch", "4", "--max-batch-delay-ms", "0"])
    assert (arguments.max_batch, arguments.max_batch_delay_ms) == (4, 0.0)
    assert parser.parse_args(["--source", "parts"]).max_batch_delay_ms == 20.0
    for flag, value, message in [("--max-batch", "0", "must be an integer >= 1; got '0'"),
                                 ("--max-batch-delay-ms", "-5", "must be a number of milliseconds >= 0")]:
        with pytest.raises(SystemExit):
            parser.parse_args(["--source", "parts", flag, value])
        assert message in capsys.readouterr().err


def test_inspected_sources_are_the_results_and_errors_a_real_journal_holds(tmp_path):
    path = tmp_path / "line.jsonl"
    journal = Journal(path)
    journal.append({**error_record(seq=1, at=at(6, 0), source="in/a.png", message="corrupt"), "type": "result"})
    journal.append(error_record(seq=2, at=at(6, 1), source="in/b.png", message="corrupt"))
    journal.append({"type": "shift", "name": "06:00", "start": iso_utc(at(6, 0)), "end": iso_utc(at(14, 0))})
    journal.append(error_record(seq=3, at=at(6, 2), source="in/a.png", message="again"))  # a's latest record
    journal.close()
    with open(path, "ab") as torn:
        torn.write(b'{"type":"result","seq":4,"ts":"2024-05-01T05:03:00.000Z","source":"in/c.p')  # a crash mid-write
    assert inspected_sources(path) == {"in/a.png": at(6, 2).timestamp(), "in/b.png": at(6, 1).timestamp()}
    assert inspected_sources(tmp_path / "never_written.jsonl") == {}


# ---------------------------------------------------------------- main.py end to end


@pytest.fixture
def parts_folder(demo_test_images, tmp_path) -> Path:
    """The tiny demo test set plus one truncated PNG in the middle of the sorted order."""
    folder = tmp_path / "parts"
    for path in demo_test_images:
        target = folder / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    good = sorted((folder / "good").glob("*.png"))[0]
    (folder / "good" / "000_truncated.png").write_bytes(good.read_bytes()[:100])
    return folder


def mqtt_flags(port: int) -> list[str]:
    return ["--mqtt-host", "127.0.0.1", "--mqtt-port", str(port), "--topic-prefix", PREFIX]


def payload_seqs(watcher, *suffixes) -> set[int]:
    return {message.json()["seq"] for suffix in suffixes for message in watcher.on(f"{PREFIX}/{suffix}")}


def test_every_part_of_a_folder_gives_exactly_one_result_and_stats_add_up(broker, subscriber_factory, tiny_run,
                                                                          parts_folder, tmp_path):
    watcher = subscriber_factory(broker.port, f"{PREFIX}/#")
    journal = tmp_path / "line.jsonl"
    completed = subprocess.run(
        main_py_command("--model", str(tiny_run), "--source", str(parts_folder), *mqtt_flags(broker.port),
                        "--journal", str(journal), "--images", "all", "--shifts", "none"),
        capture_output=True, text=True, timeout=STARTUP_S)
    assert completed.returncode == 0, completed.stderr[-3000:]

    images = sorted(str(path) for path in parts_folder.rglob("*.png") if "truncated" not in path.name)
    watcher.wait_for(lambda: len(watcher.on(f"{PREFIX}/result")) >= len(images), f"{len(images)} results")
    results = [message.json() for message in watcher.on(f"{PREFIX}/result")]
    assert sorted(result["source"] for result in results) == images  # each part exactly once
    for result in results:
        assert set(result) == RESULT_FIELDS
        assert result["verdict"] in ("OK", "NOK") and result["ts"].endswith("Z")
        datetime.fromisoformat(result["ts"].replace("Z", "+00:00"))
        assert all(set(blob) == {"area", "bbox"} and len(blob["bbox"]) == 4 for blob in result["blobs"])
    (error,) = [message.json() for message in watcher.on(f"{PREFIX}/error")]
    assert error["source"].endswith("000_truncated.png") and "000_truncated.png" in error["error"]

    stats = watcher.wait_for(lambda: (last := watcher.last(f"{PREFIX}/stats")) and last.json()["total"] == len(images)
                             and last, "final stats").json()
    nok = sum(result["verdict"] == "NOK" for result in results)
    assert set(stats) == STATS_FIELDS
    assert (stats["total"], stats["ok"], stats["nok"], stats["errors"]) == (len(images), len(images) - nok, nok, 1)
    assert stats["defect_pct"] == round(100 * nok / len(images), 2)

    records = read_journal(journal)
    assert {record["seq"] for record in records} == payload_seqs(watcher, "result", "error")
    assert [message.payload for message in watcher.on(f"{PREFIX}/status")][-1] == b"offline"
    last_image = watcher.last(f"{PREFIX}/image/defect").json()
    assert last_image["seq"] == max(result["seq"] for result in results)
    png = cv2.imdecode(np.frombuffer(base64.b64decode(last_image["png_base64"]), np.uint8), cv2.IMREAD_COLOR)
    assert png is not None and png.shape[2] == 3
    lines = completed.stdout.splitlines()
    assert sum(line.startswith("seq=") for line in lines) == len(images) + 1 and lines[-1].startswith("stats ")


def test_without_a_broker_the_line_prints_and_journals(tiny_run, parts_folder, tmp_path):
    journal = tmp_path / "offline.jsonl"
    completed = subprocess.run(
        main_py_command("--model", str(tiny_run), "--source", str(parts_folder / "good" / "*.png"),
                        "--journal", str(journal)),
        capture_output=True, text=True, timeout=STARTUP_S)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert_quiet_start(completed.stderr)
    part_lines = [line for line in completed.stdout.splitlines() if line.startswith("seq=")]
    files = sorted(str(path) for path in (parts_folder / "good").glob("*.png"))
    assert [line.rsplit("source=", 1)[1] for line in part_lines if " ERROR " not in line] == \
        [name for name in files if "truncated" not in name]
    assert len(read_journal(journal)) == len(files)
    assert not journal.with_name("offline.jsonl.delivered").exists()


def drop_part(source: Path, folder: Path, name: str) -> None:
    """Deliver a part the way a camera PC should: write under a temporary name, then rename."""
    temporary = folder / f"{name}.tmp"
    shutil.copy(source, temporary)
    temporary.rename(folder / name)


def test_broker_killed_mid_run_every_journaled_result_arrives_then_sigterm_exits_cleanly(
        broker, subscriber_factory, tiny_run, demo_test_images, tmp_path):
    watch_folder, journal = tmp_path / "incoming", tmp_path / "line.jsonl"
    watch_folder.mkdir()
    watcher = subscriber_factory(broker.port, f"{PREFIX}/#", persistent=True)
    process = start_main_py("--model", str(tiny_run), "--source", f"watch:{watch_folder}", *mqtt_flags(broker.port),
                            "--journal", str(journal), "--shifts", "none", log_path=tmp_path / "main.log")
    try:
        watcher.wait_for(lambda: (last := watcher.last(f"{PREFIX}/status")) and last.payload == b"online",
                         "main.py online", timeout_s=STARTUP_S)
        for index in range(3):
            drop_part(demo_test_images[index], watch_folder, f"before_{index}.png")
        watcher.wait_for(lambda: len(watcher.on(f"{PREFIX}/result")) == 3, "3 results before the outage")

        broker.save()
        broker.kill()
        for index in range(3, 6):
            drop_part(demo_test_images[index], watch_folder, f"during_{index}.png")
        (watch_folder / "during_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        wait_until(lambda: len(read_journal(journal)) == 7, "main.py to inspect 7 items during the outage")

        broker.start()
        journaled = {record["seq"] for record in read_journal(journal)}
        watcher.wait_for(lambda: payload_seqs(watcher, "result", "error") == journaled,
                         "every journaled result after the restart")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=WAIT_S) == 0, (tmp_path / "main.log").read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
    watcher.wait_for(lambda: watcher.last(f"{PREFIX}/status").payload == b"offline", "status offline")
    stats = watcher.wait_for(lambda: (last := watcher.last(f"{PREFIX}/stats")) and last.json()["total"] == 6
                             and last, "final stats").json()
    assert stats["ok"] + stats["nok"] == 6 and stats["errors"] == 1
    sources = [message.json()["source"] for message in watcher.on(f"{PREFIX}/result")]
    assert sorted(set(sources)) == sorted(str(path) for path in watch_folder.glob("*.png") if "corrupt" not in path.name)


def test_killed_main_py_goes_offline_through_its_last_will(broker, subscriber_factory, tiny_run, tmp_path):
    watch_folder = tmp_path / "incoming"
    watch_folder.mkdir()
    watcher = subscriber_factory(broker.port, f"{PREFIX}/status")
    process = start_main_py("--model", str(tiny_run), "--source", f"watch:{watch_folder}", *mqtt_flags(broker.port),
                            "--journal", str(tmp_path / "line.jsonl"), log_path=tmp_path / "main.log")
    try:
        watcher.wait_for(lambda: (last := watcher.last(f"{PREFIX}/status")) and last.payload == b"online",
                         "main.py online", timeout_s=STARTUP_S)
    finally:
        process.kill()  # kill -9
        process.wait(timeout=WAIT_S)
    watcher.wait_for(lambda: watcher.last(f"{PREFIX}/status").payload == b"offline", "the Last Will")
    late = subscriber_factory(broker.port, f"{PREFIX}/status")
    late.wait_for(lambda: late.last(f"{PREFIX}/status"), "the retained status")
    assert late.last(f"{PREFIX}/status").payload == b"offline" and late.last(f"{PREFIX}/status").retain


def test_parts_that_arrive_while_the_line_is_down_are_inspected_after_the_restart(
        broker, subscriber_factory, tiny_run, demo_test_images, tmp_path):
    watch_folder, journal = tmp_path / "incoming", tmp_path / "line.jsonl"
    watch_folder.mkdir()
    for index in range(2):  # waiting in the folder when the line starts for the first time
        drop_part(demo_test_images[index], watch_folder, f"before_first_start_{index}.png")
    watcher = subscriber_factory(broker.port, f"{PREFIX}/#")
    arguments = ("--model", str(tiny_run), "--source", f"watch:{watch_folder}", *mqtt_flags(broker.port),
                 "--journal", str(journal), "--shifts", "none")
    first = start_main_py(*arguments, log_path=tmp_path / "first.log")
    try:
        watcher.wait_for(lambda: (last := watcher.last(f"{PREFIX}/status")) and last.payload == b"online",
                         "main.py online", timeout_s=STARTUP_S)
        drop_part(demo_test_images[2], watch_folder, "during_first_run.png")
        wait_until(lambda: len(read_journal(journal)) == 3, "the first run to inspect the 3 parts")
    finally:
        first.kill()  # the crash: kill -9, no clean shutdown
        first.wait(timeout=WAIT_S)
    for index in (3, 4):
        drop_part(demo_test_images[index], watch_folder, f"while_down_{index}.png")

    second = start_main_py(*arguments, log_path=tmp_path / "second.log")
    try:
        wait_until(lambda: len(read_journal(journal)) >= 5, "the restarted line to inspect the 2 parts that "
                   "arrived while it was down", timeout_s=STARTUP_S)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=WAIT_S) == 0, (tmp_path / "second.log").read_text()[-3000:]
    finally:
        if second.poll() is None:
            second.kill()
    records = read_journal(journal)
    files = sorted(str(path) for path in watch_folder.glob("*.png"))
    assert sorted(record["source"] for record in records) == files  # every part exactly once over both runs
    assert [record["type"] for record in records] == ["result"] * 5
    assert [record["seq"] for record in records] == [1, 2, 3, 4, 5]
    watcher.wait_for(lambda: {message.json()["source"] for message in watcher.on(f"{PREFIX}/result")} == set(files),
                     "a result on MQTT for every part")
    assert "2 file(s) already in the folder: 0 already in the journal (skipped), 2 to inspect now" in \
        (tmp_path / "first.log").read_text()
    assert "5 file(s) already in the folder: 3 already in the journal (skipped), 2 to inspect now" in \
        (tmp_path / "second.log").read_text()

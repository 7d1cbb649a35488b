"""The journal and the MQTT publisher against a real Mosquitto broker: topics, retained state, Last Will, and
no result lost when the broker is down at the start, killed mid-run, or the publisher itself is restarted.

These tests work on plain record dicts; tests/test_line.py runs main.py end to end through the Inspector.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.line_fixtures import (PROJECT_ROOT, WAIT_S, broker, read_journal, subscriber_factory,  # noqa: F401
                                 wait_until)
from utils.journal import DeliveryMarker, Journal
from utils.mqtt import DEFAULT_TOPIC_PREFIX, MqttPublisher, MqttSettings, image_payload, record_topic

PREFIX = "test/line"


def append_result(journal: Journal, verdict: str = "OK") -> dict:
    seq = journal.next_seq()
    record = {"type": "result", "seq": seq, "ts": "2024-05-01T06:00:00.000Z", "source": f"part{seq}.png",
              "verdict": verdict, "score": 0.1, "threshold": 0.2, "max_blob_area": 0, "min_area": 5, "blobs": [],
              "latency_ms": 1.0, "model": "myCAE"}
    journal.append(record)
    return record


def seqs(messages) -> list[int]:
    return [message.json()["seq"] for message in messages]


def start_publisher(journal: Journal, port: int, **options) -> MqttPublisher:
    publisher = MqttPublisher(MqttSettings("127.0.0.1", port, PREFIX, **options), journal)
    publisher.start()
    return publisher


# ---------------------------------------------------------------- journal (no broker)


def test_journal_appends_lines_and_continues_seq_across_runs(tmp_path):
    path = tmp_path / "logs" / "line.jsonl"
    journal = Journal(path)
    first = [append_result(journal) for _ in range(3)]
    journal.append({"type": "shift", "name": "06:00", "total": 3})
    with pytest.raises(ValueError, match="in use"):
        Journal(path)  # a second line writing the same journal would interleave seqs
    journal.close()

    with open(path, "ab") as handle:
        handle.write(b'{"type": "result", "seq": 4, "sour')  # a crash in the middle of a write
    reopened = Journal(path)
    assert reopened.next_seq() == 4  # the torn record never counted
    reopened.append({"type": "error", "seq": 4, "ts": "t", "source": "x", "error": "unreadable"})
    reopened.close()

    records = read_journal(path)
    assert records[:3] == first
    assert [record["type"] for record in records] == ["result", "result", "result", "shift", "error"]
    assert len(path.read_bytes().splitlines()) == 6  # the torn line is kept on disk, closed by a newline


def test_journal_rejects_unknown_record_types(tmp_path):
    journal = Journal(tmp_path / "line.jsonl")
    with pytest.raises(ValueError, match="'stats'"):
        journal.append({"type": "stats"})
    with pytest.raises(ValueError):
        journal.append({"type": "result", "score": float("nan")})  # JSON has no NaN; the line reports null
    journal.close()


def test_settings_validate_with_messages_that_echo_the_value(tmp_path):
    with pytest.raises(ValueError, match="'line/#'"):
        MqttSettings("localhost", topic_prefix="line/#")
    with pytest.raises(ValueError, match="70000"):
        MqttSettings("localhost", port=70000)
    with pytest.raises(ValueError, match="secret.txt"):
        MqttSettings("localhost", username="line1", password_file=tmp_path / "secret.txt")


def test_default_topic_prefix_is_the_contracts_in_main_py_and_the_dashboard():
    import main

    assert DEFAULT_TOPIC_PREFIX == "aivision/line1"  # the README's contract
    assert MqttSettings("localhost").topic_prefix == DEFAULT_TOPIC_PREFIX
    assert main.build_parser().parse_args(["--source", "parts"]).topic_prefix == DEFAULT_TOPIC_PREFIX
    # settings.js keeps its own literal (JavaScript): it must name the same line.
    settings = (PROJECT_ROOT / "dashboard" / "settings.js").read_text()
    assert f'process.env.AIVISION_TOPIC_PREFIX || "{DEFAULT_TOPIC_PREFIX}"' in settings


def test_record_topics_and_image_payload():
    assert record_topic({"type": "result"}) == ("result", False)
    assert record_topic({"type": "error"}) == ("error", False)
    assert record_topic({"type": "shift", "name": "14:00"}) == ("shift/14:00", True)
    assert image_payload(7, b"\x89PNG") == {"seq": 7, "png_base64": "iVBORw=="}


# ---------------------------------------------------------------- publisher on a real broker


def test_publisher_delivers_every_record_and_retained_state(broker, subscriber_factory, tmp_path):
    watcher = subscriber_factory(broker.port, f"{PREFIX}/#")
    journal = Journal(tmp_path / "line.jsonl")
    publisher = start_publisher(journal, broker.port)
    watcher.wait_for(lambda: (last := watcher.last(f"{PREFIX}/status")) and last.payload == b"online", "online")

    results = [append_result(journal, verdict) for verdict in ("OK", "NOK", "OK")]
    journal.append({"type": "error", "seq": journal.next_seq(), "ts": "t", "source": "bad.png", "error": "corrupt"})
    journal.append({"type": "shift", "name": "06:00", "total": 3, "ok": 2, "nok": 1})
    publisher.notify()
    publisher.publish_state("stats", {"total": 3, "ok": 2, "nok": 1}, resend_on_connect=True)

    watcher.wait_for(lambda: len(watcher.on(f"{PREFIX}/result")) == 3 and watcher.on(f"{PREFIX}/shift/06:00"),
                     "3 results and a shift summary")
    received = [message.json() for message in watcher.on(f"{PREFIX}/result")]
    assert received == [{key: value for key, value in record.items() if key != "type"} for record in results]
    assert [message.json()["source"] for message in watcher.on(f"{PREFIX}/error")] == ["bad.png"]
    assert publisher.close(timeout_s=WAIT_S) == 0
    assert DeliveryMarker(journal.path).read() == journal.size
    watcher.wait_for(lambda: watcher.last(f"{PREFIX}/status").payload == b"offline", "offline after close")

    late = subscriber_factory(broker.port, f"{PREFIX}/#")  # a dashboard opened later gets the retained state
    late.wait_for(lambda: late.last(f"{PREFIX}/stats") and late.last(f"{PREFIX}/shift/06:00"), "retained state")
    assert late.last(f"{PREFIX}/stats").json() == {"total": 3, "ok": 2, "nok": 1}
    assert late.last(f"{PREFIX}/status").payload == b"offline" and late.last(f"{PREFIX}/status").retain
    assert late.on(f"{PREFIX}/result") == []  # results are events, not retained
    journal.close()


def test_broker_down_at_start_then_up_delivers_everything(broker, subscriber_factory, tmp_path):
    broker.stop()
    journal = Journal(tmp_path / "line.jsonl")
    publisher = start_publisher(journal, broker.port, max_in_flight=2)
    written = [append_result(journal)["seq"] for _ in range(6)]
    publisher.notify()
    wait_until(lambda: publisher.in_flight == 2, "the in-flight window to fill")
    assert not publisher.connected and publisher.undelivered_records() == 6

    broker.start()
    watcher = subscriber_factory(broker.port, f"{PREFIX}/result")
    assert publisher.wait_for_delivery(WAIT_S), "journal not acknowledged after the broker came up"
    watcher.wait_for(lambda: len(watcher.on(f"{PREFIX}/result")) >= 6, "6 results")
    assert sorted(set(seqs(watcher.on(f"{PREFIX}/result")))) == written
    assert publisher.close(timeout_s=WAIT_S) == 0
    journal.close()


def test_broker_killed_mid_run_loses_nothing_and_memory_stays_bounded(broker, subscriber_factory, tmp_path):
    # A persistent session lets the broker keep QoS 1 messages for this subscriber across its own restart.
    watcher = subscriber_factory(broker.port, f"{PREFIX}/result", persistent=True)
    journal = Journal(tmp_path / "line.jsonl")
    publisher = start_publisher(journal, broker.port, max_in_flight=3)
    for _ in range(4):
        append_result(journal)
    publisher.notify()
    watcher.wait_for(lambda: len(watcher.on(f"{PREFIX}/result")) == 4, "results before the outage")
    broker.save()
    broker.kill()  # kill -9 mid-run
    wait_until(lambda: not publisher.connected, "the publisher to notice the outage")

    for _ in range(20):  # the line keeps inspecting during the outage
        append_result(journal)
        publisher.notify()
    wait_until(lambda: publisher.in_flight == 3, "the in-flight window to fill")
    assert publisher.in_flight == 3  # the other 17 wait in the journal, not in memory

    broker.start()
    assert publisher.wait_for_delivery(WAIT_S), f"{publisher.undelivered_records()} records never acknowledged"
    watcher.wait_for(lambda: set(seqs(watcher.on(f"{PREFIX}/result"))) == set(range(1, 25)), "all 24 results")
    duplicates = len(watcher.on(f"{PREFIX}/result")) - 24
    assert duplicates <= 3  # only re-sent in-flight messages may arrive twice, recognisable by seq
    publisher.close(timeout_s=WAIT_S)
    journal.close()


def test_records_left_undelivered_are_delivered_by_the_next_run(broker, subscriber_factory, tmp_path):
    broker.stop()
    path = tmp_path / "line.jsonl"
    journal = Journal(path)
    publisher = start_publisher(journal, broker.port)
    for _ in range(3):
        append_result(journal)
    assert publisher.close(timeout_s=0) == 3  # the run ends during the outage
    journal.close()

    broker.start()
    watcher = subscriber_factory(broker.port, f"{PREFIX}/result")
    journal = Journal(path)
    publisher = start_publisher(journal, broker.port)
    assert publisher.wait_for_delivery(WAIT_S)
    watcher.wait_for(lambda: sorted(set(seqs(watcher.on(f"{PREFIX}/result")))) == [1, 2, 3],
                     "the earlier run's results")
    assert publisher.close(timeout_s=WAIT_S) == 0
    journal.close()


def test_last_will_marks_a_killed_publisher_offline(broker, subscriber_factory, tmp_path):
    code = ("import sys\nfrom utils.journal import Journal\nfrom utils.mqtt import MqttPublisher, MqttSettings\n"
            "MqttPublisher(MqttSettings('127.0.0.1', int(sys.argv[1]), sys.argv[2]), Journal(sys.argv[3])).start()\n"
            "sys.stdin.read()\n")
    process = subprocess.Popen([sys.executable, "-c", code, str(broker.port), PREFIX, str(tmp_path / "j.jsonl")],
                               cwd=PROJECT_ROOT, stdin=subprocess.PIPE)
    watcher = subscriber_factory(broker.port, f"{PREFIX}/status")
    try:
        watcher.wait_for(lambda: (last := watcher.last(f"{PREFIX}/status")) and last.payload == b"online", "online")
    finally:
        process.kill()  # kill -9: no chance to say goodbye
        process.wait(timeout=WAIT_S)
    watcher.wait_for(lambda: watcher.last(f"{PREFIX}/status").payload == b"offline", "the Last Will")
    late = subscriber_factory(broker.port, f"{PREFIX}/status")
    late.wait_for(lambda: late.last(f"{PREFIX}/status"), "retained status")
    assert late.last(f"{PREFIX}/status").payload == b"offline" and late.last(f"{PREFIX}/status").retain

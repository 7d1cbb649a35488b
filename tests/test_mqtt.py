"""The journal and the MQTT publisher against a real Mosquitto broker: topics, retained state, Last Will, and
no result lost when the broker is down at the start, killed mid-run, or the publisher itself is restarted; seqs
that stay unique across torn writes; brokers that cannot be reached (reported at once, not per retry) or that
reject the line (bad credentials, a certificate from another CA: the publisher stops, the journal keeps all).

These tests work on plain record dicts; tests/test_line.py runs main.py end to end through the Inspector.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from functools import partial

import pytest

from tests.line_fixtures import (PROJECT_ROOT, WAIT_S, Broker, broker, configure_broker, find_mosquitto,  # noqa: F401
                                 free_port, make_tls_files, read_journal, start_secured_broker, subscriber_factory,
                                 wait_until, write_password_file)
from utils.journal import DeliveryMarker, Journal
from utils.mqtt import (DEFAULT_TOPIC_PREFIX, BrokerRejectedError, MqttPublisher, MqttSettings, check_broker,
                        image_payload, record_topic)

PREFIX = "test/line"


def append_result(journal: Journal, verdict: str = "OK", source: str | None = None) -> dict:
    seq = journal.next_seq()
    record = {"type": "result", "seq": seq, "ts": "2024-05-01T06:00:00.000Z", "source": source or f"part{seq}.png",
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
    assert reopened.next_seq() == 5  # the torn record's seq is never given out again
    reopened.append({"type": "error", "seq": 5, "ts": "t", "source": "x", "error": "unreadable"})
    reopened.close()

    records = read_journal(path)
    assert records[:3] == first
    assert [record["type"] for record in records] == ["result", "result", "result", "shift", "error"]
    assert len(path.read_bytes().splitlines()) == 6  # the torn line is kept on disk, closed by a newline


def test_a_journal_torn_anywhere_in_its_last_line_never_gives_a_seq_out_twice(tmp_path):
    path = tmp_path / "line.jsonl"
    journal = Journal(path)
    for _ in range(10):  # seq 10 has two digits: a tear can leave "seq":1 behind
        append_result(journal)
    journal.close()
    whole = path.read_bytes()
    last_line_start = whole.rstrip(b"\n").rfind(b"\n") + 1
    for cut in range(last_line_start + 1, len(whole)):  # every power cut while the 10th record was written
        torn = tmp_path / f"torn{cut}.jsonl"
        torn.write_bytes(whole[:cut])
        reopened = Journal(torn)
        first = reopened.last_seq
        reopened.close()
        again = Journal(torn)  # a second restart before anything is written: the same answer
        assert first == again.last_seq >= 10, f"cut at byte {cut}: {whole[last_line_start:cut]!r}"
        seq = again.next_seq()
        again.append({"type": "error", "seq": seq, "ts": "t", "source": "after.png", "error": "x"})
        again.close()
        assert seq > 10 and Journal(torn).next_seq() > seq, f"cut at byte {cut}"
        seqs_on_disk = [record["seq"] for record in read_journal(torn)]
        assert len(seqs_on_disk) == len(set(seqs_on_disk)) and seqs_on_disk == sorted(seqs_on_disk)


def test_a_subscriber_deduplicating_by_seq_gets_the_parts_after_a_torn_line(broker, subscriber_factory, tmp_path):
    watcher = subscriber_factory(broker.port, f"{PREFIX}/result")
    path = tmp_path / "line.jsonl"
    journal = Journal(path)
    publisher = start_publisher(journal, broker.port)
    for _ in range(3):
        append_result(journal)
    publisher.notify()
    watcher.wait_for(lambda: len(watcher.on(f"{PREFIX}/result")) == 3, "the first 3 results")
    assert publisher.close(timeout_s=WAIT_S) == 0
    journal.close()
    whole = path.read_bytes()
    path.write_bytes(whole[:whole.rstrip(b"\n").rfind(b"\n") + 12])  # the power cut took most of seq 3's line

    journal = Journal(path)
    publisher = start_publisher(journal, broker.port)
    after = [append_result(journal, source=f"after_restart_{index}.png")["source"] for index in range(2)]
    publisher.notify()
    assert publisher.wait_for_delivery(WAIT_S)
    watcher.wait_for(lambda: len(watcher.on(f"{PREFIX}/result")) >= 5, "the 2 results after the restart")
    by_seq: dict[int, str] = {}
    for message in watcher.on(f"{PREFIX}/result"):  # de-duplicate as the contract tells subscribers to
        by_seq.setdefault(message.json()["seq"], message.json()["source"])
    assert set(after) <= set(by_seq.values()), f"a part after the tear was taken for a duplicate: {by_seq}"
    publisher.close(timeout_s=WAIT_S)
    journal.close()


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


# ---------------------------------------------------------------- brokers that cannot be reached or say no


def warnings_from_publisher(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name == "utils.mqtt" and record.levelno == logging.WARNING]


def errors_logged(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


@pytest.fixture
def password_broker(tmp_path):
    """A broker whose port wants user line1 with password "secret", and an anonymous port for subscribers."""
    folder = tmp_path / "password_broker"
    anonymous_port = free_port()
    secured = start_secured_broker(folder, anonymous_port=anonymous_port,
                                   password_file=write_password_file(tmp_path / "passwd", "line1", "secret"))
    yield secured, anonymous_port
    secured.stop()


@pytest.fixture
def tls_broker(tmp_path):
    """A broker speaking TLS only, with a certificate for 127.0.0.1 from a CA made for the test."""
    tls = make_tls_files(tmp_path / "tls")
    secured = start_secured_broker(tmp_path / "tls_broker", tls=tls)
    yield secured, tls
    secured.stop()


@pytest.fixture
def password_files(tmp_path):
    (tmp_path / "right.secret").write_text("secret\n")
    (tmp_path / "wrong.secret").write_text("not the password\n")
    return {"right": tmp_path / "right.secret", "wrong": tmp_path / "wrong.secret"}


def start_rejectable_publisher(journal: Journal, port: int, **options) -> tuple[MqttPublisher, threading.Event]:
    rejected = threading.Event()
    publisher = MqttPublisher(MqttSettings("127.0.0.1", port, PREFIX, **options), journal,
                              on_permanent_error=lambda error: rejected.set())
    publisher.start()
    return publisher, rejected


def test_an_unreachable_broker_is_reported_at_once_and_not_at_every_retry(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="utils.mqtt")
    port = free_port()  # nothing listens there: connection refused
    journal = Journal(tmp_path / "line.jsonl")
    publisher = start_publisher(journal, port, reconnect_min_s=0.02, reconnect_max_s=0.05)
    for _ in range(2):
        append_result(journal)
    publisher.notify()
    wait_until(lambda: publisher.failed_attempts >= 10, "10 failed connection attempts")
    warnings = warnings_from_publisher(caplog)
    assert warnings, "an unreachable broker was not reported while the publisher runs"
    assert f"127.0.0.1:{port}" in warnings[0] and "connection refused" in warnings[0]
    assert len(warnings) < 10  # paho retried at least 10 times: the log said so once, not each time
    assert publisher.permanent_error is None and not errors_logged(caplog)  # a broker may come back: go on
    publisher.notify()  # the line goes on journaling
    assert publisher.close(timeout_s=0) == 2
    assert DeliveryMarker(journal.path).read() == 0  # both records wait for the next run
    journal.close()


def test_wrong_credentials_stop_the_publisher_and_the_journal_keeps_every_record(
        password_broker, password_files, subscriber_factory, tmp_path, caplog):
    broker, anonymous_port = password_broker
    path = tmp_path / "line.jsonl"
    journal = Journal(path)
    publisher, rejected = start_rejectable_publisher(journal, broker.port, username="line1",
                                                     password_file=password_files["wrong"])
    written = [append_result(journal)["seq"] for _ in range(3)]
    assert rejected.wait(WAIT_S), "the publisher did not give up on wrong credentials"
    message = str(publisher.permanent_error)
    assert f"127.0.0.1:{broker.port}" in message and "Not authorized" in message and "--password-file" in message
    with pytest.raises(BrokerRejectedError, match="Not authorized"):
        publisher.notify()  # what ends the line's run, right after it journaled a record
    with pytest.raises(BrokerRejectedError):
        publisher.publish_state("stats", {"total": 3})
    assert len(errors_logged(caplog)) == 1 and "Not authorized" in errors_logged(caplog)[0]
    assert publisher.close(timeout_s=WAIT_S) == 3
    journal.close()

    watcher = subscriber_factory(anonymous_port, f"{PREFIX}/result")
    journal = Journal(path)  # the next run, with the right password, delivers what the rejected one journaled
    publisher = start_publisher(journal, broker.port, username="line1", password_file=password_files["right"])
    assert publisher.wait_for_delivery(WAIT_S)
    watcher.wait_for(lambda: sorted(set(seqs(watcher.on(f"{PREFIX}/result")))) == written, "the 3 results")
    assert publisher.close(timeout_s=WAIT_S) == 0
    journal.close()


def test_check_broker_tells_a_rejection_from_a_broker_that_is_away(password_broker, password_files):
    broker, _ = password_broker
    assert check_broker(MqttSettings("127.0.0.1", broker.port, username="line1",
                                     password_file=password_files["right"])) is None
    for settings in (MqttSettings("127.0.0.1", broker.port, username="line1", password_file=password_files["wrong"]),
                     MqttSettings("127.0.0.1", broker.port)):  # no user name at all
        with pytest.raises(BrokerRejectedError, match=f"127.0.0.1:{broker.port}.*Not authorized"):
            check_broker(settings)
    assert "connection refused" in check_broker(MqttSettings("127.0.0.1", free_port()))


def test_a_broker_certificate_from_another_ca_stops_the_publisher(tls_broker, tmp_path):
    broker, tls = tls_broker
    trusting = Journal(tmp_path / "trusting.jsonl")
    publisher = start_publisher(trusting, broker.port, tls=True, ca=tls["ca"])
    wait_until(lambda: publisher.connected, "a TLS connection with the CA that signed the broker's certificate")
    assert check_broker(MqttSettings("127.0.0.1", broker.port, tls=True, ca=tls["ca"])) is None
    publisher.close(timeout_s=WAIT_S)
    trusting.close()

    journal = Journal(tmp_path / "line.jsonl")
    publisher, rejected = start_rejectable_publisher(journal, broker.port, tls=True, ca=tls["other_ca"])
    append_result(journal)
    assert rejected.wait(WAIT_S), "the publisher did not give up on a certificate it cannot verify"
    assert "certificate" in str(publisher.permanent_error) and "--ca" in str(publisher.permanent_error)
    assert publisher.close(timeout_s=WAIT_S) == 1
    journal.close()
    with pytest.raises(BrokerRejectedError, match="certificate"):
        check_broker(MqttSettings("127.0.0.1", broker.port, tls=True, ca=tls["other_ca"]))


def test_a_broker_that_requires_a_client_certificate_takes_only_one_its_ca_signed(tmp_path):
    tls = make_tls_files(tmp_path / "tls")
    secured = start_secured_broker(tmp_path / "broker", tls=tls, require_certificate=True)
    try:
        settings = partial(MqttSettings, "127.0.0.1", secured.port, tls=True, ca=tls["ca"])
        assert check_broker(settings(cert=tls["client_cert"], key=tls["client_key"])) is None
        for refused, alert in [({}, "certificate required"),
                               ({"cert": tls["stranger_cert"], "key": tls["stranger_key"]}, "unknown ca")]:
            with pytest.raises(BrokerRejectedError, match=f"client certificate \\({alert}\\).*--cert and --key"):
                check_broker(settings(**refused))
    finally:
        secured.stop()


def test_tls_to_a_plain_port_and_plain_mqtt_to_a_tls_port_are_reported_with_a_hint(broker, tls_broker, tmp_path,
                                                                                   caplog):
    plain_broker, (tls_only_broker, tls) = broker, tls_broker
    caplog.set_level(logging.INFO, logger="utils.mqtt")
    cases = ((plain_broker.port, {"tls": True, "ca": tls["ca"]}, "TLS handshake failed"),
             (tls_only_broker.port, {}, "closed the connection before answering"))
    for index, (port, options, expected) in enumerate(cases):
        caplog.clear()
        journal = Journal(tmp_path / f"line{index}.jsonl")
        publisher = start_publisher(journal, port, reconnect_min_s=0.05, reconnect_max_s=0.1, **options)
        wait_until(lambda: publisher.problem_reports >= 1, f"a report of {expected!r}")
        (report,) = warnings_from_publisher(caplog)[:1]
        assert f"127.0.0.1:{port}" in report and expected in report
        assert ("TLS listener" if options else "add --tls") in report  # what the operator should check
        assert publisher.permanent_error is None  # a listener can be reconfigured: keep trying
        publisher.close(timeout_s=0)
        journal.close()
        assert expected in check_broker(MqttSettings("127.0.0.1", port, **options))  # the same before a start

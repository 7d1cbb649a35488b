"""The line's MQTT publisher: delivers the journal (utils/journal.py) to the broker, even across outages.

Topics (the MQTT contract, also in the README), under a prefix P (main.py's ``--topic-prefix``, default
``DEFAULT_TOPIC_PREFIX`` below):

=====================  ======  =======  ==============================================================
topic                  QoS     retain   payload
=====================  ======  =======  ==============================================================
P/status               1       yes      ``online``; the Last Will (also retained) is ``offline``
P/result               1       no       JSON: seq, ts, source, verdict, score, threshold, max_blob_area,
                                        min_area, blobs [{area, bbox}], latency_ms, model
P/error                1       no       JSON: seq, ts, source, error
P/shift/<HH:MM>        1       yes      JSON stats of the finished shift that started at HH:MM
P/stats                0       yes      JSON: total, ok, nok, errors, defect_pct, parts_per_min, since
P/image/<kind>         0       yes      JSON {"seq": n, "png_base64": "..."}; kind = input, reconstruction,
                                        residual, defect (the pictures of utils.plots.result_pictures)
=====================  ======  =======  ==============================================================

How nothing is lost, with bounded memory (the journal is the outbox):

1. The line appends every result, error and shift summary to the journal, flushed and fsynced, *before*
   anything is published; ``seq`` is unique within a journal (see utils/journal.py for what it guarantees).
2. A delivery thread reads the journal from its send offset and hands records to paho at QoS 1, at most
   ``max_in_flight`` unacknowledged at a time. Records behind that window stay on disk only, so an outage of
   any length costs disk, not RAM.
3. paho reconnects by itself (back-off 1 to 30 s, also when the broker is down at start), keeps the in-flight
   window and re-sends it after reconnecting; each PUBACK frees a slot and the thread reads on.
4. The offset up to which every record is acknowledged is the journal's delivery marker
   (``<journal>.delivered``); this module moves it on PUBACKs. A main.py restarted after a crash, a kill or an
   exit during an outage first delivers everything after that offset. Without that file (a journal never
   published from) delivery starts at the journal's end. A record can therefore arrive twice (a PUBACK lost in
   a drop, or a crash between a PUBACK and the offset write): subscribers de-duplicate by ``seq``.
5. Status, stats and images are state, not history: sent only while connected and never queued; status and
   the latest stats are sent again on every reconnect. Stats and images use QoS 0 so that paho never re-sends a
   stale copy after a fresher one.

What the operator is told (from paho's own callbacks: on_connect_fail, on_connect's reason code, on_disconnect,
on_log), through this module's logger:

* A broker that cannot be reached (wrong host or port, connection refused, TLS to a plain port, plain MQTT to a
  TLS port, a connection lost) is a warning at the first failed attempt, naming host, port and the reason, then
  again only when the reason changes or a report interval has passed (30 s, doubling up to 10 min), with the
  number of failed attempts meanwhile: paho goes on retrying with its back-off; the line goes on journaling.
* A rejection that no retry can fix (CONNACK "Not authorized" or "Bad user name or password"; the broker's TLS
  certificate failing verification) is an error: paho stops retrying, ``permanent_error`` holds a
  :class:`BrokerRejectedError`, the ``on_permanent_error`` callback (if given) is called, and the producing
  thread's next ``notify`` or ``publish_state`` raises it, ending the run. The journal keeps every record for
  the next run. :func:`check_broker` finds the same rejections before a line starts.
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import re
import select
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import paho.mqtt.client as mqtt

from utils.journal import DeliveryMarker, Journal, read_records

log = logging.getLogger(__name__)

DEFAULT_TOPIC_PREFIX = "aivision/line1"  # main.py's --topic-prefix default; the dashboard's default line too
# CONNACK reason codes that no retry can fix: Bad user name or password, Not authorized (MQTT 5 numbering;
# paho maps MQTT 3.1.1's return codes 4 and 5 to them).
CREDENTIALS_REJECTED = frozenset({134, 135})
REPORT_FIRST_S = 30.0   # a problem that goes on is reported again after this long, then twice as long, ...
REPORT_MAX_S = 600.0    # ... up to this interval


class BrokerRejectedError(RuntimeError):
    """The broker rejected the line for a reason retrying cannot fix: bad credentials, a certificate rejected."""


@dataclass(frozen=True)
class MqttSettings:
    """How to reach the broker. Options mirror main.py's flags."""

    host: str
    port: int = 1883
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    client_id: str = ""          # "" lets the broker pick one
    tls: bool = False
    ca: Path | None = None       # CA bundle that signed the broker's certificate (system store if None)
    cert: Path | None = None     # client certificate, for brokers that require one
    key: Path | None = None
    username: str | None = None
    password_file: Path | None = None  # read once; keeps the password off the command line and out of `ps`
    keepalive_s: int = 30
    max_in_flight: int = 100     # journal records handed to paho and not yet acknowledged
    reconnect_min_s: float = 1.0   # paho's reconnect back-off: the first wait, doubled per failed attempt ...
    reconnect_max_s: float = 30.0  # ... up to this one

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError(f"MQTT host must be a host name or address; got {self.host!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"MQTT port must be in 1..65535; got {self.port!r}")
        prefix = self.topic_prefix
        if not prefix or prefix.startswith("/") or prefix.endswith("/") or any(c in prefix for c in "+#\0"):
            raise ValueError(f"topic prefix must be non-empty, without + # or a leading/trailing /; got {prefix!r}")
        if (self.cert is None) != (self.key is None):
            raise ValueError(f"--cert and --key go together; got cert={self.cert!r} key={self.key!r}")
        if self.password_file is not None and self.username is None:
            raise ValueError("--password-file needs --username")
        for flag, path in (("--ca", self.ca), ("--cert", self.cert), ("--key", self.key),
                           ("--password-file", self.password_file)):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{flag} file {str(path)!r} does not exist")
        if not 1 <= self.max_in_flight <= 10000:
            raise ValueError(f"max_in_flight must be in 1..10000; got {self.max_in_flight!r}")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ValueError("reconnect back-off must satisfy 0 < min <= max; got "
                             f"{self.reconnect_min_s!r}, {self.reconnect_max_s!r}")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def encode_payload(payload: dict[str, Any] | str | bytes) -> bytes:
    """Dicts as compact JSON, strings as UTF-8, bytes unchanged."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def image_payload(seq: int, png: bytes) -> dict[str, Any]:
    """The P/image/<kind> payload: the part's seq and the PNG file, base64-encoded."""
    return {"seq": seq, "png_base64": base64.b64encode(png).decode("ascii")}


def record_topic(record: dict[str, Any]) -> tuple[str, bool]:
    """(topic suffix, retain) for a journal record."""
    if record["type"] == "shift":
        return f"shift/{record['name']}", True
    return record["type"], False


# ---------------------------------------------------------------- connecting, and saying why it fails


def new_client(settings: MqttSettings, *, will_topic: str | None = None) -> mqtt.Client:
    """A paho client with the settings' credentials, TLS and reconnect back-off; Last Will "offline" on `will_topic`."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=settings.client_id,
                         protocol=mqtt.MQTTv311, clean_session=True)
    if will_topic is not None:
        client.will_set(will_topic, "offline", qos=1, retain=True)
    if settings.username is not None:
        password = None
        if settings.password_file is not None:
            password = Path(settings.password_file).read_text().rstrip("\r\n")
        client.username_pw_set(settings.username, password)
    if settings.tls:
        client.tls_set(ca_certs=_optional_str(settings.ca), certfile=_optional_str(settings.cert),
                       keyfile=_optional_str(settings.key))
    client.reconnect_delay_set(min_delay=settings.reconnect_min_s, max_delay=settings.reconnect_max_s)
    return client


def connect_failure(error: BaseException | None, settings: MqttSettings) -> tuple[str, bool]:
    """(why, permanent) for an exception raised while connecting: permanent if no retry can fix it."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return (f"its TLS certificate does not verify ({error.verify_message or error.reason}): check --ca (the "
                "CA that signed the broker's certificate) and that --mqtt-host is a name in that certificate"), True
    if isinstance(error, ConnectionRefusedError):
        return "connection refused: nothing listens there (is the broker running, is the port right?)", False
    if isinstance(error, socket.gaierror):
        return f"host name not found ({error.strerror})", False
    if isinstance(error, TimeoutError):
        return "no answer (timed out)", False
    if settings.tls and isinstance(error, (ssl.SSLError, ConnectionError)):
        return (f"TLS handshake failed ({error}): is {settings.address} a TLS listener? "
                "(for plain MQTT leave out --tls)"), False
    return f"connection failed ({error or 'no reason given'})", False


def connack_failure(reason_code: Any) -> tuple[str, bool]:
    """(why, permanent) for a CONNACK that refused the connection."""
    if reason_code.value in CREDENTIALS_REJECTED:
        return f"it rejected the line's credentials: {reason_code} (check --username and --password-file)", True
    return f"it refused the connection: {reason_code}", False


def rejection(settings: MqttSettings, why: str) -> BrokerRejectedError:
    return BrokerRejectedError(f"MQTT broker {settings.address}: {why}")


# TLS alerts of a broker that will not take the line's client certificate. With TLS 1.3 they arrive after the
# handshake, as the first read fails: the connection looks merely closed, but no retry can change the answer.
CLIENT_CERTIFICATE_ALERT = re.compile(r"ALERT_(CERTIFICATE_REQUIRED|BAD_CERTIFICATE|UNKNOWN_CA|CERTIFICATE_UNKNOWN|"
                                      r"CERTIFICATE_REVOKED|CERTIFICATE_EXPIRED|UNSUPPORTED_CERTIFICATE|ACCESS_DENIED)")


def closed_before_answer(settings: MqttSettings, detail: str | None = None) -> tuple[str, bool]:
    """(why, permanent) when the broker closed the connection before it answered the CONNECT; `detail` is the
    socket's error, if paho logged one."""
    alert = CLIENT_CERTIFICATE_ALERT.search(detail or "") if settings.tls else None
    if alert:
        return (f"it rejected the line's client certificate ({alert.group(1).lower().replace('_', ' ')}): pass "
                "--cert and --key with a certificate that the broker's CA signed"), True
    why = "it closed the connection before answering" + (f" ({detail})" if detail else "")
    return (why if settings.tls else f"{why}: is it a TLS port? (then add --tls)"), False


def early_tls_alert(sock: Any, wait_s: float = 0.3) -> str | None:
    """The TLS error a broker sent right after the handshake, if any (waits at most `wait_s` for its first bytes).

    A TLS 1.3 broker refuses a client certificate only after the handshake; a CONNECT written to the connection
    it then closes is answered with a reset that can discard its alert unread. Before the CONNECT an MQTT broker
    sends only TLS records (session tickets, or that alert), so reading them here takes nothing from paho."""
    if not isinstance(sock, ssl.SSLSocket) or not select.select([sock], [], [], wait_s)[0]:
        return None
    try:
        sock.recv(1)
    except ssl.SSLWantReadError:  # session tickets only: the broker took the certificate
        return None
    except (ssl.SSLError, OSError) as error:
        return str(error)
    return None


def check_broker(settings: MqttSettings, *, timeout_s: float = 5.0) -> str | None:
    """Connect once and leave: None if the broker accepts the line, else why it cannot be reached right now.

    Raises BrokerRejectedError if the broker rejects the credentials or its certificate fails verification:
    a line started anyway would journal parts that no retry could deliver. Takes at most about `timeout_s`
    (plus the system's name lookup). Publishes nothing and leaves no Last Will.
    """
    client = new_client(settings)
    client.connect_timeout = timeout_s
    answers: list[Any] = []
    socket_errors: list[str] = []  # e.g. "failed to receive on socket: [SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] …"
    client.on_connect = lambda client, userdata, flags, reason_code, properties: answers.append(reason_code)
    client.on_log = lambda client, userdata, level, text: (socket_errors.append(text) if level == mqtt.MQTT_LOG_ERR
                                                            else None)
    # The CONNECT then waits for client.loop instead of being written inside connect(): see early_tls_alert.
    client.on_socket_register_write = lambda client, userdata, sock: None
    try:
        client.connect(settings.host, settings.port, keepalive=settings.keepalive_s)
    except OSError as error:
        why, permanent = connect_failure(error, settings)
        if permanent:
            raise rejection(settings, why) from None
        return why
    alert = early_tls_alert(client.socket()) if settings.tls else None
    if alert:
        client.disconnect()
        why, permanent = closed_before_answer(settings, alert)
        if permanent:
            raise rejection(settings, why)
        return why
    lost = False
    deadline = time.monotonic() + timeout_s
    while not answers and not lost and time.monotonic() < deadline:
        lost = client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS
    client.disconnect()
    client.loop(timeout=0.1)  # sends the DISCONNECT and closes the socket
    if not answers and not lost:
        return f"no answer to the CONNECT within {timeout_s:g} s"
    if not answers:
        why, permanent = closed_before_answer(settings, socket_errors[0] if socket_errors else None)
        if permanent:
            raise rejection(settings, why)
        return why
    why, permanent = connack_failure(answers[0])
    if permanent:
        raise rejection(settings, why)
    return why if answers[0].is_failure else None


class ProblemLog:
    """Logs a connection's problems without spamming: the first at once, then only when the reason changes or
    REPORT_FIRST_S (doubling up to REPORT_MAX_S) has passed, with the count of failed attempts meanwhile.
    "Connected" is logged for the first connection and after problems were reported."""

    def __init__(self, address: str, *, retry_note: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.address, self.retry_note, self.clock = address, retry_note, clock
        self.failures = 0           # failed attempts and lost connections since the last good connection
        self.reports = 0            # warnings logged so far
        self._unreported = 0        # failures since the last warning
        self._reason: str | None = None  # of the last warning
        self._next_report_at = 0.0
        self._interval = REPORT_FIRST_S
        self._announce_connection = True

    def problem(self, reason: str) -> None:
        self.failures += 1
        self._unreported += 1
        now = self.clock()
        if reason == self._reason and now < self._next_report_at:
            return
        if reason == self._reason:
            self._interval = min(2 * self._interval, REPORT_MAX_S)
            log.warning("MQTT broker %s still cannot be reached: %s (%d failed attempts since the last report)",
                        self.address, reason, self._unreported)
        else:
            self._interval = REPORT_FIRST_S
            log.warning("MQTT broker %s cannot be reached: %s; %s", self.address, reason, self.retry_note)
        self._reason, self._next_report_at = reason, now + self._interval
        self._unreported = 0
        self.reports += 1
        self._announce_connection = True

    def connected(self) -> None:
        if self._announce_connection:
            after = f" after {self.failures} failed attempts" if self.failures else ""
            log.info("MQTT connected to %s%s", self.address, after)
        self._announce_connection = False
        self.failures = self._unreported = 0


class MqttPublisher:
    """Delivers the journal to the broker and publishes status, stats and images (see the module docstring).

    Use: ``start()``; after each ``journal.append`` call ``notify()``; ``publish_state`` for stats and
    images; ``close()`` at the end. Thread-safe for one producing thread.
    """

    def __init__(self, settings: MqttSettings, journal: Journal, *,
                 on_permanent_error: Callable[[BrokerRejectedError], None] | None = None) -> None:
        self.settings = settings
        self.journal = journal
        self.on_permanent_error = on_permanent_error  # called from paho's thread, e.g. to stop the line at once
        self.permanent_error: BrokerRejectedError | None = None
        self._problems = ProblemLog(settings.address, retry_note=(
            f"the line goes on and keeps results in {journal.path}; retrying with back-off up to "
            f"{settings.reconnect_max_s:g} s"))
        self._awaiting_connack = False  # a socket is open and the broker has not answered the CONNECT yet
        self._socket_error: str | None = None  # paho's last error message about the socket, for the next report
        self.marker = DeliveryMarker(journal.path)
        saved = self.marker.read()
        self._send_offset = saved if saved is not None and saved <= journal.size else journal.size
        self._delivered_offset = self._send_offset
        self._window: dict[int, tuple[int, int]] = {}  # paho mid → (start, end) offsets; delivery thread only
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._progress = threading.Condition()
        self._connected = threading.Event()
        self._closing = threading.Event()
        self._state_lock = threading.Lock()
        self._resend_on_connect: dict[str, bytes] = {}
        self.client = self._make_client()
        self._thread = threading.Thread(target=self._deliver_forever, name="journal-delivery", daemon=True)

    def topic(self, suffix: str) -> str:
        return f"{self.settings.topic_prefix}/{suffix}"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def in_flight(self) -> int:
        """Journal records handed to paho and not yet acknowledged (never more than max_in_flight)."""
        return len(self._window)

    @property
    def failed_attempts(self) -> int:
        """Failed connection attempts and lost connections since the last good connection."""
        return self._problems.failures

    @property
    def problem_reports(self) -> int:
        """How many warnings about an unreachable broker were logged (far fewer than failed attempts)."""
        return self._problems.reports

    def _make_client(self) -> mqtt.Client:
        client = new_client(self.settings, will_topic=self.topic("status"))
        client.max_inflight_messages_set(self.settings.max_in_flight + 10)  # + room for status messages
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_log = self._on_log
        return client

    # paho calls these from its network thread: they report, and hand over to the delivery thread.
    def _on_socket_open(self, client, userdata, sock) -> None:
        self._awaiting_connack, self._socket_error = True, None

    def _on_log(self, client, userdata, level, text) -> None:
        if level != mqtt.MQTT_LOG_ERR:
            return
        if text.startswith("Caught exception"):  # paho swallows exceptions in callbacks: a bug here, show it
            log.error("paho: %s", text)
        else:
            self._socket_error = text  # e.g. "failed to receive on socket: ...": the reason for on_disconnect

    def _on_connect_fail(self, client, userdata) -> None:
        # paho calls this inside its `except OSError:` around connecting: the exception handled is the reason.
        self._failed(*connect_failure(sys.exc_info()[1], self.settings))

    def _failed(self, why: str, permanent: bool) -> None:
        if permanent:
            self._reject(why)
        else:
            self._problems.problem(why)

    def _reject(self, why: str) -> None:
        """A permanent error: stop paho's retrying and let the line stop (see the module docstring)."""
        if self.permanent_error is not None:
            return
        self.permanent_error = rejection(self.settings, why)
        log.error("%s; no retry can fix this: the line stops, and every journaled result stays in %s for the "
                  "next run", self.permanent_error, self.journal.path)
        self.client.disconnect()  # ends paho's reconnect loop
        self._wake.set()
        if self.on_permanent_error is not None:
            self.on_permanent_error(self.permanent_error)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._awaiting_connack = False
        if reason_code.is_failure:
            self._failed(*connack_failure(reason_code))
            return
        self._problems.connected()
        client.publish(self.topic("status"), "online", qos=1, retain=True)
        with self._state_lock:
            for topic, data in self._resend_on_connect.items():
                client.publish(topic, data, qos=0, retain=True)
        self._connected.set()
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        reporting = not self._closing.is_set() and self.permanent_error is None
        if reporting and self._awaiting_connack:
            self._failed(*closed_before_answer(self.settings, self._socket_error))
        elif reporting and self._connected.is_set():
            # MQTT 3.1.1 brokers give no reason; paho's read error, if it had one, is the best there is.
            self._problems.problem(f"connection lost ({self._socket_error or 'closed by the broker or the network'})")
        self._awaiting_connack, self._socket_error = False, None
        self._connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._acks.put(mid)
        self._wake.set()

    def start(self) -> None:
        """Connect in the background (retrying while the broker is down) and start delivering the journal."""
        # Written now so that a run that never reaches the broker still leaves its records marked for the next one.
        self.marker.write(self._delivered_offset)
        self.client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s)
        self.client.loop_start()
        self._thread.start()

    def _raise_if_rejected(self) -> None:
        if self.permanent_error is not None:
            raise self.permanent_error

    def notify(self) -> None:
        """Tell the delivery thread that the journal grew; raises BrokerRejectedError after a permanent error."""
        self._raise_if_rejected()
        self._wake.set()

    def publish_state(self, suffix: str, payload: dict[str, Any] | str | bytes, *,
                      resend_on_connect: bool = False) -> None:
        """Publish retained state (stats, images) at QoS 0 if connected; dropped otherwise (see point 5).

        Raises BrokerRejectedError after a permanent error.
        """
        self._raise_if_rejected()
        topic, data = self.topic(suffix), encode_payload(payload)
        with self._state_lock:
            if resend_on_connect:
                self._resend_on_connect[topic] = data
        if self._connected.is_set():
            self.client.publish(topic, data, qos=0, retain=True)

    # ------------------------------------------------ delivery thread

    def _deliver_forever(self) -> None:
        with open(self.journal.path, "rb") as reader:
            while True:
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                self._take_acknowledgements()
                if self._closing.is_set() and not self._connected.is_set():
                    return
                self._send_more(reader)
                with self._progress:
                    self._progress.notify_all()

    def _take_acknowledgements(self) -> None:
        while True:
            try:
                self._window.pop(self._acks.get_nowait(), None)  # mids of status/stats are not in the window
            except queue.Empty:
                break
        delivered = min((start for start, _ in self._window.values()), default=self._send_offset)
        if delivered != self._delivered_offset:
            self._delivered_offset = delivered
            self.marker.write(delivered)

    def _send_more(self, reader: BinaryIO) -> None:
        free = self.settings.max_in_flight - len(self._window)
        if free <= 0 or self._send_offset >= self.journal.size:
            return
        for start, end, record in read_records(reader, self._send_offset, free):
            suffix, retain = record_topic(record)
            payload = {key: value for key, value in record.items() if key != "type"}
            # Handed over while disconnected too: paho keeps QoS 1 messages and sends them on reconnect.
            info = self.client.publish(self.topic(suffix), encode_payload(payload), qos=1, retain=retain)
            self._window[info.mid] = (start, end)
            self._send_offset = end
        if not self._window and self._send_offset != self._delivered_offset:  # only torn lines were read
            self._take_acknowledgements()

    # ------------------------------------------------ shutting down

    def undelivered_records(self) -> int:
        """How many journal records the broker has not acknowledged yet."""
        return self.journal.lines_after(self._delivered_offset)

    def wait_for_delivery(self, timeout_s: float) -> bool:
        """Wait until the broker acknowledged the whole journal, or `timeout_s`; True if it did."""
        self._wake.set()
        with self._progress:
            return self._progress.wait_for(lambda: self._delivered_offset >= self.journal.size, timeout=timeout_s)

    def close(self, *, timeout_s: float = 10.0) -> int:
        """Deliver what is pending (up to `timeout_s`), publish "offline", disconnect; return records undelivered.

        Undelivered records stay in the journal and are delivered first by the next run with the same journal.
        After a permanent error it does not wait: nothing can be delivered.
        """
        if self.permanent_error is None:
            self.wait_for_delivery(timeout_s)
        if self._connected.is_set():
            info = self.client.publish(self.topic("status"), "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=max(1.0, timeout_s))
            except (RuntimeError, ValueError) as error:  # the connection went during the wait
                log.warning("could not publish the offline status: %s", error)
        self._closing.set()
        self.client.disconnect()
        self.client.loop_stop()
        self._connected.clear()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        if not self._thread.is_alive():
            self._take_acknowledgements()  # PUBACKs that came in after the thread's last round
        return self.undelivered_records()


def _optional_str(path: Path | None) -> str | None:
    return None if path is None else str(path)

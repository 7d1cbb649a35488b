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
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import paho.mqtt.client as mqtt

from utils.journal import DeliveryMarker, Journal, read_records

log = logging.getLogger(__name__)

DEFAULT_TOPIC_PREFIX = "aivision/line1"  # main.py's --topic-prefix default; the dashboard's default line too


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


class MqttPublisher:
    """Delivers the journal to the broker and publishes status, stats and images (see the module docstring).

    Use: ``start()``; after each ``journal.append`` call ``notify()``; ``publish_state`` for stats and
    images; ``close()`` at the end. Thread-safe for one producing thread.
    """

    def __init__(self, settings: MqttSettings, journal: Journal) -> None:
        self.settings = settings
        self.journal = journal
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

    def _make_client(self) -> mqtt.Client:
        settings = self.settings
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=settings.client_id,
                             protocol=mqtt.MQTTv311, clean_session=True)
        client.will_set(self.topic("status"), "offline", qos=1, retain=True)
        if settings.username is not None:
            password = None
            if settings.password_file is not None:
                password = Path(settings.password_file).read_text().rstrip("\r\n")
            client.username_pw_set(settings.username, password)
        if settings.tls:
            client.tls_set(ca_certs=_optional_str(settings.ca), certfile=_optional_str(settings.cert),
                           keyfile=_optional_str(settings.key))
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_inflight_messages_set(settings.max_in_flight + 10)  # + room for status messages
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    # paho calls these three from its network thread: they only hand over to the delivery thread.
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("MQTT broker %s:%d refused the connection: %s", self.settings.host, self.settings.port,
                        reason_code)
            return
        log.info("MQTT connected to %s:%d", self.settings.host, self.settings.port)
        client.publish(self.topic("status"), "online", qos=1, retain=True)
        with self._state_lock:
            for topic, data in self._resend_on_connect.items():
                client.publish(topic, data, qos=0, retain=True)
        self._connected.set()
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._connected.is_set() and not self._closing.is_set():
            log.warning("MQTT connection to %s:%d lost (%s); results stay in the journal and follow on reconnect",
                        self.settings.host, self.settings.port, reason_code)
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

    def notify(self) -> None:
        """Tell the delivery thread that the journal grew."""
        self._wake.set()

    def publish_state(self, suffix: str, payload: dict[str, Any] | str | bytes, *,
                      resend_on_connect: bool = False) -> None:
        """Publish retained state (stats, images) at QoS 0 if connected; dropped otherwise (see point 5)."""
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
        """
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

"""The inspection line: source → Inspector → journal → MQTT (or stdout), with running stats and shifts.

`run_line` is what ``main.py`` calls. For every event of the source (see ``utils.sources``):

* a part is inspected, its result record is appended to the journal (before anything is published), handed to
  the MQTT publisher, counted in the stats, printed as one line on stdout, and, as ``--images`` selects, its
  four pictures (utils.plots.result_pictures: input, reconstruction, residual, defect) are published;
* an unreadable item becomes an error record (journal, ``P/error``, one stdout line) and the line goes on;
* an idle tick (``None``) only lets time-driven work happen.

Time-driven work uses an injectable clock (a function returning an aware datetime) so tests need no waiting:
a shift boundary passing publishes the finished shift's stats on ``P/shift/<HH:MM>`` and resets the counters;
parts per minute are counted over a sliding window (default 60 s) and decay while the line is idle.

Ctrl-C or SIGTERM: the line finishes the current part, publishes the final stats, waits (bounded) for the
broker to acknowledge the journal, publishes status "offline", closes the journal and returns 0.

Restarts of ``watch:DIR`` (after a crash, a power cut or a planned stop): the journal says which files were done
(`inspected_sources`: every result or error record names its source file), so the restarted line inspects the
files that arrived while it was down and skips those it had done. On a fresh journal every file already waiting
in the folder is inspected. Either way the start logs how many files were waiting, skipped and to be inspected.
A crash between inspecting a part and journaling it loses nothing: the part has no record yet and is inspected
again. Batch sources (files, globs, folders) are inspected in full by every run, as before.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, time as clock_time, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO

from utils.journal import Journal, parse_record
from utils.mqtt import DEFAULT_TOPIC_PREFIX, MqttPublisher, MqttSettings, image_payload
from utils.plots import png_bytes, result_pictures
from utils.sources import SourceError, SourceEvent, SourceItem, open_source

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
IMAGE_CHOICES = ("none", "nok", "all")
DEFAULT_SHIFTS = "06:00,14:00,22:00"
MAX_BLOBS_REPORTED = 100  # largest first; keeps one noisy part from producing a megabyte message


def local_now() -> datetime:
    """The wall clock as an aware datetime in the machine's time zone (shift times are local)."""
    return datetime.now().astimezone()


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a Z, e.g. 2024-05-01T06:00:00.000Z."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def default_journal_path(topic_prefix: str) -> Path:
    """logs/<prefix with / as _>.jsonl: one journal per line, so two lines never share one."""
    return Path("logs") / (topic_prefix.replace("/", "_") + ".jsonl")


def inspected_sources(journal_path: str | Path) -> dict[str, float]:
    """Every source the journal has a result or error record for → POSIX time (ts) of its latest such record.

    What a restarted ``watch:`` line uses to tell the parts it has done from those that arrived while it was down.
    A missing journal gives {}; torn and foreign lines are skipped (as the publisher skips them); a record whose
    ts does not parse counts as done at any time (infinity).
    """
    inspected: dict[str, float] = {}
    try:
        reader = open(journal_path, "rb")
    except FileNotFoundError:
        return inspected
    with reader:
        for line in reader:
            record = parse_record(line)
            if record is None or record["type"] == "shift" or not isinstance(record.get("source"), str):
                continue
            try:
                at = datetime.fromisoformat(record["ts"]).timestamp()
            except (KeyError, TypeError, ValueError):
                at = math.inf
            inspected[record["source"]] = max(at, inspected.get(record["source"], at))
    return inspected


# ---------------------------------------------------------------- stats and shifts


class LineStats:
    """Counters since `since` and parts per minute over the last `window_s` seconds.

    ``total = ok + nok`` (inspected parts); ``errors`` counts items that could not be inspected. Resetting at a
    shift change clears the counters but not the rate, which describes the line, not the shift.
    """

    def __init__(self, *, since: datetime, window_s: float = 60.0) -> None:
        if not window_s > 0:
            raise ValueError(f"stats window must be > 0 seconds; got {window_s!r}")
        self.window_s = window_s
        self._recent: deque[datetime] = deque()
        self.reset(since)

    def reset(self, since: datetime) -> None:
        self.since = since
        self.ok = self.nok = self.errors = 0

    @property
    def total(self) -> int:
        return self.ok + self.nok

    def add(self, verdict: str, at: datetime) -> None:
        if verdict not in ("OK", "NOK"):
            raise ValueError(f"verdict must be 'OK' or 'NOK'; got {verdict!r}")
        if verdict == "OK":
            self.ok += 1
        else:
            self.nok += 1
        self._recent.append(at)
        self._forget_before(at)

    def add_error(self) -> None:
        self.errors += 1

    def _forget_before(self, now: datetime) -> None:
        cutoff = now - timedelta(seconds=self.window_s)
        while self._recent and self._recent[0] <= cutoff:
            self._recent.popleft()

    def parts_per_min(self, now: datetime) -> float:
        """Parts inspected in the last `window_s` seconds, scaled to one minute."""
        self._forget_before(now)
        return len(self._recent) * 60.0 / self.window_s

    def as_dict(self, now: datetime) -> dict[str, Any]:
        """The P/stats payload."""
        return {"total": self.total, "ok": self.ok, "nok": self.nok, "errors": self.errors,
                "defect_pct": round(100.0 * self.nok / self.total, 2) if self.total else 0.0,
                "parts_per_min": round(self.parts_per_min(now), 2), "since": iso_utc(self.since)}


class ShiftSchedule:
    """Shift start times of day (local wall time); each shift runs until the next start, the last one past midnight."""

    def __init__(self, starts: Sequence[clock_time]) -> None:
        self.starts = sorted(set(starts))

    @classmethod
    def parse(cls, text: str) -> ShiftSchedule:
        """``"06:00,14:00,22:00"`` → three shifts; ``"none"`` or ``""`` → no shifts. ValueError echoing bad text."""
        if text.strip().lower() in ("", "none"):
            return cls([])
        starts = []
        for part in text.split(","):
            try:
                starts.append(datetime.strptime(part.strip(), "%H:%M").time())
            except ValueError:
                raise ValueError(f"--shifts must be HH:MM times separated by commas, or none; got {text!r}") from None
        return cls(starts)

    def shift_start(self, at: datetime) -> datetime | None:
        """When the shift running at `at` started (same time zone as `at`); None without shifts."""
        if not self.starts:
            return None
        candidates = [datetime.combine(day, start, tzinfo=at.tzinfo)
                      for day in (at.date() - timedelta(days=1), at.date()) for start in self.starts]
        return max(candidate for candidate in candidates if candidate <= at)

    @staticmethod
    def name(start: datetime) -> str:
        """A shift's name is its start time, e.g. "06:00": the topic P/shift/06:00 holds the latest such shift."""
        return start.strftime("%H:%M")


# ---------------------------------------------------------------- records and images


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN or infinity; a non-finite score is reported as null."""
    value = float(value)
    return value if math.isfinite(value) else None


def result_record(result: Any, *, seq: int, at: datetime, source: str, latency_ms: float, model: str) -> dict:
    """The journal record (and, without "type", the P/result payload) of one InspectionResult."""
    blobs = sorted(result.blobs, key=lambda blob: blob.area, reverse=True)[:MAX_BLOBS_REPORTED]
    return {"type": "result", "seq": seq, "ts": iso_utc(at), "source": source, "verdict": result.verdict,
            "score": finite_or_none(result.score), "threshold": finite_or_none(result.threshold),
            "max_blob_area": int(result.max_blob_area), "min_area": int(result.min_area),
            "blobs": [{"area": int(blob.area), "bbox": [int(value) for value in blob.bbox]} for blob in blobs],
            "latency_ms": round(latency_ms, 1), "model": model}


def error_record(*, seq: int, at: datetime, source: str, message: str) -> dict:
    """The journal record (and P/error payload) of an item that could not be inspected."""
    return {"type": "error", "seq": seq, "ts": iso_utc(at), "source": source, "error": message}


def printed_number(value: float | None) -> str:
    """A score or threshold as printed on stdout: 4 significant digits (the journal and MQTT keep them all)."""
    return "null" if value is None else f"{value:.4g}"


def wants_images(images: str, verdict: str) -> bool:
    return images == "all" or (images == "nok" and verdict == "NOK")


# ---------------------------------------------------------------- the line


class InspectionLine:
    """Runs a source through an Inspector into the journal and, if given, the MQTT publisher.

    `inspector` follows utils.inspector.Inspector (``inspect(images) -> results``, ``model_name``). `clock`
    returns aware datetimes; inject one to test shifts and rates without waiting.
    """

    def __init__(self, *, inspector: Any, journal: Journal, publisher: MqttPublisher | None = None,
                 images: str = "none", shifts: ShiftSchedule | None = None, clock: Clock = local_now,
                 stats_window_s: float = 60.0, output: TextIO | None = None) -> None:
        if images not in IMAGE_CHOICES:
            raise ValueError(f"--images must be one of {IMAGE_CHOICES}; got {images!r}")
        self.inspector, self.journal, self.publisher = inspector, journal, publisher
        self.images, self.clock = images, clock
        self.shifts = shifts or ShiftSchedule([])
        self.output = output or sys.stdout
        now = clock()
        self.stats = LineStats(since=now, window_s=stats_window_s)
        self.shift_start = self.shifts.shift_start(now)
        self._last_stats: dict[str, Any] | None = None

    def run(self, source: Iterable[SourceEvent], stop: threading.Event) -> dict[str, Any]:
        """Inspect until the source ends or `stop` is set; return the final stats (already published)."""
        self.publish_stats(self.clock())
        for event in source:
            now = self.clock()
            self.check_shift(now)
            if isinstance(event, SourceItem):
                self.handle_item(event)
            elif isinstance(event, SourceError):
                self.handle_error(event.id, event.message, now)
            self.publish_stats(self.clock(), only_if_changed=event is None)
            if stop.is_set():
                break
        self.publish_stats(self.clock())
        final = self.stats.as_dict(self.clock())
        self._write_line(f"stats {json.dumps(final)}")
        return final

    def handle_item(self, item: SourceItem) -> None:
        started = time.perf_counter()
        try:
            result = self.inspector.inspect([item.image])[0]
        except Exception as error:  # one odd part must not stop the line; the message says what went wrong
            log.exception("inspection of %s failed", item.id)
            self.handle_error(item.id, f"inspection failed: {error}", self.clock())
            return
        latency_ms = (time.perf_counter() - started) * 1000.0
        now = self.clock()
        record = result_record(result, seq=self.journal.next_seq(), at=now, source=item.id,
                               latency_ms=latency_ms, model=self.inspector.model_name)
        self._journal_and_send(record)
        self.stats.add(result.verdict, now)
        self._write_line(f"seq={record['seq']} {record['verdict']} score={printed_number(record['score'])} "
                         f"threshold={printed_number(record['threshold'])} max_blob_area={record['max_blob_area']} "
                         f"latency_ms={record['latency_ms']} source={item.id}")
        if self.publisher is not None and wants_images(self.images, result.verdict):
            for kind, picture in result_pictures(result).items():
                self.publisher.publish_state(f"image/{kind}", image_payload(record["seq"], png_bytes(picture)))

    def handle_error(self, source: str, message: str, now: datetime) -> None:
        record = error_record(seq=self.journal.next_seq(), at=now, source=source, message=message)
        self._journal_and_send(record)
        self.stats.add_error()
        self._write_line(f"seq={record['seq']} ERROR source={source} error={message}")

    def check_shift(self, now: datetime) -> None:
        """At a shift boundary: journal and publish the finished shift's stats, then reset the counters."""
        start = self.shifts.shift_start(now)
        if start is None or start <= self.shift_start:  # <: the clock was set back; the shift goes on
            return
        summary = {"type": "shift", "name": ShiftSchedule.name(self.shift_start), "start": iso_utc(self.shift_start),
                   "end": iso_utc(start), **self.stats.as_dict(now)}
        self._journal_and_send(summary)
        self._write_line(f"shift {summary['name']} ended: {json.dumps(summary)}")
        self.shift_start = start
        self.stats.reset(since=start)
        self.publish_stats(now)

    def publish_stats(self, now: datetime, *, only_if_changed: bool = False) -> None:
        stats = self.stats.as_dict(now)
        if only_if_changed and stats == self._last_stats:
            return
        self._last_stats = stats
        if self.publisher is not None:
            self.publisher.publish_state("stats", stats, resend_on_connect=True)

    def _journal_and_send(self, record: dict[str, Any]) -> None:
        self.journal.append(record)  # first: once this returns the record survives a crash and an outage
        if self.publisher is not None:
            self.publisher.notify()

    def _write_line(self, text: str) -> None:
        print(text, file=self.output, flush=True)


# ---------------------------------------------------------------- entry point


def install_stop_handlers(stop: threading.Event) -> None:
    """Ctrl-C / SIGTERM set `stop` (the line then finishes cleanly); a second one interrupts at once."""

    def handle(signal_number: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.warning("%s received: finishing the current part and shutting down", signal.Signals(signal_number).name)
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


def run_line(*, source: str, model: str | None = None, mqtt: MqttSettings | None = None, images: str = "none",
             journal: str | Path | None = None, shifts: str = DEFAULT_SHIFTS, decision: str = "calibrated",
             stats_window_s: float = 60.0, drain_timeout_s: float = 10.0, poll_interval_s: float = 0.5,
             runtime: str = "auto") -> int:
    """Run the line until the source ends or Ctrl-C/SIGTERM; return the exit status (0).

    Options are validated (and the source opened) before the model is loaded, so a typo fails in a second.
    ``watch:DIR`` first inspects the files waiting in DIR that the journal has no result for (the parts that
    arrived while the line was down; on a fresh journal every waiting file), then each new file once it is whole
    (see utils.sources.FolderWatcher). ``runtime`` (utils.export.choose_runtime): "auto" inspects with the run's
    export when it is current and its runtime installed (no TensorFlow imported), else with TensorFlow.
    """
    if images not in IMAGE_CHOICES:
        raise ValueError(f"--images must be one of {IMAGE_CHOICES}; got {images!r}")
    if not drain_timeout_s >= 0:
        raise ValueError(f"drain timeout must be >= 0 seconds; got {drain_timeout_s!r}")
    schedule = ShiftSchedule.parse(shifts)
    stop = threading.Event()
    topic_prefix = mqtt.topic_prefix if mqtt else DEFAULT_TOPIC_PREFIX
    journal_path = Path(journal) if journal else default_journal_path(topic_prefix)
    # Read before the watcher lists the folder: a file arriving in between has no record and is inspected.
    inspected = inspected_sources(journal_path) if str(source).startswith("watch:") else None
    events = open_source(source, stop=stop, poll_interval_s=poll_interval_s, already_inspected=inspected)
    from utils.inspector import Inspector  # here, not at import: its backend may load TensorFlow

    inspector = Inspector.from_run(model, decision=decision, runtime=runtime)
    log.info("inspecting with %s", inspector.runtime)
    line_journal = Journal(journal_path)
    publisher = (MqttPublisher(mqtt, line_journal, on_permanent_error=lambda error: stop.set())
                 if mqtt else None)
    try:
        if publisher:
            publisher.start()
        install_stop_handlers(stop)
        line = InspectionLine(inspector=inspector, journal=line_journal, publisher=publisher, images=images,
                              shifts=schedule, stats_window_s=stats_window_s)
        line.run(events, stop)
    finally:
        if publisher:
            undelivered = publisher.close(timeout_s=drain_timeout_s)
            if undelivered:
                log.warning("%d records not yet acknowledged by the broker; they stay in %s and are delivered "
                            "first by the next run with this journal", undelivered, journal_path)
        line_journal.close()
    return 0

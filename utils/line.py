"""The inspection line: source → Inspector → journal → MQTT (or stdout), with running stats and shifts.

`run_line` is what ``main.py`` calls. For every event of the source (see ``utils.sources``):

* a part is inspected, its result record is appended to the journal (before anything is published), handed to
  the MQTT publisher, counted in the stats, printed as one line on stdout, and, as ``--images`` selects, its
  four pictures (utils.plots.result_pictures: input, reconstruction, residual, defect) are published;
* an unreadable item becomes an error record (journal, ``P/error``, one stdout line) and the line goes on;
* an idle tick (``None``) only lets time-driven work happen.

Three stages overlap, so that the model never waits for a decoder, a disk or a broker: a reading thread iterates
the source (decoding the next images) a few events ahead; the calling thread gathers the parts that arrive
together into one Inspector batch (:class:`PartBatcher`: up to `max_batch` parts, none held longer than
`max_batch_delay_s` after it arrived, 20 ms by default) and inspects it; a reporting thread journals, publishes
and prints each batch's results while the next batch is inspected. Queues between the stages are small and
bounded, and every stage keeps arrival order, so records, seqs and messages come out exactly in the order the
source delivered the parts, with an unreadable item's error record in its place. A part that makes the Inspector
fail is inspected again alone, so only that part becomes an error record.

Time-driven work uses an injectable clock (a function returning an aware datetime) so tests need no waiting:
a shift boundary passing publishes the finished shift's stats on ``P/shift/<HH:MM>`` and resets the counters;
parts per minute are counted over a sliding window (default 60 s) and decay while the line is idle.

Ctrl-C or SIGTERM: the line finishes the current batch, publishes the final stats, waits (bounded) for the
broker to acknowledge the journal, publishes status "offline", closes the journal and returns 0. Parts read ahead
but not yet inspected have no record: a restarted ``watch:`` line inspects them.

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
import queue
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time as clock_time, timedelta, timezone
from functools import partial
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
DEFAULT_MAX_BATCH_DELAY_S = 0.020  # main.py's --max-batch-delay-ms: how long a part may wait for companions
REPORT_DEPTH = 2  # batches inspected but not yet reported: the reporting thread's queue
LIVENESS_POLL_S = 0.1  # how often a stage blocked on a full queue checks that the other side still runs


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


# ---------------------------------------------------------------- batching, and the stages around the model


@dataclass(frozen=True)
class Arrived:
    """A source event as the line received it: `at` on the line's timer (monotonic seconds), `moment` on its
    clock (what shifts, rates and record times go by)."""

    event: SourceEvent
    at: float
    moment: datetime


@dataclass(frozen=True)
class SourceEnded:
    """The source has no more events; `error` is what ended it, if it raised."""

    error: BaseException | None = None


Receive = Callable[[float | None], Arrived | SourceEnded]  # wait at most timeout s (None: for ever); queue.Empty


class PartBatcher:
    """Which events go to the Inspector together: the oldest waiting one, and every event that arrives before it
    has waited `max_delay_s` (or is already waiting), until `max_batch` parts are gathered.

    Errors of unreadable items stay in the batch at their place (they cost the model nothing and do not count
    towards `max_batch`); an idle tick (``None``: the source has nothing more ready) ends the batch at once, as does
    the end of the source. The bound is counted from each part's arrival, so a part that already waited behind a
    busy model is sent with what is waiting, without a further wait. `timer` is the clock the arrivals were
    stamped with; a test injects one together with `receive` to check the bound without waiting.
    """

    def __init__(self, *, max_batch: int, max_delay_s: float, timer: Callable[[], float] = time.monotonic) -> None:
        if not (isinstance(max_batch, int) and max_batch >= 1):
            raise ValueError(f"max batch must be an integer >= 1; got {max_batch!r}")
        if not (max_delay_s >= 0 and math.isfinite(max_delay_s)):
            raise ValueError(f"max batch delay must be a finite number of seconds >= 0; got {max_delay_s!r}")
        self.max_batch, self.max_delay_s, self.timer = max_batch, max_delay_s, timer

    def gather(self, receive: Receive) -> tuple[list[Arrived], SourceEnded | None]:
        """The next batch, in arrival order, and the SourceEnded that closed it (None while the source goes on).

        Blocks until the first event arrives, then waits for companions until the first one's deadline."""
        first = receive(None)
        if isinstance(first, SourceEnded):
            return [], first
        batch = [first]
        deadline = first.at + self.max_delay_s
        parts = isinstance(first.event, SourceItem)
        while first.event is not None and parts < self.max_batch:
            try:  # a passed deadline still takes what is already waiting (a zero timeout does not wait)
                arrived = receive(max(0.0, deadline - self.timer()))
            except queue.Empty:
                break
            if isinstance(arrived, SourceEnded):
                return batch, arrived
            batch.append(arrived)
            if arrived.event is None:
                break
            parts += isinstance(arrived.event, SourceItem)
        return batch, None


class ReadAhead:
    """Iterates a source in a thread of its own (files are decoded there), keeping up to `depth` events ready.

    Each event is stamped on arrival with `timer` and `clock`; the source's end (or what it raised) arrives as a
    SourceEnded. `close` makes the thread stop at its next event; the source's own `stop` ends a live source.
    """

    def __init__(self, source: Iterable[SourceEvent], *, depth: int, clock: Clock,
                 timer: Callable[[], float]) -> None:
        self.source, self.clock, self.timer = source, clock, timer
        self._ready: queue.Queue[Arrived | SourceEnded] = queue.Queue(maxsize=depth)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._read, name="line-source", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        ended = SourceEnded()
        try:
            for event in self.source:
                if not self._put(Arrived(event, self.timer(), self.clock())):
                    return
        except BaseException as error:  # handed to the line's thread, which raises it after the parts before it
            ended = SourceEnded(error)
        self._put(ended)

    def _put(self, item: Arrived | SourceEnded) -> bool:
        while not self._closing.is_set():
            try:
                self._ready.put(item, timeout=LIVENESS_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def receive(self, timeout: float | None) -> Arrived | SourceEnded:
        """The next event, waiting at most `timeout` seconds (None: until one comes); queue.Empty after that."""
        return self._ready.get(timeout=timeout)

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=1.0)  # a live source blocked in a read ends with the line's stop event


class OrderedWorker:
    """Runs submitted jobs one after another in a thread of its own, in the order submitted.

    At most `depth` jobs wait. The first job that raises stops the worker; its exception is raised again in the
    submitting thread by the next `submit` or by `finish`, so that an error (a full disk, a broker that rejects
    the line) still ends the run as it did when everything ran in one thread.
    """

    def __init__(self, *, name: str, depth: int) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=depth)
        self._closing = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while not self._closing.is_set():
            try:
                job = self._jobs.get(timeout=LIVENESS_POLL_S)
            except queue.Empty:
                continue
            if job is None:
                return
            try:
                job()
            except BaseException as error:
                self.error = error
                return

    def submit(self, job: Callable[[], None] | None) -> None:
        """Queue `job` (None: no more jobs), waiting while the queue is full; raises the worker's error if any."""
        while True:
            if self.error is not None:
                raise self.error
            if not self._thread.is_alive():
                raise RuntimeError("the line's reporting thread has stopped")
            try:
                self._jobs.put(job, timeout=LIVENESS_POLL_S)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        """Wait until every submitted job has run; raise the error that stopped the worker, if one did."""
        self.submit(None)
        self._thread.join()
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Stop without running the jobs still waiting (after an interruption); waits for the running job."""
        self._closing.set()
        self._thread.join(timeout=10.0)


@dataclass(frozen=True)
class Inspected:
    """What became of one event of a batch: its result, or the error the Inspector raised on it, and how long
    after its arrival it was ready (`latency_s`)."""

    arrived: Arrived
    result: Any = None
    error: Exception | None = None
    latency_s: float = 0.0

    @property
    def moment(self) -> datetime:
        """When the outcome was ready, on the line's clock: the arrival moment plus the latency."""
        return self.arrived.moment + timedelta(seconds=self.latency_s)


# ---------------------------------------------------------------- the line


class InspectionLine:
    """Runs a source through an Inspector into the journal and, if given, the MQTT publisher.

    `inspector` follows utils.inspector.Inspector (``inspect(images) -> results``, ``model_name``, ``batch_size``).
    `clock` returns aware datetimes; inject one to test shifts and rates without waiting. Parts that arrive within
    `max_batch_delay_s` of each other are inspected together, up to `max_batch` (default: the Inspector's batch
    size); `timer` (monotonic seconds) stamps arrivals, deadlines and latencies.
    """

    def __init__(self, *, inspector: Any, journal: Journal, publisher: MqttPublisher | None = None,
                 images: str = "none", shifts: ShiftSchedule | None = None, clock: Clock = local_now,
                 stats_window_s: float = 60.0, output: TextIO | None = None, max_batch: int | None = None,
                 max_batch_delay_s: float = DEFAULT_MAX_BATCH_DELAY_S,
                 timer: Callable[[], float] = time.monotonic) -> None:
        if images not in IMAGE_CHOICES:
            raise ValueError(f"--images must be one of {IMAGE_CHOICES}; got {images!r}")
        self.inspector, self.journal, self.publisher = inspector, journal, publisher
        self.images, self.clock, self.timer = images, clock, timer
        self.batcher = PartBatcher(max_batch=max_batch or getattr(inspector, "batch_size", 1),
                                   max_delay_s=max_batch_delay_s, timer=timer)
        self.shifts = shifts or ShiftSchedule([])
        self.output = output or sys.stdout
        now = clock()
        self.stats = LineStats(since=now, window_s=stats_window_s)
        self.shift_start = self.shifts.shift_start(now)
        self._last_stats: dict[str, Any] | None = None

    def run(self, source: Iterable[SourceEvent], stop: threading.Event) -> dict[str, Any]:
        """Inspect until the source ends or `stop` is set; return the final stats (already published).

        The calling thread gathers and inspects batches; the source is read ahead in one thread and the results
        are reported in another (see the module docstring); an error in either is raised here."""
        self.publish_stats(self.clock())
        reader = ReadAhead(source, depth=max(2, self.batcher.max_batch), clock=self.clock, timer=self.timer)
        reporter = OrderedWorker(name="line-report", depth=REPORT_DEPTH)
        try:
            while True:
                batch, ended = self.batcher.gather(reader.receive)
                if batch:
                    reporter.submit(partial(self.report, self.inspect_batch(batch)))
                if ended is not None or stop.is_set():
                    break
            reporter.finish()
        finally:
            reporter.close()
            reader.close()
        if ended is not None and ended.error is not None:
            raise ended.error
        self.publish_stats(self.clock())
        final = self.stats.as_dict(self.clock())
        self._write_line(f"stats {json.dumps(final)}")
        return final

    def inspect_batch(self, batch: Sequence[Arrived]) -> list[Inspected]:
        """Inspect the parts of `batch` in one Inspector call; every event of it gets its outcome, in order."""
        inspected = iter(self._inspect([arrived for arrived in batch if isinstance(arrived.event, SourceItem)]))
        return [next(inspected) if isinstance(arrived.event, SourceItem) else Inspected(arrived) for arrived in batch]

    def _inspect(self, parts: Sequence[Arrived]) -> list[Inspected]:
        if not parts:
            return []
        try:
            results = self.inspector.inspect([arrived.event.image for arrived in parts])
        except Exception as error:  # one odd part must not stop the line; the message says what went wrong
            if len(parts) > 1:  # which part was it? each alone, so that only that one becomes an error
                return [outcome for arrived in parts for outcome in self._inspect([arrived])]
            log.exception("inspection of %s failed", parts[0].event.id)
            return [Inspected(parts[0], error=error, latency_s=self.timer() - parts[0].at)]
        done = self.timer()
        return [Inspected(arrived, result=result, latency_s=done - arrived.at)
                for arrived, result in zip(parts, results, strict=True)]

    def report(self, outcomes: Sequence[Inspected]) -> None:
        """Journal, publish, count and print each outcome of a batch, in order (runs in the reporting thread)."""
        for outcome in outcomes:
            event, arrived_at = outcome.arrived.event, outcome.arrived.moment
            self.check_shift(arrived_at)
            if isinstance(event, SourceItem) and outcome.error is None:
                self.report_result(event, outcome.result, outcome.moment, outcome.latency_s * 1000.0)
            elif isinstance(event, SourceItem):
                self.handle_error(event.id, f"inspection failed: {outcome.error}", outcome.moment)
            elif isinstance(event, SourceError):
                self.handle_error(event.id, event.message, arrived_at)
            self.publish_stats(outcome.moment, only_if_changed=event is None)

    def report_result(self, item: SourceItem, result: Any, now: datetime, latency_ms: float) -> None:
        """One inspected part: its record journaled and sent, counted, printed, and its pictures published."""
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
        log.warning("%s received: finishing the current batch and shutting down", signal.Signals(signal_number).name)
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


def run_line(*, source: str, model: str | None = None, mqtt: MqttSettings | None = None, images: str = "none",
             journal: str | Path | None = None, shifts: str = DEFAULT_SHIFTS, decision: str = "calibrated",
             stats_window_s: float = 60.0, drain_timeout_s: float = 10.0, poll_interval_s: float = 0.5,
             runtime: str = "auto", max_batch: int | None = None,
             max_batch_delay_ms: float = DEFAULT_MAX_BATCH_DELAY_S * 1000.0) -> int:
    """Run the line until the source ends or Ctrl-C/SIGTERM; return the exit status (0).

    Options are validated (and the source opened) before the model is loaded, so a typo fails in a second.
    ``watch:DIR`` first inspects the files waiting in DIR that the journal has no result for (the parts that
    arrived while the line was down; on a fresh journal every waiting file), then each new file once it is whole
    (see utils.sources.FolderWatcher). ``runtime`` (utils.export.choose_runtime): "auto" inspects with the run's
    export when it is current and its runtime installed (no TensorFlow imported), else with TensorFlow.
    Parts arriving within `max_batch_delay_ms` of each other are inspected together, up to `max_batch` (which is
    then also the Inspector's batch size; default: the Inspector's own, 8).
    """
    if images not in IMAGE_CHOICES:
        raise ValueError(f"--images must be one of {IMAGE_CHOICES}; got {images!r}")
    if not drain_timeout_s >= 0:
        raise ValueError(f"drain timeout must be >= 0 seconds; got {drain_timeout_s!r}")
    if max_batch is not None and not (isinstance(max_batch, int) and max_batch >= 1):
        raise ValueError(f"--max-batch must be an integer >= 1; got {max_batch!r}")
    if not (max_batch_delay_ms >= 0 and math.isfinite(max_batch_delay_ms)):
        raise ValueError(f"--max-batch-delay-ms must be a finite number >= 0; got {max_batch_delay_ms!r}")
    schedule = ShiftSchedule.parse(shifts)
    stop = threading.Event()
    topic_prefix = mqtt.topic_prefix if mqtt else DEFAULT_TOPIC_PREFIX
    journal_path = Path(journal) if journal else default_journal_path(topic_prefix)
    # Read before the watcher lists the folder: a file arriving in between has no record and is inspected.
    inspected = inspected_sources(journal_path) if str(source).startswith("watch:") else None
    events = open_source(source, stop=stop, poll_interval_s=poll_interval_s, already_inspected=inspected)
    from utils.inspector import Inspector  # here, not at import: its backend may load TensorFlow

    batch_size = {"batch_size": max_batch} if max_batch is not None else {}
    inspector = Inspector.from_run(model, decision=decision, runtime=runtime, **batch_size)
    log.info("inspecting with %s", inspector.runtime)
    line_journal = Journal(journal_path)
    publisher = (MqttPublisher(mqtt, line_journal, on_permanent_error=lambda error: stop.set())
                 if mqtt else None)
    try:
        if publisher:
            publisher.start()
        install_stop_handlers(stop)
        line = InspectionLine(inspector=inspector, journal=line_journal, publisher=publisher, images=images,
                              shifts=schedule, stats_window_s=stats_window_s, max_batch=max_batch,
                              max_batch_delay_s=max_batch_delay_ms / 1000.0)
        line.run(events, stop)
    finally:
        if publisher:
            undelivered = publisher.close(timeout_s=drain_timeout_s)
            if undelivered:
                log.warning("%d records not yet acknowledged by the broker; they stay in %s and are delivered "
                            "first by the next run with this journal", undelivered, journal_path)
        line_journal.close()
    return 0

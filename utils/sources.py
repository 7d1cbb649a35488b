"""Where parts come from: files, folders, a watched drop folder, cameras, video files and streams.

Every source is an iterable of events, one per part or per problem:

* ``SourceItem(id, image)``: a decoded part, ``image`` uint8 H×W×C (C = 1 or 3, RGB order) at its own size;
* ``SourceError(id, message)``: an item that could not be read (corrupt, truncated or non-image file, a camera
  that dropped); the line reports it and goes on;
* ``None``: nothing ready yet (only live sources: ``watch:`` and cameras/streams while reconnecting). It lets
  the line do housekeeping (shift changes, parts-per-minute decay, Ctrl-C) while it waits.

``open_source(spec)`` understands:

==================  ==========================================================================================
``PATH``            one image file
``GLOB``            a pattern with ``*``, ``?`` or ``[``; matching files in sorted order
``DIR``             every non-hidden file below DIR, recursively, in sorted order of relative path
``watch:DIR``       the files in DIR (not its sub-folders), each once, when fully written: those already there
                    that the line's journal has no result for (after a restart: the parts that arrived while
                    the line was down; on a fresh journal: every file waiting there), then each new one
``camera:N``        OpenCV camera N; a drop is reported and the camera reopened with growing back-off
``URL``             a stream (rtsp://, http(s)://, …) through OpenCV, reconnecting like a camera
``VIDEO``           a video file (.mp4, .avi, …); its frames in order, then the source ends
==================  ==========================================================================================
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from utils.data import decode_image, to_uint8_channels_last

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".webm", ".wmv", ".mjpeg")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
# Names that writers use while a file is still being written (browsers, rsync, scp, camera software).
PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".filepart", ".swp")
GLOB_CHARACTERS = "*?["
SETTLE_S = 2.0  # watch: a decodable file of a format without an end mark (TIFF, …) is taken once still this long
GIVE_UP_S = 10.0  # watch: a file still this long that does not decode (or lacks its end mark) is reported/taken

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceItem:
    """One part: an id naming where it came from (a path, ``camera:0#frame``) and its uint8 H×W×C image."""

    id: str
    image: np.ndarray


@dataclass(frozen=True)
class SourceError:
    """An item that could not be inspected: its id and a message saying why, for people to read."""

    id: str
    message: str


SourceEvent = SourceItem | SourceError | None


def open_source(spec: str, *, stop: threading.Event | None = None, poll_interval_s: float = 0.5,
                already_inspected: Mapping[str, float] | None = None) -> Iterable[SourceEvent]:
    """The source a ``--source`` string names (see the module docstring); ValueError if it names nothing usable.

    `stop` ends live sources (watch, camera, stream) between events; `poll_interval_s` is how often a watched
    folder is listed; `already_inspected` (source id → POSIX time of its latest journal record, see
    utils.line.inspected_sources) tells ``watch:`` which files waiting in the folder already have a result.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"--source must name a file, glob, folder, watch:DIR, camera:N or URL; got {spec!r}")
    stop = stop or threading.Event()
    if spec.startswith("watch:"):
        return FolderWatcher(spec[len("watch:"):], stop=stop, poll_interval_s=poll_interval_s,
                             already_inspected=already_inspected)
    if spec.startswith("camera:"):
        return VideoSource(parse_camera_index(spec), live=True, stop=stop)
    if spec.lower().startswith(STREAM_SCHEMES):
        return VideoSource(spec, live=True, stop=stop)
    path = Path(spec)
    if path.is_dir():
        return FileSource(files_in_folder(path), stop=stop)
    if path.is_file():
        is_video = path.suffix.lower() in VIDEO_EXTENSIONS
        return VideoSource(spec, live=False, stop=stop) if is_video else FileSource([path], stop=stop)
    if any(character in spec for character in GLOB_CHARACTERS):
        matches = sorted(Path(match) for match in glob.glob(spec, recursive=True) if Path(match).is_file())
        if not matches:
            raise ValueError(f"--source pattern {spec!r} matches no file")
        return FileSource(matches, stop=stop)
    raise ValueError(f"--source {spec!r} is not an existing file or folder, a glob, watch:DIR, camera:N or a URL "
                     f"starting with one of {', '.join(STREAM_SCHEMES)}")


def parse_camera_index(spec: str) -> int:
    """``camera:N`` → N (a non-negative integer); ValueError echoing the spec otherwise."""
    index_text = spec[len("camera:"):]
    if not index_text.isdigit():
        raise ValueError(f"camera source must be camera:N with N a camera number like camera:0; got {spec!r}")
    return int(index_text)


def is_hidden_or_partial(path: Path) -> bool:
    """Hidden files (.DS_Store, editor swap files) and names of files still being written are not parts."""
    return path.name.startswith(".") or path.name.lower().endswith(PARTIAL_SUFFIXES)


def files_in_folder(folder: Path) -> list[Path]:
    """Every non-hidden regular file below `folder`, sorted by relative path; ValueError if there is none.

    Every file counts, not only known image extensions: a stray non-image on a line is reported as an error
    rather than silently skipped.
    """
    files = sorted(path for path in folder.rglob("*")
                   if path.is_file() and not any(is_hidden_or_partial(Path(part))
                                                 for part in path.relative_to(folder).parts))
    if not files:
        raise ValueError(f"--source folder {str(folder)!r} holds no files")
    return files


def read_file_item(path: Path) -> SourceItem | SourceError:
    """Decode one file into a SourceItem, or a SourceError carrying the decoder's message."""
    try:
        return SourceItem(str(path), decode_image(path))
    except ValueError as error:
        return SourceError(str(path), str(error))


class FileSource:
    """A fixed list of files, decoded one at a time in the given order; ends early once `stop` is set."""

    def __init__(self, files: Sequence[Path], *, stop: threading.Event) -> None:
        self.files = list(files)
        self.stop = stop

    def __iter__(self) -> Iterator[SourceEvent]:
        for path in self.files:
            if self.stop.is_set():
                return
            yield read_file_item(path)


def end_mark_present(head: bytes, tail: bytes, size: int) -> bool | None:
    """Whether an image file is whole by its format's own end mark, from its first and last bytes and its size.

    PNG ends with its IEND chunk, JPEG with the end-of-image marker FF D9; BMP and WebP state their total size in
    the header. `head`/`tail` need 12 bytes each. None for formats without such a mark (TIFF, …): then only time
    can tell. Decoding alone cannot: a lenient decoder (OpenCV 4 on JPEG) turns half a file into a picture.
    """
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return tail.endswith(b"IEND\xaeB`\x82")
    if head.startswith(b"\xff\xd8"):
        return tail.endswith(b"\xff\xd9")
    if head.startswith(b"BM") and len(head) >= 6:
        return size >= int.from_bytes(head[2:6], "little")
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return size >= int.from_bytes(head[4:8], "little") + 8
    return None


def read_end_mark(path: Path) -> bool | None:
    """end_mark_present for a file on disk (reads 16 bytes at each end); False if it cannot be read."""
    try:
        with open(path, "rb") as reader:
            head = reader.read(16)
            size = reader.seek(0, os.SEEK_END)
            reader.seek(max(0, size - 16))
            return end_mark_present(head, reader.read(16), size)
    except OSError:
        return False


# inotify(7) constants (Linux): what a writer did to a file in the watched folder.
IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_Q_OVERFLOW = 0x2, 0x8, 0x80, 0x4000
IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000
INOTIFY_EVENT = struct.Struct("iIII")  # wd, mask, cookie, length of the name that follows
WRITING, CLOSED = "writing", "closed"


class WriteEvents:
    """Close-write events of one folder (Linux inotify, read without blocking): which files a writer has closed or
    renamed in (CLOSED) and which it is still writing (WRITING).

    Only a hint that makes the watcher faster and safer where it works: elsewhere, when it cannot be set up, and
    on network shares (where writes by other machines make no events) `available` is False or nothing arrives,
    and the watcher's rules of time and end marks decide alone.
    """

    def __init__(self, folder: Path) -> None:
        self.fd: int | None = None
        if not sys.platform.startswith("linux"):
            return
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd < 0:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
            if libc.inotify_add_watch(fd, os.fsencode(folder), IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO) < 0:
                error = ctypes.get_errno()
                os.close(fd)
                raise OSError(error, os.strerror(error))
        except (OSError, AttributeError) as error:
            log.info("watch:%s: no close-write events (%s); files are judged by time and end marks alone",
                     folder, error)
            return
        self.fd = fd

    @property
    def available(self) -> bool:
        return self.fd is not None

    def read(self) -> tuple[dict[str, str], bool]:
        """Since the last read: file name → WRITING or CLOSED (its latest event), and whether events were lost."""
        changes: dict[str, str] = {}
        lost = False
        while self.fd is not None:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            offset = 0
            while offset + INOTIFY_EVENT.size <= len(data):
                _, mask, _, length = INOTIFY_EVENT.unpack_from(data, offset)
                name = data[offset + INOTIFY_EVENT.size: offset + INOTIFY_EVENT.size + length].split(b"\0", 1)[0]
                offset += INOTIFY_EVENT.size + length
                if mask & IN_Q_OVERFLOW:
                    lost = True
                elif name and mask & (IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO):
                    changes[os.fsdecode(name)] = WRITING if mask & IN_MODIFY else CLOSED
        return changes, lost

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


Stamp = tuple[int, int]  # (size, mtime_ns): a file that changes gets a new stamp


@dataclass
class Arrival:
    """A file not yet taken: its stamp, since when (watcher clock) it has had it, and what reading it gave."""

    stamp: Stamp
    since: float
    polls: int = 0  # polls that saw this stamp
    read: tuple[SourceItem | SourceError, bool | None] | None = None  # (event, end mark) once read at this stamp


class FolderWatcher:
    """Parts arriving as files in a folder (not its sub-folders), each inspected once, and only when whole.

    **Which files.** Files already in the folder at the start are inspected unless `already_inspected` (source id
    → POSIX time of its latest journal record; utils.line.inspected_sources reads it from the journal) has them:
    after a crash and restart the parts that arrived while the line was down are inspected, the ones done before
    are not, and a file rewritten after its record (mtime later) counts as a new part. With a fresh journal every
    file waiting in the folder is inspected: a line started on a folder holding parts must not ignore them
    silently (move finished parts out of the folder if they should not be). The start logs how many files were
    there, how many the journal had, how many are inspected. `skip_existing=True` keeps the old rule (only files
    that appear after the start). Files count as the same whatever spelling of the folder the journal has.

    **When a file is whole.** Never by a guess of time alone. A file is read once its writer closed it or renamed
    it in (close-write events, Linux inotify, where available) or once it is unchanged (size and mtime) since the
    previous poll and no writer is known to hold it open. It is then taken if it decodes and its format's end mark
    is there (end_mark_present: PNG, JPEG, BMP, WebP); a decodable file of a format without one (TIFF, …) once
    it has been unchanged for `settle_s`. A file that does not decode, or decodes without its end mark, is retried
    whenever it changes and not reported while it does; once unchanged for `give_up_s` it is reported once as an
    error (or, decodable, taken with a warning). Empty files are reported the same way. Writers should still
    write to a hidden or ``.tmp``/``.part`` name and rename when done (ignored names; the rename is the clearest
    "done"). A file replaced under the same name while watching is a new part.

    `poll()` lists the folder once and returns what became ready; with `clock` (monotonic seconds) tests drive
    the watcher without waiting. Iterating polls every `poll_interval_s` seconds, yielding ``None`` after each
    poll that found nothing. Memory stays bounded by the folder's contents: a file is forgotten once it leaves.
    """

    def __init__(self, folder: str | Path, *, stop: threading.Event | None = None, poll_interval_s: float = 0.5,
                 already_inspected: Mapping[str, float] | None = None, skip_existing: bool = False,
                 settle_s: float = SETTLE_S, give_up_s: float = GIVE_UP_S, write_events: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ValueError(f"watch folder {str(self.folder)!r} does not exist or is not a folder")
        if not poll_interval_s > 0:
            raise ValueError(f"poll_interval_s must be > 0; got {poll_interval_s!r}")
        if not 0 <= settle_s <= give_up_s:
            raise ValueError(f"need 0 <= settle_s <= give_up_s; got settle_s={settle_s!r}, give_up_s={give_up_s!r}")
        self.stop = stop or threading.Event()
        self.poll_interval_s, self.settle_s, self.give_up_s, self.clock = poll_interval_s, settle_s, give_up_s, clock
        # Events first, then the listing: no write between the two goes unseen.
        self._write_events = WriteEvents(self.folder) if write_events else None
        self._writers: dict[str, str] = {}  # name → WRITING | CLOSED, as the latest event said
        self._arrivals: dict[str, Arrival] = {}
        self._done: dict[str, Stamp] = self._already_done(self._listing(), already_inspected, skip_existing)

    @property
    def write_events_available(self) -> bool:
        return self._write_events is not None and self._write_events.available

    def _listing(self) -> dict[str, Stamp]:
        listing = {}
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if entry.is_file() and not is_hidden_or_partial(Path(entry.name)):
                    status = entry.stat()
                    listing[entry.name] = (status.st_size, status.st_mtime_ns)
        return listing

    def _already_done(self, listing: dict[str, Stamp], already_inspected: Mapping[str, float] | None,
                      skip_existing: bool) -> dict[str, Stamp]:
        """The files present at the start that are not parts to inspect now; logs what it decided and why."""
        if skip_existing:
            if listing:
                log.info("watch:%s: %d file(s) already in the folder are skipped (skip_existing: only files that "
                         "appear from now on are inspected)", self.folder, len(listing))
            return dict(listing)
        inspected_at = self._inspected_here(already_inspected or {})
        done = {name: stamp for name, stamp in listing.items()
                if name in inspected_at and stamp[1] / 1e9 <= inspected_at[name]}
        changed = sum(name in inspected_at for name in listing) - len(done)
        if listing:
            log.info("watch:%s: %d file(s) already in the folder: %d already in the journal (skipped), %d to inspect "
                     "now%s", self.folder, len(listing), len(done), len(listing) - len(done),
                     f" ({changed} of them changed after their journal record)" if changed else "")
        return done

    def _inspected_here(self, already_inspected: Mapping[str, float]) -> dict[str, float]:
        """File name → time of its latest record, for the journaled sources that are files of this folder."""
        folder = os.path.realpath(self.folder)
        resolved: dict[str, str] = {}  # parent as journaled → real path; most records share a few parents
        names: dict[str, float] = {}
        for source, at in already_inspected.items():
            parent, name = os.path.split(source)
            if parent not in resolved:
                resolved[parent] = os.path.realpath(parent or ".")
            if resolved[parent] == folder:
                names[name] = max(at, names.get(name, at))
        return names

    def poll(self) -> list[SourceItem | SourceError]:
        """List the folder once; return the files that became whole (or hopeless) since the last poll, by name."""
        now = self.clock()
        listing = self._listing()
        self._writers = {name: state for name, state in self._writers.items() if name in listing}
        if self._write_events is not None:  # read after listing, so a close here covers what was listed
            changes, lost = self._write_events.read()
            if lost:  # the kernel dropped events: forget what they said, time and end marks decide
                self._writers.clear()
            self._writers.update(changes)
        # A file replaced under the same name (new size or mtime) is a new part.
        self._done = {name: stamp for name, stamp in self._done.items() if listing.get(name) == stamp}
        self._arrivals = {name: arrival for name, arrival in self._arrivals.items()
                          if listing.get(name) == arrival.stamp}
        taken = []
        for name in sorted(listing):
            if name in self._done:
                continue
            arrival = self._arrivals.setdefault(name, Arrival(listing[name], now))
            arrival.polls += 1
            event = self._take(name, arrival, now)
            if event is not None:
                taken.append(event)
                self._done[name] = arrival.stamp
                del self._arrivals[name]
                self._writers.pop(name, None)
        return taken

    def _take(self, name: str, arrival: Arrival, now: float) -> SourceItem | SourceError | None:
        """The event for `name` if it is whole (or has been given up on), else None: look again next poll."""
        still_s = now - arrival.since
        given_up = still_s >= self.give_up_s
        writer = self._writers.get(name)
        quiet = arrival.polls > 1 and writer != WRITING  # unchanged since the previous poll, nobody writing
        if not (writer == CLOSED or quiet or given_up):
            return None
        if arrival.read is None:
            arrival.read = self._read(name, arrival.stamp)
            if arrival.read is None:
                return None  # it changed while being read: a new stamp next poll
        event, end_mark = arrival.read
        if isinstance(event, SourceItem) and (end_mark or (end_mark is None and still_s >= self.settle_s)):
            return event
        if not given_up:
            return None
        if isinstance(event, SourceItem):
            log.warning("%s decodes but does not end like a whole file of its format; taken after %g s without "
                        "change", event.id, self.give_up_s)
            return event
        return SourceError(event.id, f"{event.message} (unchanged for {self.give_up_s:g} s)")

    def _read(self, name: str, stamp: Stamp) -> tuple[SourceItem | SourceError, bool | None] | None:
        """Decode the file and look for its end mark; None if it changed meanwhile (the read may mix versions)."""
        path = self.folder / name
        end_mark = read_end_mark(path)
        event = SourceError(str(path), f"{str(path)!r} is empty") if stamp[0] == 0 else read_file_item(path)
        try:
            status = path.stat()
        except OSError:
            return None
        return (event, end_mark) if (status.st_size, status.st_mtime_ns) == stamp else None

    def close(self) -> None:
        """Release the close-write events (a file descriptor); polling then goes on by time and end marks."""
        if self._write_events is not None:
            self._write_events.close()

    def __del__(self) -> None:
        if getattr(self, "_write_events", None) is not None:
            self._write_events.close()

    def __iter__(self) -> Iterator[SourceEvent]:
        try:
            while not self.stop.is_set():
                events = self.poll()
                yield from events
                if not events:
                    yield None
                    self.stop.wait(self.poll_interval_s)
        finally:
            self.close()


class VideoSource:
    """Frames of a camera, a stream URL or a video file, through OpenCV's VideoCapture.

    A video file (``live=False``) yields its frames and ends. A live source (camera, stream) never ends by itself:
    when opening or reading fails it yields a SourceError saying so, waits, and reopens; the waits grow
    0.5, 1, 2, … seconds up to `max_backoff_s` and start again from the bottom after a good frame. While
    waiting it yields ``None`` between short waits so that the line stays responsive. `max_reconnects` (None =
    forever) bounds the attempts in a row. `open_capture` and `wait` are the seams that tests use to run a real
    VideoCapture on a file as if it were a camera and to record the back-off without waiting.
    """

    def __init__(self, target: int | str, *, live: bool, stop: threading.Event | None = None,
                 max_backoff_s: float = 30.0, max_reconnects: int | None = None,
                 open_capture: Callable[[int | str], cv2.VideoCapture] = cv2.VideoCapture,
                 wait: Callable[[float], object] | None = None) -> None:
        if not max_backoff_s > 0:
            raise ValueError(f"max_backoff_s must be > 0; got {max_backoff_s!r}")
        self.target = target
        self.name = f"camera:{target}" if isinstance(target, int) else str(target)
        self.live = live
        self.stop = stop or threading.Event()
        self.max_backoff_s = max_backoff_s
        self.max_reconnects = max_reconnects
        self.open_capture = open_capture
        self.wait = wait or self.stop.wait

    def backoff_delays(self) -> Iterator[float]:
        """0.5, 1, 2, 4, … seconds, capped at `max_backoff_s`."""
        delay = 0.5
        while True:
            yield min(delay, self.max_backoff_s)
            delay *= 2

    def __iter__(self) -> Iterator[SourceEvent]:
        failures = 0
        frame_number = 0
        delays = self.backoff_delays()
        while not self.stop.is_set():
            capture = self.open_capture(self.target)
            opened = capture.isOpened()
            for frame_number, frame in self._frames(capture, frame_number):
                failures, delays = 0, self.backoff_delays()
                yield SourceItem(f"{self.name}#{frame_number}", to_uint8_channels_last(frame, bgr=True))
                if self.stop.is_set():
                    break
            capture.release()
            if self.stop.is_set() or (opened and not self.live):
                return
            failures += 1
            if not self.live:
                yield SourceError(self.name, f"cannot open video {self.name}")
                return
            if self.max_reconnects is not None and failures > self.max_reconnects:
                yield SourceError(self.name, f"{self.name} failed {failures} times in a row; giving up")
                return
            delay = next(delays)
            what = "dropped (no frame)" if opened else "cannot be opened"
            yield SourceError(self.name, f"{self.name} {what}; reconnecting in {delay:g} s (attempt {failures})")
            yield from self._wait_responsively(delay)

    def _wait_responsively(self, delay: float) -> Iterator[None]:
        """Wait `delay` seconds in steps of at most one, yielding None after each so the line can tick."""
        remaining = delay
        while remaining > 0 and not self.stop.is_set():
            step = min(remaining, 1.0)
            self.wait(step)
            remaining -= step
            yield None

    @staticmethod
    def _frames(capture: cv2.VideoCapture, frame_number: int) -> Iterator[tuple[int, np.ndarray]]:
        while capture.isOpened():
            grabbed, frame = capture.read()
            if not grabbed or frame is None:
                return
            frame_number += 1
            yield frame_number, frame

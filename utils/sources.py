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
``watch:DIR``       files that appear in DIR after the start, each once, when fully written
``camera:N``        OpenCV camera N; a drop is reported and the camera reopened with growing back-off
``URL``             a stream (rtsp://, http(s)://, …) through OpenCV, reconnecting like a camera
``VIDEO``           a video file (.mp4, .avi, …); its frames in order, then the source ends
==================  ==========================================================================================
"""

from __future__ import annotations

import glob
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
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


def open_source(spec: str, *, stop: threading.Event | None = None, poll_interval_s: float = 0.5) -> Iterable[
        SourceEvent]:
    """The source a ``--source`` string names (see the module docstring); ValueError if it names nothing usable.

    `stop` ends live sources (watch, camera, stream) between events; `poll_interval_s` is how often a watched
    folder is listed.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"--source must name a file, glob, folder, watch:DIR, camera:N or URL; got {spec!r}")
    stop = stop or threading.Event()
    if spec.startswith("watch:"):
        return FolderWatcher(spec[len("watch:"):], stop=stop, poll_interval_s=poll_interval_s)
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


class FolderWatcher:
    """Parts arriving as new files in a folder (not its sub-folders), each inspected once.

    A file is taken only once it is complete: its size and modification time must be the same on two
    consecutive polls (and the size non-zero), so a file still being copied is never read half-way. Writers
    that can should still write to a hidden or ``.tmp``/``.part`` name and rename when done: such names are
    ignored. Files already in the folder when watching starts are not parts of this run.

    `poll()` lists the folder once and returns what became ready, so tests drive the watcher without waiting;
    iterating polls every `poll_interval_s` seconds, yielding ``None`` after each poll that found nothing.
    Memory stays bounded by the folder's contents: a file forgotten once it leaves the folder.
    """

    def __init__(self, folder: str | Path, *, stop: threading.Event | None = None, poll_interval_s: float = 0.5,
                 skip_existing: bool = True) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ValueError(f"watch folder {str(self.folder)!r} does not exist or is not a folder")
        if not poll_interval_s > 0:
            raise ValueError(f"poll_interval_s must be > 0; got {poll_interval_s!r}")
        self.stop = stop or threading.Event()
        self.poll_interval_s = poll_interval_s
        self._pending: dict[str, tuple[int, int]] = {}  # name → (size, mtime_ns) seen on the previous poll
        self._done: dict[str, tuple[int, int]] = self._listing() if skip_existing else {}

    def _listing(self) -> dict[str, tuple[int, int]]:
        listing = {}
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if entry.is_file() and not is_hidden_or_partial(Path(entry.name)):
                    status = entry.stat()
                    listing[entry.name] = (status.st_size, status.st_mtime_ns)
        return listing

    def poll(self) -> list[SourceItem | SourceError]:
        """List the folder once; decode and return the files whose size and mtime held still since last poll."""
        listing = self._listing()
        # A file replaced under the same name (new size or mtime) is a new part.
        self._done = {name: stamp for name, stamp in self._done.items() if listing.get(name) == stamp}
        ready = []
        for name in sorted(listing):
            stamp = listing[name]
            if name in self._done:
                continue
            if self._pending.get(name) == stamp and stamp[0] > 0:
                ready.append(name)
                self._done[name] = stamp
        self._pending = {name: stamp for name, stamp in listing.items() if name not in self._done}
        return [read_file_item(self.folder / name) for name in ready]

    def __iter__(self) -> Iterator[SourceEvent]:
        while not self.stop.is_set():
            events = self.poll()
            yield from events
            if not events:
                yield None
                self.stop.wait(self.poll_interval_s)


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

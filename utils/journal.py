"""The line's journal: the outbox every result passes through before anyone else sees it.

A journal is a JSON Lines file, one record per line, ``{"type": "result" | "error" | "shift", ...payload}``.
It knows nothing about MQTT; the publisher (utils/mqtt.py) reads it and decides what "delivered" means.

What the journal guarantees, so that a broker outage delays delivery but never loses a result:

* every record is flushed and fsynced before ``append`` returns: once the line has journaled a result, a crash
  or a power cut cannot take it away;
* ``seq`` numbers results and errors, is unique within a journal and only ever grows: it continues across
  runs, crashes and torn writes, so receivers can de-duplicate by it without ever dropping a part;
* one writer at a time (an exclusive lock), so two lines never interleave their seqs in one file;
* a line left half-written by a crash or a power cut is closed with a newline on the next open and skipped by
  readers; the seq it may have carried is never given out again (see :func:`highest_seq`);
* the delivery offset (:class:`DeliveryMarker`, ``<journal>.delivered``) says up to which byte every record has
  reached its receiver. It belongs to the journal, not to the transport: it is the outbox's read position, a
  byte offset into this file, kept beside it and replaced atomically; whoever delivers (today the MQTT
  publisher, on each PUBACK) only tells it how far it got. A restarted line resumes from it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

RECORD_TYPES = ("result", "error", "shift")
TAIL_BYTES = 1 << 20  # the last seq is looked for in the journal's last MiB before the whole file is read
# A seq in a torn line counts only when a delimiter follows it: "seq":12 may be the first digits of "seq":123.
SEQ_IN_FRAGMENT = re.compile(rb'"seq"\s*:\s*(\d+)\s*[,}]')


class Journal:
    """Append-only JSON Lines file of everything the line produced; one writer at a time (an exclusive lock).

    A line left half-written by a crash is closed with a newline on open and then skipped by readers; its seq
    (or, when the tear cut it off, the one it would have had) is never given out again.
    """

    def __init__(self, path: str | Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # what mkdir says when a regular file stands where the journal's folder should be
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(self.path.parent)) from None
        self._file: BinaryIO = open(self.path, "ab")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise ValueError(f"journal {str(self.path)!r} is in use by another running line") from None
        self.size = self._file.seek(0, os.SEEK_END)
        if self.size and self._last_byte() != b"\n":
            self._write(b"\n")
        self.last_seq = self._find_last_seq()

    def _last_byte(self) -> bytes:
        with open(self.path, "rb") as reader:
            reader.seek(-1, os.SEEK_END)
            return reader.read(1)

    def _find_last_seq(self) -> int:
        """The highest seq this journal may have given out: in its last MiB, or in the whole file if need be."""
        with open(self.path, "rb") as reader:
            for start in sorted({max(0, self.size - TAIL_BYTES), 0}, reverse=True):
                reader.seek(start)
                lines = reader.read().splitlines()
                if start > 0:
                    lines = lines[1:]  # the read began inside a line
                highest = highest_seq(lines, known=0 if start == 0 else None)
                if highest is not None:
                    return highest
        return 0

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._file.flush()
        if self.fsync:  # a power cut must not take an acknowledged-to-nobody result with it
            os.fsync(self._file.fileno())
        self.size += len(data)

    def next_seq(self) -> int:
        """A fresh sequence number for a result or an error: one more than any the journal may hold."""
        self.last_seq += 1
        return self.last_seq

    def append(self, record: dict[str, Any]) -> None:
        """Write `record` (must have "type" in RECORD_TYPES) as one line, flushed (and fsynced) before return."""
        if record.get("type") not in RECORD_TYPES:
            raise ValueError(f"journal record type must be one of {RECORD_TYPES}; got {record.get('type')!r}")
        self._write((json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode())

    def lines_after(self, offset: int) -> int:
        """How many complete lines the journal holds from byte `offset` on (torn lines counted too)."""
        with open(self.path, "rb") as reader:
            reader.seek(offset)
            return reader.read().count(b"\n")

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()  # closing releases the lock


def parse_record(line: bytes) -> dict[str, Any] | None:
    """One journal line → its record, or None for a blank, torn or foreign line."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and record.get("type") in RECORD_TYPES else None


def highest_seq(lines: Iterable[bytes], *, known: int | None = 0) -> int | None:
    """The highest seq that journal `lines` may have used, so that the next one given out is surely new.

    A record counts with its seq. A torn or unreadable line (a crash or a power cut mid-write, closed by a
    newline since) counts with the seq it still shows (``"seq":41,`` in its prefix), or, when the tear cut that
    off, as if it had used the seq after the one before it: a skipped seq costs nothing, while a seq given out
    twice would make a subscriber that de-duplicates by seq drop a part. The answer is the same on every open,
    however often the line restarts before it writes again.

    `known` is the highest seq before `lines` (0 for a journal's start); None if `lines` start somewhere in the
    middle, where an unreadable line before the first seq is then covered by the larger seqs written after it.
    Returns None only if `known` is None and no line shows a seq.
    """
    highest = known
    for line in lines:
        record = parse_record(line)
        if record is not None:
            seq = record.get("seq")
            if isinstance(seq, int) and not isinstance(seq, bool):
                highest = seq if highest is None else max(highest, seq)
            continue
        if not line.strip():
            continue
        shown = [int(match) for match in SEQ_IN_FRAGMENT.findall(line)]
        if shown:
            highest = max(shown + ([] if highest is None else [highest]))
        elif highest is not None:
            highest += 1
    return highest


def read_records(reader: BinaryIO, offset: int, limit: int) -> list[tuple[int, int, dict[str, Any]]]:
    """Up to `limit` complete records from byte `offset` on, as (start, end, record); torn lines are skipped.

    A last line without its newline is still being written and is left for the next read.
    """
    reader.seek(offset)
    records = []
    while len(records) < limit:
        line = reader.readline()
        if not line.endswith(b"\n"):
            break
        start, offset = offset, offset + len(line)
        record = parse_record(line)
        if record is None:
            if line.strip():
                log.warning("journal: skipping an unreadable line at byte %d", start)
            continue
        records.append((start, offset, record))
    return records


class DeliveryMarker:
    """The journal offset below which every record has been delivered, kept in ``<journal>.delivered``.

    Part of the journal (its read position as an outbox), not of a transport: the deliverer only reports how
    far its receiver has acknowledged.
    """

    def __init__(self, journal_path: Path) -> None:
        self.path = journal_path.with_name(journal_path.name + ".delivered")

    def read(self) -> int | None:
        try:
            return int(self.path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def write(self, offset: int) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(f"{offset}\n")
        os.replace(temporary, self.path)  # atomic: a crash leaves the old or the new offset, never half

"""Append-only on-disk spool for event batches that could not reach PostgreSQL.

A record is ``MAGIC | u32 length | u32 crc32 | msgpack(list[Event])``. Records are replayed in
the order they were written; the replay position is kept in ``<spool>.offset`` so a restart goes
on where it stopped (replaying a record twice is harmless: replay is idempotent in the writer).
A torn tail (a crash in the middle of an append) is detected by its length or checksum, logged,
counted and cut off. When every record has been replayed the file is truncated to zero.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import msgspec

from addon.event import Event

log = logging.getLogger("govrix.spool")

MAGIC = b"GVX1"
_HEADER = struct.Struct(">4sII")
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[Event])


class SpoolError(OSError):
    """The spool could not be written (disk full, permissions): the events are lost."""


class Spool:
    """One spool file plus its replay offset; appends are thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset_path = path.with_name(path.name + ".offset")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fh = open(path, "ab")  # noqa: SIM115 - kept open for the writer's lifetime
        self.torn_records = 0
        self._end = self._fh.tell()
        self._offset = self._read_offset()
        self._cut_torn_tail()

    # -- writing ------------------------------------------------------------------------------

    def append(self, events: list[Event]) -> None:
        """Append one batch as one record. Raises SpoolError when the disk refuses it."""
        payload = _encoder.encode(events)
        record = _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload
        with self._lock:
            try:
                if self._fh.closed:  # an event recorded after the writer stopped
                    self._fh = open(self.path, "ab")  # noqa: SIM115 - closed by close()
                self._fh.write(record)
                self._fh.flush()
                self._end += len(record)
            except OSError as e:
                raise SpoolError(e.errno, f"spool write failed: {e.strerror}") from e

    def sync(self) -> None:
        """fsync what was appended (called by the writer thread, off the producers' path)."""
        with self._lock:
            if self._end and not self._fh.closed:
                os.fsync(self._fh.fileno())

    # -- replaying ----------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._end

    @property
    def pending_bytes(self) -> int:
        return max(0, self.size - self._offset)

    def has_pending(self) -> bool:
        return self.pending_bytes > 0

    def records(self) -> Iterator[tuple[int, list[Event]]]:
        """Yield ``(end_offset, events)`` from the replay position to the current end."""
        end = self.size
        pos = self._offset
        with open(self.path, "rb") as f:
            f.seek(pos)
            while pos < end:
                payload = _read_record(f)
                if payload is None:
                    log.error(
                        "spool %s: corrupt record at byte %d; skipping to the end", self.path, pos
                    )
                    self.torn_records += 1
                    pos = end
                    self.commit(pos)
                    break
                pos += _HEADER.size + len(payload)
                yield pos, _decoder.decode(payload)

    def commit(self, end_offset: int) -> None:
        """Everything before ``end_offset`` is in the database; truncate when all of it is."""
        with self._lock:
            if end_offset >= self._end:
                self._fh.truncate(0)
                self._fh.seek(0)
                self._end = self._offset = 0
            else:
                self._offset = end_offset
            self._write_offset()

    def close(self) -> None:
        with self._lock:
            self._fh.close()

    # -- internals ----------------------------------------------------------------------------

    def _read_offset(self) -> int:
        try:
            return int(self.offset_path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _write_offset(self) -> None:
        tmp = self.offset_path.with_name(self.offset_path.name + ".tmp")
        tmp.write_text(f"{self._offset}\n")
        os.replace(tmp, self.offset_path)

    def _cut_torn_tail(self) -> None:
        """Find the end of the last whole record; cut anything after it (a crashed append)."""
        size = self._end
        if self._offset > size:
            self._offset = 0
        pos = self._offset
        with open(self.path, "rb") as f:
            f.seek(pos)
            while pos < size and (payload := _read_record(f)) is not None:
                pos += _HEADER.size + len(payload)
        if pos < size:
            log.error(
                "spool %s: cutting a torn tail of %d bytes (an append interrupted by a crash)",
                self.path,
                size - pos,
            )
            self.torn_records += 1
            with self._lock:
                self._fh.truncate(pos)
                self._fh.seek(pos)
                self._end = pos


def _read_record(f: BinaryIO) -> bytes | None:
    """The payload of the record at the file position, or None when it is short or corrupt."""
    header = f.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    magic, length, crc = _HEADER.unpack(header)
    payload = f.read(length)
    if magic != MAGIC or len(payload) < length or zlib.crc32(payload) != crc:
        return None
    return payload

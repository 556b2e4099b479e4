"""The command journal on disk: append-only segment files, group commit, atomic snapshots.

Theory of operation
-------------------
A journal directory holds::

    journal-<first seq, 20 digits>.jnl     segments (engine.journal layout), oldest first
    snapshot-<next seq, 20 digits>.snap    snapshots (engine.recovery layout)

Each segment continues the previous one exactly (its name is the seq of its first record).
A new segment starts at every snapshot (so whole old segments can be deleted once a newer
snapshot is durable) and at every start-up (a fresh file, never an append behind a repaired
tail). Only the last segment may have a torn tail; :meth:`JournalDirectory.read_records`
truncates it to the last good record (and fsyncs the truncation) before anything is
appended.

Everything in this module blocks. The pipeline runs :meth:`JournalWriter.commit` (write +
fdatasync: one group commit covering every record queued since the previous one) and
:meth:`JournalDirectory.write_snapshot` on dedicated one-thread pools, never on the reactor;
start-up code calls the rest before the reactor runs. A writer is used by one thread at a
time (its pool's only thread).

Snapshots are written atomically: a temporary file is written and fsynced, renamed over the
final name, and the directory fsynced, so a crash leaves either no new snapshot or a whole
one. Start-up uses the newest snapshot that decodes and passes its hash check, falling back to
older ones, which is why ``keep_snapshots`` (default 2) snapshots and the segments they need
are kept.

Pruning also keeps what the Postgres writer still needs (``retain_from_seq``: its durable
high-water mark, see fixserver.pg.catchup): every segment holding a seq at or after it, and
the newest snapshot at or before it (the point a regeneration replays from; with no such
snapshot, every snapshot and segment is kept: the replay starts from a fresh engine). So a
Postgres outage that outlasts snapshots makes pruning wait, never matching;
:attr:`JournalDirectory.held_for_retain` counts the segments kept only for it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator
from typing import Any, Callable, NamedTuple, Union

from engine.journal import MAGIC, JournalCorruptError, JournalRecord, decode_segment
from engine.recovery import (
    Recovery,
    SnapshotCorruptError,
    SnapshotState,
    StateHashMismatch,
    decode_snapshot,
    encode_snapshot,
)

log = logging.getLogger(__name__)

_SEGMENT = re.compile(r"^journal-(\d{20})\.jnl$")
_SNAPSHOT = re.compile(r"^snapshot-(\d{20})\.snap$")
_sync = getattr(os, "fdatasync", os.fsync)


def segment_name(first_seq: int) -> str:
    """File name of the segment whose first record has seq ``first_seq``."""
    return f"journal-{first_seq:020d}.jnl"


def snapshot_name(next_seq: int) -> str:
    """File name of the snapshot taken when the next seq was ``next_seq``."""
    return f"snapshot-{next_seq:020d}.snap"


class Rotate(NamedTuple):
    """A commit item: close the current segment and start one at ``first_seq``."""

    first_seq: int


CommitItem = Union[bytes, Rotate]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class JournalWriter:
    """Appends framed records to the current segment (one thread at a time; see module doc)."""

    def __init__(self, directory: JournalDirectory, first_seq: int) -> None:
        self.directory = directory
        self.fd = -1
        self.path = ""
        self.bytes_written = 0
        self.commits = 0
        self._open_segment(first_seq)

    def _open_segment(self, first_seq: int) -> None:
        path = os.path.join(self.directory.path, segment_name(first_seq))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        _write_all(fd, MAGIC)
        if self.directory.fsync:
            os.fsync(fd)
            self.directory.sync_dir()
        self.fd = fd
        self.path = path

    def commit(self, items: Iterable[CommitItem]) -> int:
        """Append ``items`` in order (records, rotations), then make them durable.

        Returns the number of record bytes written. Blocking: runs on the journal thread.
        """
        chunk: list[bytes] = []
        written = 0
        for item in items:
            if type(item) is Rotate:
                if chunk:
                    data = b"".join(chunk)
                    _write_all(self.fd, data)
                    written += len(data)
                    chunk = []
                self._rotate(item.first_seq)
            else:
                chunk.append(item)  # type: ignore[arg-type]
        if chunk:
            data = b"".join(chunk)
            _write_all(self.fd, data)
            written += len(data)
        if self.directory.fsync:
            _sync(self.fd)
        self.bytes_written += written
        self.commits += 1
        return written

    def _rotate(self, first_seq: int) -> None:
        if self.directory.fsync:
            _sync(self.fd)
        os.close(self.fd)
        self._open_segment(first_seq)

    def close(self) -> None:
        """Make everything durable and close the segment."""
        if self.fd >= 0:
            if self.directory.fsync:
                _sync(self.fd)
            os.close(self.fd)
            self.fd = -1


class JournalDirectory:
    """One journal directory: listing, reading, repairing, snapshots, pruning."""

    def __init__(self, path: str, *, fsync: bool = True) -> None:
        os.makedirs(path, exist_ok=True)
        self.path = path
        #: False only for tests and benchmarks that measure everything but the disk
        self.fsync = fsync
        #: segments the last prune kept only because of its ``retain_from_seq``
        self.held_for_retain = 0
        for name in os.listdir(path):
            if name.endswith(".tmp"):  # a snapshot write that a crash interrupted
                os.unlink(os.path.join(path, name))

    def sync_dir(self) -> None:
        """fsync the directory so created, renamed and deleted names are durable."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _listed(self, pattern: re.Pattern[str]) -> list[tuple[int, str]]:
        found = []
        for name in os.listdir(self.path):
            m = pattern.match(name)
            if m:
                found.append((int(m.group(1)), os.path.join(self.path, name)))
        found.sort()
        return found

    def segments(self) -> list[tuple[int, str]]:
        """(first seq, path) of every segment, oldest first."""
        return self._listed(_SEGMENT)

    def snapshots(self) -> list[tuple[int, str]]:
        """(next seq, path) of every snapshot, oldest first."""
        return self._listed(_SNAPSHOT)

    def read_records(self, from_seq: int = 1) -> Iterator[JournalRecord]:
        """Every record that holds a seq >= ``from_seq``, in order; repairs a torn last segment.

        Raises JournalCorruptError for damage other than a torn tail of the last segment, and
        for segments that do not continue each other.
        """
        segs = self.segments()
        expected: int | None = None
        for i, (first_seq, path) in enumerate(segs):
            last = i == len(segs) - 1
            if not last and segs[i + 1][0] <= from_seq:
                continue  # holds only seqs before from_seq
            if expected is not None and first_seq != expected:
                raise JournalCorruptError(
                    f"{os.path.basename(path)} starts at seq {first_seq}, expected {expected}"
                )
            with open(path, "rb") as f:
                data = f.read()
            records, good_end, torn = decode_segment(data)
            if records and records[0].first_seq != first_seq:
                raise JournalCorruptError(
                    f"{os.path.basename(path)} holds seq {records[0].first_seq} first"
                )
            if torn:
                if not last:
                    raise JournalCorruptError(f"{os.path.basename(path)} is torn but not last")
                self._truncate(path, good_end, len(data))
            expected = records[-1].next_seq if records else first_seq
            for rec in records:
                if rec.next_seq > from_seq:
                    yield rec

    def _truncate(self, path: str, good_end: int, size: int) -> None:
        log.warning("journal %s: torn tail of %d bytes truncated at offset %d",
                    os.path.basename(path), size - good_end, good_end)
        fd = os.open(path, os.O_WRONLY)
        try:
            if good_end < len(MAGIC):
                os.ftruncate(fd, 0)
                _write_all(fd, MAGIC)
            else:
                os.ftruncate(fd, good_end)
            os.fsync(fd)
        finally:
            os.close(fd)

    def recover(
        self,
        new_engine: Callable[[], Any],
        restore: Callable[[bytes], Any],
    ) -> Recovery:
        """A Recovery at the newest usable snapshot (or a fresh engine), journal not yet replayed.

        Replay it with ``recovery.replay(directory.read_records(recovery.next_seq))``.
        """
        for _, path in reversed(self.snapshots()):
            try:
                with open(path, "rb") as f:
                    snap = decode_snapshot(f.read())
                return Recovery.from_snapshot(snap, restore)
            except (SnapshotCorruptError, StateHashMismatch) as exc:
                log.error("snapshot %s unusable (%s); trying an older one",
                          os.path.basename(path), exc)
        return Recovery(new_engine())

    def open_writer(self, next_seq: int) -> JournalWriter:
        """A writer starting a new segment at ``next_seq`` (after the journal was replayed).

        Refuses to start behind records that already exist (that would fork the history).
        """
        segs = self.segments()
        if segs:
            first_seq, path = segs[-1]
            records, _, torn = decode_segment(_read(path))
            if torn:
                raise JournalCorruptError(
                    f"{os.path.basename(path)} has a torn tail: read_records() repairs it"
                )
            end = records[-1].next_seq if records else first_seq
            if end != next_seq:
                raise JournalCorruptError(
                    f"journal ends at seq {end}, the writer was asked to start at {next_seq}"
                )
            if not records and first_seq == next_seq:
                os.unlink(path)  # an empty segment: its replacement is created below
        return JournalWriter(self, next_seq)

    def write_snapshot(self, snap: SnapshotState, keep_snapshots: int = 2,
                       retain_from_seq: int | None = None) -> str:
        """Write ``snap`` atomically, then prune what no kept snapshot (nor the seqs from
        ``retain_from_seq`` on) needs. Blocking."""
        final = os.path.join(self.path, snapshot_name(snap.next_seq))
        tmp = final + ".tmp"
        data = encode_snapshot(snap)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, data)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        if self.fsync:
            self.sync_dir()
        self.prune(keep_snapshots, retain_from_seq)
        return final

    def prune(self, keep_snapshots: int = 2, retain_from_seq: int | None = None) -> list[str]:
        """Delete snapshots beyond the newest ``keep_snapshots`` and the segments none needs,
        keeping what a replay of the seqs from ``retain_from_seq`` on needs (module doc)."""
        snaps = self.snapshots()
        self.held_for_retain = 0
        if len(snaps) < keep_snapshots or keep_snapshots < 1:
            return []
        first_kept = len(snaps) - keep_snapshots
        oldest_needed = snaps[first_kept][0]
        if retain_from_seq is not None:
            base = [i for i, (seq, _) in enumerate(snaps) if seq <= retain_from_seq]
            first_kept = min(first_kept, base[-1] if base else 0)
            # With no snapshot at or before it, a replay starts from a fresh engine at seq 1.
            oldest_needed = snaps[first_kept][0] if base else 1
        removed = [path for _, path in snaps[:first_kept]]
        segs = self.segments()
        held = 0
        for (_, path), (next_first, _) in zip(segs, segs[1:]):
            if next_first <= oldest_needed:
                removed.append(path)
            elif next_first <= snaps[-keep_snapshots][0]:
                held += 1  # only the retained seqs need it
        self.held_for_retain = held
        for path in removed:
            os.unlink(path)
        if removed and self.fsync:
            self.sync_dir()
        return removed


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()

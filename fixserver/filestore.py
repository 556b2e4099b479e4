"""A durable FIX message store: one append-only file per session.

Theory of operation
-------------------
Every change (next sequence numbers, a sent message kept for resend) is one record appended
with a single ``os.write``. Once ``os.write`` returns the bytes are in the kernel's page cache,
which outlives the process: a SIGKILL right after loses nothing. Surviving power loss needs
``fsync``, which can take milliseconds, so it never runs on the reactor thread: the glue calls
``sync()`` from a worker thread (a group commit covering every record written since the last
one).

Record layout (little-endian)::

    u32 length of (kind + payload) | u32 crc32 of (kind + payload) | u8 kind | payload

Kinds: ``CREATED`` (u64 creation time in ns; always the first record), ``SENDER`` (u64 next
sender sequence number), ``TARGET`` (u64 next target sequence number), ``SENT`` (u64 seq then
the raw message).

Loading replays the records. A record that is cut short or fails its checksum at the end of the
file (a crash in the middle of a write, or zeros a power loss left behind) is a torn tail: it is
dropped and the file truncated to the last good record. A bad record followed by good data is
real corruption and raises ``StoreCorruptError`` rather than silently losing messages.

With a ``WriteBatch`` the records are gathered in memory and written with one ``os.write``
per store when the batch is flushed; the glue flushes it before it writes anything to a socket,
so a message a client can have seen is always in the page cache first (what a SIGKILL
cannot take away), at a fraction of the system calls.

``reset`` starts a new file (written beside the old one, then renamed over it: the rename is
atomic, so a crash leaves either the old state or the new one). Sent messages are not kept in
memory, nor is a dense index of them: a session keeps every message of its trading day, so a
per-message index grows with the day. Sent messages are almost always saved with increasing
sequence numbers (the *stream*); the store remembers where every ``ANCHOR_EVERY``-th of them
lies in the file (16 bytes per 64 messages) and a resend reads forward from the anchor at or
before its first number, parsing record heads, a chunk at a time (``read_sent``), usually
with one ``pread`` per chunk. A message saved with a number not above the stream's
highest (the sender sequence number was set back without a reset: rare, an operator's act) is
indexed exactly, in a dict, and wins over the stream's older copy of that number.

Spent nonces of signed logons live beside it in ``<session>.nonces`` (``NonceFile``), in the
same record format (kind ``NONCE``: u64 time accepted, then the nonce), written at once and
fsynced with the store. A sequence reset does not touch them. The file is rewritten (aside,
then renamed) with only the nonces still inside the replay horizon once it holds more than
twice as many records as that plus 64, so it stays bounded by the window.
"""

from __future__ import annotations

import os
import re
import struct
import threading
import time
import zlib
from array import array
from bisect import bisect_right
from typing import Callable

_HEADER = struct.Struct("<II")
_U64 = struct.Struct("<Q")
_KIND_CREATED = 1
_KIND_SENDER = 2
_KIND_TARGET = 3
_KIND_SENT = 4
_KIND_NONCE = 5
# The largest record the loader believes; a larger length field is garbage.
_MAX_RECORD = 64 * 1024 * 1024
#: one anchor (seq, file offset) per this many stream messages
ANCHOR_EVERY = 64
# bytes of file read per pread while a resend scans forward: about twice a chunk's byte
# limit (the scan starts up to ANCHOR_EVERY - 1 messages early), within these bounds
_MIN_READ_SPAN = 16 * 1024
_MAX_READ_SPAN = 1024 * 1024
# header + kind + u64 seq: where a SENT record's raw message starts
_SENT_PREFIX = _HEADER.size + 1 + _U64.size


class StoreCorruptError(Exception):
    """The store file is damaged somewhere other than its last record."""


class WriteBatch:
    """The stores holding records not yet handed to the kernel (see the module docstring)."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending: set[FileMessageStore] = set()

    def flush(self) -> None:
        """Write every pending store's records (one os.write each). Reactor thread only."""
        pending = self.pending
        while pending:
            pending.pop().flush()


def store_file_name(session_id: str, suffix: str = ".store") -> str:
    """A file name for a session id such as ``FIX.4.4:EXCH->CLIENT1``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", session_id.replace("->", "-")) + suffix


_KIND_VALUE = struct.Struct("<BQ")  # every record starts with its kind and a u64


def _record_head(kind: int, value: int, raw: bytes = b"") -> bytes:
    """A record's bytes up to ``raw`` (header, kind, u64); the record is head + raw."""
    prefix = _KIND_VALUE.pack(kind, value)
    crc = zlib.crc32(raw, zlib.crc32(prefix)) if raw else zlib.crc32(prefix)
    return _HEADER.pack(_KIND_VALUE.size + len(raw), crc) + prefix


class FileMessageStore:
    """MessageStore kept in ``<path_dir>/<session id>.store``."""

    def __init__(
        self,
        path_dir: str,
        session_id: str,
        now_ns: int | None = None,
        batch: WriteBatch | None = None,
    ) -> None:
        os.makedirs(path_dir, exist_ok=True)
        #: None: every record is written at once; else records wait for ``batch.flush()``
        self._batch = batch
        self._buffer = bytearray()
        self.path = os.path.join(path_dir, store_file_name(session_id))
        self._dir = path_dir
        self._lock = threading.Lock()
        #: file descriptors replaced by a reset; closed by the next sync (which may be using them)
        self._retired: list[int] = []
        self._dirty = False
        self._dir_dirty = False
        self._next_sender = 1
        self._next_target = 1
        self._created = 0
        # The stream's anchors: every ANCHOR_EVERY-th message's seq and its record's offset
        self._anchor_seqs = array("q")
        self._anchor_offsets = array("q")
        self._since_anchor = 0
        self._last_seq = 0  # the stream's highest seq (0: none kept)
        #: seq -> (offset of the raw message, its length): messages saved out of order
        self._set_back: dict[int, tuple[int, int]] = {}
        self.dropped_tail_bytes = 0
        self._nonces = NonceFile(path_dir, session_id)
        if os.path.exists(self.path):
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
            self._size = self._load()
            if self._size == 0:  # nothing good survived (e.g. a power loss at creation)
                self._start_new_file(time.time_ns() if now_ns is None else now_ns)
        else:
            self._fd = -1
            self._size = 0
            self._start_new_file(time.time_ns() if now_ns is None else now_ns)

    # --- MessageStore ---

    def next_sender_seq(self) -> int:
        return self._next_sender

    def next_target_seq(self) -> int:
        return self._next_target

    def set_next_sender_seq(self, seq: int) -> None:
        self._next_sender = seq
        self._append(_record_head(_KIND_SENDER, seq))

    def set_next_target_seq(self, seq: int) -> None:
        self._next_target = seq
        self._append(_record_head(_KIND_TARGET, seq))

    def save_sent(self, seq: int, raw: bytes) -> None:
        # The raw message starts after header, kind and the u64 seq.
        head = _record_head(_KIND_SENT, seq, raw)
        offset = self._size + len(head)
        self._append(head, raw)
        self._keep(seq, offset, len(raw))

    def get_sent(self, begin: int, end: int) -> list[tuple[int, bytes]]:
        return self.read_sent(begin, end, 1 << 62, 1 << 62)

    def read_sent(
        self, begin: int, end: int, max_messages: int, max_bytes: int
    ) -> list[tuple[int, bytes]]:
        if end < begin:
            return []
        if self._buffer:
            self.flush()  # the messages are read back from the file
        set_back = self._set_back
        if set_back and any(begin <= seq <= end for seq in set_back):
            # Rare: merge the exact entries in, then apply the limits.
            merged = dict(self._scan_stream(begin, end, 1 << 62, 1 << 62))
            for seq, (offset, length) in set_back.items():
                if begin <= seq <= end:
                    merged[seq] = os.pread(self._fd, length, offset)
            return _first_within(sorted(merged.items()), max_messages, max_bytes)
        return self._scan_stream(begin, end, max_messages, max_bytes)

    @property
    def kept_index_entries(self) -> int:
        """Index entries held in memory (anchors + out-of-order messages): what a trading
        day's messages cost here, for the memory-bound tests."""
        return len(self._anchor_seqs) + len(self._set_back)

    def reset(self, now_ns: int) -> None:
        self._buffer.clear()  # records of the old file, superseded by the reset
        self._next_sender = 1
        self._next_target = 1
        del self._anchor_seqs[:], self._anchor_offsets[:]
        self._since_anchor = 0
        self._last_seq = 0
        self._set_back.clear()
        self._start_new_file(now_ns)

    def creation_time_ns(self) -> int:
        return self._created

    def spend_nonce(self, nonce: bytes, accepted_ns: int, forget_before_ns: int) -> None:
        self._nonces.spend(nonce, accepted_ns, forget_before_ns)

    def spent_nonces(self) -> dict[bytes, int]:
        return dict(self._nonces.nonces)

    # --- durability ---

    @property
    def needs_sync(self) -> bool:
        """True when records were written since the last ``sync``."""
        return self._dirty or self._dir_dirty or self._nonces.needs_sync

    def sync(self) -> None:
        """fsync what was written so far. Blocking: call it from a worker thread.

        Safe to run while the reactor thread keeps appending (those records are covered by
        the next sync) or resets the store (the old descriptor is closed here, not there).
        """
        with self._lock:
            fd = self._fd
            retired, self._retired = self._retired, []
            dir_dirty, self._dir_dirty = self._dir_dirty, False
            self._dirty = False
        if fd >= 0:
            os.fsync(fd)
        if dir_dirty:
            _fsync_dir(self._dir)
        for old in retired:
            os.close(old)
        self._nonces.sync()

    def flush(self) -> None:
        """Hand the gathered records to the kernel (survives a process kill from here on)."""
        if not self._buffer:
            return
        data = bytes(self._buffer)
        self._buffer.clear()
        self._write(data)

    def close(self) -> None:
        """Write, fsync and close the file (at shutdown, after the last change)."""
        self.flush()
        self.sync()
        with self._lock:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
        self._nonces.close()

    # --- internals ---

    def _keep(self, seq: int, offset: int, length: int) -> None:
        """Index a SENT record whose raw message lies at ``offset`` (``length`` bytes)."""
        if seq > self._last_seq:  # the usual case: the stream's next message
            self._last_seq = seq
            if self._since_anchor == 0:
                self._anchor_seqs.append(seq)
                self._anchor_offsets.append(offset - _SENT_PREFIX)
            self._since_anchor = (self._since_anchor + 1) % ANCHOR_EVERY
        else:  # the sender sequence number was set back: this copy wins over the stream's
            self._set_back[seq] = (offset, length)
        if seq >= self._next_sender:
            self._next_sender = seq + 1

    def _scan_stream(
        self, begin: int, end: int, max_messages: int, max_bytes: int
    ) -> list[tuple[int, bytes]]:
        """The stream's messages in ``begin..end`` within the limits of ``read_sent``, read
        forward from the anchor at or before ``begin``. A SENT record whose seq is not above
        the highest seen so far was saved out of order (it is in ``_set_back``): skipped."""
        anchors = self._anchor_seqs
        if not anchors or begin > self._last_seq:
            return []
        i = bisect_right(anchors, begin) - 1
        if i < 0:
            i = 0
        position = self._anchor_offsets[i]
        highest = anchors[i] - 1
        max_messages = max(max_messages, 1)
        fd, size = self._fd, self._size
        span = min(max(2 * max_bytes, _MIN_READ_SPAN), _MAX_READ_SPAN)
        out: list[tuple[int, bytes]] = []
        total = 0
        data = b""
        at = 0  # index in data of the record at ``position``
        while position < size:
            if len(data) - at < _SENT_PREFIX:
                data = os.pread(fd, min(span, size - position), position)
                at = 0
                if len(data) < _HEADER.size:
                    break
            (length, _crc) = _HEADER.unpack_from(data, at)
            record_end = at + _HEADER.size + length
            if record_end > len(data):  # a record longer than what is in hand
                data = os.pread(fd, min(max(span, _HEADER.size + length), size - position),
                                position)
                at = 0
                record_end = _HEADER.size + length
                if record_end > len(data):
                    break  # cut short: never written completely (a torn tail is dropped at load)
            if data[at + _HEADER.size] == _KIND_SENT:
                (seq,) = _U64.unpack_from(data, at + _HEADER.size + 1)
                if seq > highest:
                    highest = seq
                    if seq > end:
                        break
                    if seq >= begin:
                        if out and total >= max_bytes:
                            break
                        raw = data[at + _SENT_PREFIX : record_end]
                        out.append((seq, raw))
                        total += len(raw)
                        if len(out) >= max_messages:
                            break
            position += record_end - at
            at = record_end
        return out

    def _append(self, head: bytes, raw: bytes = b"") -> None:
        # the logical size, buffered bytes included: offsets of SENT records count on it
        self._size += len(head) + len(raw)
        if self._batch is None:
            self._write(head + raw if raw else head)
            return
        buffer = self._buffer
        if not buffer:
            self._batch.pending.add(self)
        buffer += head
        if raw:
            buffer += raw

    def _write(self, data: bytes) -> None:
        written = os.write(self._fd, data)
        if written != len(data):  # a regular file only writes short when the disk is full
            raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
        self._dirty = True

    def _start_new_file(self, now_ns: int) -> None:
        tmp = self.path + ".new"
        fd = os.open(tmp, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o644)
        record = _record_head(_KIND_CREATED, now_ns)
        os.write(fd, record)
        os.rename(tmp, self.path)
        with self._lock:
            if self._fd >= 0:
                self._retired.append(self._fd)
            self._fd = fd
            self._dirty = True
            self._dir_dirty = True
        self._size = len(record)
        self._created = now_ns

    def _load(self) -> int:
        """Replay the file; truncate a torn tail. Returns the size of the good part."""
        size, self.dropped_tail_bytes = _replay(self._fd, self.path, self._apply)
        if self.dropped_tail_bytes:
            self._dirty = True
        return size

    def _apply(self, body: bytes, body_offset: int) -> bool:
        kind = body[0]
        if kind == _KIND_SENT:
            (seq,) = _U64.unpack_from(body, 1)
            raw_offset = body_offset + 1 + _U64.size
            self._keep(seq, raw_offset, len(body) - 1 - _U64.size)
        elif kind == _KIND_TARGET:
            (self._next_target,) = _U64.unpack_from(body, 1)
        elif kind == _KIND_SENDER:
            (self._next_sender,) = _U64.unpack_from(body, 1)
        elif kind == _KIND_CREATED:
            (self._created,) = _U64.unpack_from(body, 1)
        else:
            return False
        return True


def _fsync_dir(path: str) -> None:
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _replay(fd: int, path: str, apply: Callable[[bytes, int], bool]) -> tuple[int, int]:
    """Feed each record's body (and its offset) of a record file to ``apply``, which returns
    False for a kind it does not know. A torn tail is truncated away; a bad record followed by
    a good one raises StoreCorruptError. Returns (size of the good part, bytes dropped)."""
    size = os.fstat(fd).st_size
    data = os.pread(fd, size, 0)
    pos = 0
    header_size = _HEADER.size
    while pos < size:
        bad = None
        if size - pos < header_size:
            bad = "record header cut short"
        else:
            length, crc = _HEADER.unpack_from(data, pos)
            end = pos + header_size + length
            if length == 0 or length > _MAX_RECORD or end > size:
                bad = "record cut short"
            else:
                body = data[pos + header_size : end]
                if zlib.crc32(body) != crc:
                    bad = "checksum mismatch"
                elif not apply(body, pos + header_size):
                    bad = f"unknown record kind {body[0]}"
        if bad is not None:
            if data[pos:].strip(b"\x00") and _valid_record_after(data, pos):
                raise StoreCorruptError(f"{path}: {bad} at offset {pos}")
            # A torn tail: drop it so later appends follow the last good record.
            os.ftruncate(fd, pos)
            return pos, size - pos
        pos = end
    return pos, 0


def _valid_record_after(data: bytes, bad_pos: int) -> bool:
    """True if a checksummed record starts anywhere after a bad one (real corruption)."""
    size = len(data)
    for pos in range(bad_pos + 1, size - _HEADER.size):
        length, crc = _HEADER.unpack_from(data, pos)
        end = pos + _HEADER.size + length
        if 0 < length <= size and end <= size:
            if zlib.crc32(data[pos + _HEADER.size : end]) == crc:
                return True
    return False


class NonceFile:
    """Spent logon nonces of one session: ``<path_dir>/<session id>.nonces`` (module docstring).

    Created at the first nonce. Writes go to the kernel at once (a spent nonce is rare and must
    survive a process kill before the Logon is answered); ``sync`` fsyncs them, from the
    store's group commit in a worker thread.
    """

    #: rewrite once the file holds more than 2 * live + this many records
    SLACK_RECORDS = 64

    def __init__(self, path_dir: str, session_id: str) -> None:
        self.path = os.path.join(path_dir, store_file_name(session_id, ".nonces"))
        self._dir = path_dir
        self._lock = threading.Lock()
        self._retired: list[int] = []
        self._dirty = False
        self._dir_dirty = False
        #: nonce -> time accepted
        self.nonces: dict[bytes, int] = {}
        self._records = 0
        self._fd = -1
        if os.path.exists(self.path):
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
            _, dropped = _replay(self._fd, self.path, self._apply)
            self._dirty = bool(dropped)

    def spend(self, nonce: bytes, accepted_ns: int, forget_before_ns: int) -> None:
        nonces = self.nonces
        for old in [n for n, t in nonces.items() if t < forget_before_ns]:
            del nonces[old]
        nonces[nonce] = accepted_ns
        if self._fd < 0 or self._records >= 2 * len(nonces) + self.SLACK_RECORDS:
            self._rewrite()
            return
        record = _record_head(_KIND_NONCE, accepted_ns, nonce) + nonce
        written = os.write(self._fd, record)
        if written != len(record):
            raise OSError(f"short write to {self.path}: {written} of {len(record)} bytes")
        self._records += 1
        self._dirty = True

    @property
    def needs_sync(self) -> bool:
        return self._dirty or self._dir_dirty

    def sync(self) -> None:
        """fsync what was written (worker thread; safe against a concurrent rewrite)."""
        with self._lock:
            fd = self._fd
            retired, self._retired = self._retired, []
            dir_dirty, self._dir_dirty = self._dir_dirty, False
            self._dirty = False
        if fd >= 0:
            os.fsync(fd)
        if dir_dirty:
            _fsync_dir(self._dir)
        for old in retired:
            os.close(old)

    def close(self) -> None:
        self.sync()
        with self._lock:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def _rewrite(self) -> None:
        data = b"".join(
            _record_head(_KIND_NONCE, accepted, nonce) + nonce
            for nonce, accepted in self.nonces.items()
        )
        tmp = self.path + ".new"
        fd = os.open(tmp, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o644)
        if data and os.write(fd, data) != len(data):
            os.close(fd)
            raise OSError(f"short write to {tmp}")
        os.rename(tmp, self.path)
        with self._lock:
            if self._fd >= 0:
                self._retired.append(self._fd)
            self._fd = fd
            self._dirty = True
            self._dir_dirty = True
        self._records = len(self.nonces)

    def _apply(self, body: bytes, body_offset: int) -> bool:
        if body[0] != _KIND_NONCE or len(body) < 1 + _U64.size:
            return False
        (accepted,) = _U64.unpack_from(body, 1)
        self.nonces[body[1 + _U64.size :]] = accepted
        self._records += 1
        return True


def _first_within(
    messages: list[tuple[int, bytes]], max_messages: int, max_bytes: int
) -> list[tuple[int, bytes]]:
    """The first of ``messages`` within ``read_sent``'s limits (at least one)."""
    out: list[tuple[int, bytes]] = []
    total = 0
    for seq, raw in messages[: max(max_messages, 1)]:
        if out and total >= max_bytes:
            break
        out.append((seq, raw))
        total += len(raw)
    return out

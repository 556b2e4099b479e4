"""Journal records: one per tick, msgpack inside a length + CRC32 frame. Pure (bytes in, out).

Theory of operation
-------------------
A journal segment is a file that starts with the 8 bytes :data:`MAGIC` followed by frames::

    u32 little-endian payload length | u32 little-endian crc32(payload) | payload

Each payload is one tick, a msgpack array ``[first_seq, ts, entries, state_hash]``:

- ``entries``: the tick's commands in sequence order, each ``[code, origin, *fields]`` where
  ``code`` is the command class's number in :data:`COMMAND_CODES` and ``fields`` are the
  command's attrs fields after ``seq`` and ``ts`` (those are implied: every command of a tick
  has the tick's ``ts`` and consecutive seqs from ``first_seq``). Enums go as ints and come
  back as enum members.
- ``origin``: the opaque value the sequencer got with the request (msgpack types only;
  tuples come back as tuples, lists too).
- ``state_hash``: the engine's state hash after the tick, or None. When present, recovery
  checks that replaying the tick gives the same hash.

A crash in the middle of an append leaves a *torn tail*: a last frame cut short, one whose
checksum fails and that ends exactly at the end of the file, or zeros that a power loss left
behind. :func:`scan` stops at the last good frame and reports where it ends so the file can
be truncated there. A bad frame followed by more data is corruption: :class:`JournalCorruptError`
is raised rather than silently dropping records that were acknowledged.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, Callable, NamedTuple

import attr
import msgpack

from engine.commands import (
    AdjustIsolatedMargin,
    AdminAction,
    CancelOrder,
    ConfigureInstrument,
    Deposit,
    KillSwitch,
    MassCancel,
    NewOrder,
    ReplaceOrder,
    SessionStatus,
    SetAccountStp,
    SetIndexPrice,
    SetInstrumentStatus,
    SetLeverage,
    SetMarginMode,
    SetPosition,
    SetTradingDay,
    Tick,
    Withdraw,
)
from engine.enums import (
    CancelReason,
    InstrumentStatus,
    MarginMode,
    OrdType,
    Side,
    StpMode,
    TimeInForce,
    TriggerBy,
)
from engine.sequencer import Batch, field_getter

MAGIC = b"FXJRNL01"
FRAME_HEADER = struct.Struct("<II")
#: the largest payload a reader believes; a larger length field is garbage
MAX_PAYLOAD = 256 * 1024 * 1024

COMMAND_CODES: dict[type, int] = {
    NewOrder: 1,
    CancelOrder: 2,
    ReplaceOrder: 3,
    MassCancel: 4,
    SetInstrumentStatus: 5,
    SetPosition: 6,
    SetAccountStp: 7,
    Tick: 8,
    KillSwitch: 9,
    SessionStatus: 10,
    SetTradingDay: 11,
    ConfigureInstrument: 12,
    AdminAction: 13,
    Deposit: 14,
    Withdraw: 15,
    SetLeverage: 16,
    SetMarginMode: 17,
    AdjustIsolatedMargin: 18,
    SetIndexPrice: 19,
}
_CLASSES: dict[int, type] = {code: cls for cls, code in COMMAND_CODES.items()}


class JournalCorruptError(Exception):
    """The journal is damaged somewhere other than a torn last record, or is not a journal."""


class JournalRecord(NamedTuple):
    """One decoded tick: ``entries`` are (origin, command) with seq and ts restored."""

    first_seq: int
    ts: int
    entries: list
    state_hash: Any

    @property
    def next_seq(self) -> int:
        """The seq after this record's last command."""
        return self.first_seq + len(self.entries)


class ScanResult(NamedTuple):
    """Payloads of the good frames, where the good data ends, and whether a tail was torn."""

    payloads: list
    good_end: int
    torn: bool


_ENUM_FIELDS: dict[type, dict[str, Any]] = {
    NewOrder: {"side": Side, "ord_type": OrdType, "tif": TimeInForce, "stp": StpMode,
               "trigger_by": TriggerBy},
    SetMarginMode: {"mode": MarginMode},
    CancelOrder: {"reason": CancelReason},
    ReplaceOrder: {"trigger_by": TriggerBy},
    MassCancel: {"side": Side, "reason": CancelReason},
    SetInstrumentStatus: {"status": InstrumentStatus},
    SetAccountStp: {"mode": StpMode},
    ConfigureInstrument: {"status": InstrumentStatus},
}


def _enum_fixers(cls: type) -> list[tuple[int, Any]]:
    """(index into the fields after seq/ts, enum class) for each enum-typed field of ``cls``."""
    names = [a.name for a in attr.fields(cls)][2:]
    return [(names.index(n), enum) for n, enum in _ENUM_FIELDS.get(cls, {}).items()]


def _decoder(cls: type) -> Callable[[int, int, tuple], Any]:
    fixers = _enum_fixers(cls)
    nfields = len(attr.fields(cls)) - 2
    # Records written before a field with a default was appended to a command carry fewer
    # fields; they decode with that default (e.g. CancelOrder.reason).
    nrequired = sum(1 for a in attr.fields(cls)[2:] if a.default is attr.NOTHING)
    if not fixers:
        def plain(seq: int, ts: int, fields: tuple) -> Any:
            if not nrequired <= len(fields) <= nfields:
                raise JournalCorruptError(f"{cls.__name__} with {len(fields)} fields")
            return cls(seq, ts, *fields)
        return plain

    # value -> member maps: a dict lookup is ~10x cheaper than calling the enum class, and
    # replay decodes every journaled command
    members = [(i, enum._value2member_map_) for i, enum in fixers]

    def with_enums(seq: int, ts: int, fields: tuple) -> Any:
        n = len(fields)
        if not nrequired <= n <= nfields:
            raise JournalCorruptError(f"{cls.__name__} with {n} fields")
        values = list(fields)
        for i, by_value in members:
            if i < n:
                value = values[i]
                if value is not None:
                    # an out-of-range value was journaled as sent (the engine rejects it)
                    values[i] = by_value.get(value, value)
        return cls(seq, ts, *values)
    return with_enums


_GETTERS = {cls: (code, field_getter(cls)) for cls, code in COMMAND_CODES.items()}
_DECODERS = {code: _decoder(cls) for code, cls in _CLASSES.items()}


def encode_payload(batch: Batch, state_hash: Any = None) -> bytes:
    """The msgpack payload of one tick (see module docstring)."""
    getters = _GETTERS
    entries = []
    for origin, cmd in batch.entries:
        code, getter = getters[type(cmd)]
        entries.append((code, origin, *getter(cmd)))
    return msgpack.packb((batch.first_seq, batch.ts, entries, state_hash))


def encode_entry(origin: Any, command: Any) -> bytes:
    """One command's packed entry (its seq and ts are implied by the record).

    Raises TypeError for a command class the journal does not know or an origin or field
    msgpack cannot encode: callers encode at submit time so a bad request never gets a seq.
    """
    try:
        code, getter = _GETTERS[type(command)]
    except KeyError:
        raise TypeError(f"not a journaled command: {type(command).__name__}") from None
    try:
        return msgpack.packb((code, origin, *getter(command)))
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"cannot journal {type(command).__name__} from {origin!r}: {exc}") from exc


#: the packed entry of the sequencer's Tick command
TICK_ENTRY = msgpack.packb((COMMAND_CODES[Tick], None))
_ARRAY16 = struct.Struct(">BH")
_ARRAY32 = struct.Struct(">BI")


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return _ARRAY16.pack(0xDC, n)
    return _ARRAY32.pack(0xDD, n)


def encode_packed_record(
    first_seq: int, ts: int, entries: list[bytes], state_hash: Any = None
) -> bytes:
    """The framed record of a tick whose entries were packed by :func:`encode_entry`.

    Byte for byte what :func:`encode_record` gives for the same tick: the msgpack array is
    assembled from its parts instead of packing the entries again.
    """
    payload = b"".join((
        b"\x94", msgpack.packb(first_seq), msgpack.packb(ts), _array_header(len(entries)),
        *entries, msgpack.packb(state_hash),
    ))
    return FRAME_HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def frame(payload: bytes) -> bytes:
    """``payload`` in its length + CRC32 frame."""
    return FRAME_HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def encode_record(batch: Batch, state_hash: Any = None) -> bytes:
    """One tick as a framed journal record, ready to append."""
    return frame(encode_payload(batch, state_hash))


def decode_payload(payload: bytes) -> JournalRecord:
    """The tick a payload holds, commands rebuilt with their seq and ts."""
    try:
        first_seq, ts, raw_entries, state_hash = msgpack.unpackb(
            payload, use_list=False, raw=False, strict_map_key=False
        )
        decoders = _DECODERS
        entries = []
        seq = first_seq
        for code, origin, *fields in raw_entries:
            entries.append((origin, decoders[code](seq, ts, fields)))
            seq += 1
    except JournalCorruptError:
        raise
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
        raise JournalCorruptError(f"undecodable journal record: {exc!r}") from exc
    return JournalRecord(first_seq, ts, entries, state_hash)


def scan(data: bytes, start: int = len(MAGIC)) -> ScanResult:
    """Split ``data`` (a segment's bytes after the magic) into frame payloads.

    Stops at a torn tail (see module docstring); raises JournalCorruptError for a bad frame
    that is followed by more data.
    """
    payloads: list[bytes] = []
    pos = start
    end = len(data)
    view = memoryview(data)
    unpack = FRAME_HEADER.unpack_from
    crc32 = zlib.crc32
    while pos < end:
        if end - pos < FRAME_HEADER.size:
            return ScanResult(payloads, pos, True)
        length, crc = unpack(data, pos)
        body_end = pos + FRAME_HEADER.size + length
        if length > MAX_PAYLOAD or length == 0:  # no real payload is empty: zeros are not a frame
            if _all_zero(view[pos:]):
                return ScanResult(payloads, pos, True)
            raise JournalCorruptError(f"bad frame length {length} at offset {pos}")
        if body_end > end:  # cut short by a crash mid-append
            return ScanResult(payloads, pos, True)
        payload = bytes(view[pos + FRAME_HEADER.size:body_end])
        if crc32(payload) != crc:
            if body_end == end or _all_zero(view[pos:]):
                return ScanResult(payloads, pos, True)
            raise JournalCorruptError(f"checksum mismatch at offset {pos} with data after it")
        payloads.append(payload)
        pos = body_end
    return ScanResult(payloads, pos, False)


def _all_zero(view: memoryview) -> bool:
    return view.tobytes().count(0) == len(view)


def decode_segment(data: bytes) -> tuple[list[JournalRecord], int, bool]:
    """(records, length of the good prefix, torn) of a whole segment file's bytes.

    A file shorter than the magic is a segment torn while being created: no records, good
    length 0. A file with a different magic is not a journal.
    """
    if len(data) < len(MAGIC):
        if MAGIC.startswith(data):
            return [], 0, bool(data)
        raise JournalCorruptError("not a journal segment (bad magic)")
    if not data.startswith(MAGIC):
        raise JournalCorruptError("not a journal segment (bad magic)")
    result = scan(data)
    records = [decode_payload(p) for p in result.payloads]
    expected = None
    for rec in records:
        if expected is not None and rec.first_seq != expected:
            raise JournalCorruptError(
                f"sequence gap: record starts at {rec.first_seq}, expected {expected}"
            )
        expected = rec.next_seq
    return records, result.good_end, result.torn

"""Recovery: rebuild the engine and the sequencer's position from a snapshot plus journal records.

Theory of operation
-------------------
A snapshot is taken at a tick boundary. It holds the engine's own snapshot bytes, the
engine's state hash at that moment, the sequencer's position (next seq, last ts, ts of the
last engine Tick) and an opaque ``extra`` value that the owner of the pipeline may store
beside it (the FIX layer's order ownership for orders that are still live, say). File
layout: :data:`SNAPSHOT_MAGIC`, then one length + CRC32 frame (as in :mod:`engine.journal`)
holding a msgpack array.

:class:`Recovery` starts from a snapshot (restored and checked against its hash) or from a
fresh engine, then replays journal records in order. Records wholly before the snapshot are
skipped; a record that does not start exactly at the next expected seq is a gap and raises
:class:`RecoveryError`. A record that carries a state hash is checked after its tick: a
mismatch raises :class:`StateHashMismatch` (the engine is not deterministic, or the journal
was written by a different engine version). :meth:`Recovery.replay` yields every replayed
command with its origin and events, the same :class:`ProcessedCommand` triples the live
pipeline releases, so the FIX layer can rebuild its order ownership and ExecutionReport
data with the code it uses live.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any, Callable, NamedTuple

import attr
import msgpack

from engine.commands import Tick
from engine.journal import JournalCorruptError, JournalRecord, frame, scan
from engine.sequencer import Sequencer, SequencingPolicy
from engine.snapshot import VERSION, version_of

SNAPSHOT_MAGIC = b"FXSNAP01"
_SNAPSHOT_VERSION = 1
#: msgpack ExtType code of an ``extra`` stored already packed (by a forked child): the
#: decoder unpacks it, so readers see the same structure as an extra packed in-line
EXTRA_PACKED = 1


class RecoveryError(Exception):
    """The journal does not continue the snapshot (a gap or an overlap in sequence numbers)."""


class StateHashMismatch(RecoveryError):
    """Replaying the journal did not reproduce a recorded state hash."""


class SnapshotCorruptError(Exception):
    """A snapshot file is damaged or is not a snapshot."""


class ProcessedCommand(NamedTuple):
    """A command as matched: who sent it, the stamped command, and the engine's events."""

    origin: Any
    command: Any
    events: list


@attr.s(slots=True, frozen=True, auto_attribs=True)
class SnapshotState:
    """Everything a restart needs besides the journal tail (see module docstring)."""

    next_seq: int
    last_ts: int
    last_tick_ts: int
    state_hash: Any
    engine: bytes
    extra: Any = None


def encode_snapshot(snap: SnapshotState) -> bytes:
    """A snapshot file's bytes."""
    # The state hash is the SHA-256 of the engine's snapshot bytes: computed here (off the
    # reactor, on the snapshot thread) when the taker left it out.
    state_hash = (snap.state_hash if snap.state_hash is not None
                  else hashlib.sha256(snap.engine).hexdigest())
    payload = msgpack.packb(
        (
            _SNAPSHOT_VERSION, snap.next_seq, snap.last_ts, snap.last_tick_ts,
            state_hash, snap.engine, snap.extra,
        ),
        use_bin_type=True,
    )
    return SNAPSHOT_MAGIC + frame(payload)


def decode_snapshot(data: bytes) -> SnapshotState:
    """The snapshot in a file's bytes; raises SnapshotCorruptError if it is not whole."""
    if not data.startswith(SNAPSHOT_MAGIC):
        raise SnapshotCorruptError("not a snapshot (bad magic)")
    try:
        result = scan(data, len(SNAPSHOT_MAGIC))
    except JournalCorruptError as exc:
        raise SnapshotCorruptError(str(exc)) from exc
    if result.torn or len(result.payloads) != 1:
        raise SnapshotCorruptError("snapshot is truncated or has trailing data")
    try:
        version, next_seq, last_ts, last_tick_ts, state_hash, engine, extra = msgpack.unpackb(
            result.payloads[0], use_list=False, raw=False, strict_map_key=False
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise SnapshotCorruptError(f"undecodable snapshot: {exc!r}") from exc
    if version != _SNAPSHOT_VERSION:
        raise SnapshotCorruptError(f"unknown snapshot version {version}")
    if isinstance(extra, msgpack.ExtType) and extra.code == EXTRA_PACKED:
        try:
            extra = msgpack.unpackb(extra.data, use_list=False, raw=False,
                                    strict_map_key=False)
        except (ValueError, msgpack.UnpackException) as exc:
            raise SnapshotCorruptError(f"snapshot extra does not decode: {exc}") from exc
    return SnapshotState(next_seq, last_ts, last_tick_ts, state_hash, engine, extra)


class Recovery:
    """An engine being rebuilt, and the sequencer position it has reached."""

    def __init__(
        self, engine: Any, *, next_seq: int = 1, last_ts: int = 0, last_tick_ts: int = 0
    ) -> None:
        self.engine = engine
        self.next_seq = next_seq
        self.last_ts = last_ts
        self.last_tick_ts = last_tick_ts
        #: how many recorded state hashes replay has reproduced
        self.verified_hashes = 0
        self.replayed_commands = 0
        self.extra: Any = None

    @classmethod
    def from_snapshot(
        cls, snap: SnapshotState, restore: Callable[[bytes], Any], *, verify: bool = True
    ) -> Recovery:
        """Restore the engine from ``snap`` (``restore``: e.g. ``MatchingEngine.restore``).

        Verified twice: the stored bytes must hash to the stored state hash (integrity), and
        the restored engine must serialise to them again (the restore is exact). The second
        check is skipped for a snapshot of an older state format (an upgrade: the same state
        now serialises differently), which is logged by the caller's ``on_old_format``."""
        if verify and snap.state_hash is not None:
            stored = hashlib.sha256(snap.engine).hexdigest()
            if stored != snap.state_hash:
                raise StateHashMismatch(
                    f"snapshot at seq {snap.next_seq}: its engine bytes hash to {stored!r}, "
                    f"the snapshot says {snap.state_hash!r} (damaged)")
        engine = restore(snap.engine)
        if verify and snap.state_hash is not None and version_of(snap.engine) == VERSION:
            got = engine.state_hash()
            if got != snap.state_hash:
                raise StateHashMismatch(
                    f"restored snapshot at seq {snap.next_seq} hashes to {got!r}, "
                    f"snapshot says {snap.state_hash!r}"
                )
        rec = cls(
            engine, next_seq=snap.next_seq, last_ts=snap.last_ts, last_tick_ts=snap.last_tick_ts
        )
        rec.extra = snap.extra
        return rec

    def replay(self, records: Iterable[JournalRecord]) -> Iterator[ProcessedCommand]:
        """Apply ``records`` in order, yielding each command with its origin and events."""
        engine = self.engine
        for rec in records:
            if rec.next_seq <= self.next_seq:
                continue  # already inside the snapshot
            if rec.first_seq != self.next_seq:
                raise RecoveryError(
                    f"journal record starts at seq {rec.first_seq}, expected {self.next_seq}"
                )
            process = engine.process
            for origin, command in rec.entries:
                yield ProcessedCommand(origin, command, process(command))
            self.next_seq = rec.next_seq
            self.replayed_commands += len(rec.entries)
            if rec.ts > self.last_ts:
                self.last_ts = rec.ts
            if rec.entries and type(rec.entries[0][1]) is Tick:
                self.last_tick_ts = rec.ts
            if rec.state_hash is not None:
                got = engine.state_hash()
                if got != rec.state_hash:
                    raise StateHashMismatch(
                        f"after the tick ending at seq {rec.next_seq - 1} the state hashes to "
                        f"{got!r}, the journal says {rec.state_hash!r}"
                    )
                self.verified_hashes += 1

    def run(self, records: Iterable[JournalRecord]) -> None:
        """Apply ``records`` when nobody needs the replayed events."""
        for _ in self.replay(records):
            pass

    def sequencer(
        self,
        policy: SequencingPolicy = SequencingPolicy.PROTECTIVE_FIRST,
        *,
        idle_tick_ns: int = 1_000_000_000,
        lane_of: Any = None,
    ) -> Sequencer:
        """A sequencer that carries on exactly where the replayed journal stopped."""
        return Sequencer(
            policy,
            next_seq=self.next_seq,
            last_ts=self.last_ts,
            last_tick_ts=self.last_tick_ts,
            idle_tick_ns=idle_tick_ns,
            lane_of=lane_of,
        )

"""Snapshot plus journal replay rebuilds the identical engine, sequencer position and events."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import MatchingEngine, demo_instruments
from engine.commands import CancelOrder, MassCancel, NewOrder, ReplaceOrder, SetPosition
from engine.enums import OrdType, Side, TimeInForce
from engine.journal import MAGIC, decode_payload, decode_segment, encode_record
from engine.recovery import (
    ProcessedCommand,
    Recovery,
    RecoveryError,
    SnapshotCorruptError,
    SnapshotState,
    StateHashMismatch,
    decode_snapshot,
    encode_snapshot,
)
from engine.sequencer import Sequencer

SYMBOLS = ("BTC-PERP", "ETH-PERP")
REFS = {"BTC-PERP": 600_000, "ETH-PERP": 300_000}
T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def random_requests(rng: random.Random, count: int, max_id: int) -> list[tuple[Any, Any]]:
    """``count`` (origin, request) pairs: orders of every kind, cancels, replaces, admin."""
    out: list[tuple[Any, Any]] = []
    for _ in range(count):
        account = rng.choice(("A", "B", "C"))
        origin = (f"FIX.4.4:EX->{account}", rng.randrange(1_000))
        symbol = rng.choice(SYMBOLS)
        ref = REFS[symbol]
        kind = rng.random()
        if kind < 0.6:
            tif = rng.choice((TimeInForce.GTC, TimeInForce.GTC, TimeInForce.IOC, TimeInForce.GTD,
                              TimeInForce.DAY))
            ord_type = OrdType.MARKET if rng.random() < 0.1 else OrdType.LIMIT
            req: Any = NewOrder(
                0, 0, account, symbol, rng.choice((Side.BUY, Side.SELL)), rng.randint(1, 20),
                0 if ord_type is OrdType.MARKET else ref + rng.randint(-300, 300),
                ord_type, TimeInForce.IOC if ord_type is OrdType.MARKET else tif,
                f"c{rng.randrange(10**6)}",
                expire_ts=T0 + rng.randint(1, 40) * MS if tif is TimeInForce.GTD else 0,
                reduce_only=rng.random() < 0.1,
            )
        elif kind < 0.8:
            req = CancelOrder(0, 0, account, rng.randint(1, max_id), f"x{rng.randrange(10**6)}")
        elif kind < 0.93:
            req = ReplaceOrder(0, 0, account, rng.randint(1, max_id), rng.randint(1, 20),
                               ref + rng.randint(-300, 300), f"r{rng.randrange(10**6)}")
        elif kind < 0.97:
            req = SetPosition(0, 0, account, symbol, rng.randint(-10, 10))
        else:
            req = MassCancel(0, 0, account=account, symbol=symbol, cl_ord_id="m")
        out.append((origin, req))
    return out


class LiveRun:
    """Sequencer + engine as the pipeline drives them, keeping each tick's journal record."""

    def __init__(self, seed: int, *, hash_every: int = 0) -> None:
        self.rng = random.Random(seed)
        self.seq = Sequencer(idle_tick_ns=5 * MS)
        self.engine = MatchingEngine(demo_instruments())
        self.hash_every = hash_every
        self.records: list[bytes] = []  # framed
        self.processed: list[ProcessedCommand] = []
        self.hashes: list[str] = []  # state hash after each tick
        self.now = T0

    def tick(self, n_requests: int) -> None:
        for origin, req in random_requests(self.rng, n_requests, self.seq.next_seq + n_requests):
            self.seq.submit(origin, req)
        self.now += self.rng.choice((0, MS, 3 * MS, -MS))  # the clock may step back
        batch = self.seq.next_batch(self.now)
        if batch is None:
            return
        for origin, cmd in batch.entries:
            self.processed.append(ProcessedCommand(origin, cmd, self.engine.process(cmd)))
        h = self.engine.state_hash()
        self.hashes.append(h)
        every = self.hash_every
        self.records.append(
            encode_record(batch, h if every and len(self.records) % every == 0 else None)
        )

    def run(self, ticks: int) -> LiveRun:
        for _ in range(ticks):
            self.tick(self.rng.randint(0, 12))
        return self

    def snapshot(self) -> SnapshotState:
        next_seq, last_ts, last_tick_ts = self.seq.position()
        return SnapshotState(next_seq, last_ts, last_tick_ts, self.engine.state_hash(),
                             self.engine.snapshot(), {"owners": [1, 2]})


def records_of(framed: list[bytes]) -> list:
    records, _, torn = decode_segment(MAGIC + b"".join(framed))
    assert not torn
    return records


def test_replay_from_empty_reproduces_state_events_and_position() -> None:
    """Replaying every record rebuilds the same hash, the same events and the sequencer."""
    live = LiveRun(1).run(60)
    rec = Recovery(MatchingEngine(demo_instruments()))
    replayed = list(rec.replay(records_of(live.records)))
    assert replayed == live.processed
    assert rec.engine.state_hash() == live.engine.state_hash()
    assert (rec.next_seq, rec.last_ts, rec.last_tick_ts) == live.seq.position()
    assert any(type(e).__name__ == "Trade" for p in replayed for e in p.events)


def test_snapshot_plus_tail_equals_full_replay() -> None:
    """Restoring a mid-run snapshot and replaying the tail gives the final state and position."""
    live = LiveRun(2).run(30)
    snap = decode_snapshot(encode_snapshot(live.snapshot()))
    done = len(live.records)
    live.run(30)
    rec = Recovery.from_snapshot(snap, MatchingEngine.restore)
    assert rec.extra == {"owners": (1, 2)}
    tail = list(rec.replay(records_of(live.records)))  # records before the snapshot are skipped
    assert tail == live.processed[len(live.processed) - len(tail):]
    assert tail[0].command.seq == snap.next_seq
    assert len(live.records) > done
    assert rec.engine.state_hash() == live.engine.state_hash()
    resumed = rec.sequencer(idle_tick_ns=5 * MS)
    assert resumed.position() == live.seq.position()


def test_recorded_state_hashes_are_verified() -> None:
    """Every state hash carried by the journal is checked during replay."""
    live = LiveRun(3, hash_every=4).run(40)
    rec = Recovery(MatchingEngine(demo_instruments()))
    rec.run(records_of(live.records))
    assert rec.verified_hashes == (len(live.records) + 3) // 4


def test_wrong_recorded_hash_raises() -> None:
    """A journal whose recorded hash differs from the replayed state is refused."""
    live = LiveRun(4).run(5)
    first = decode_payload(live.records[0][8:])
    bad = first._replace(state_hash="0" * 64)
    with pytest.raises(StateHashMismatch):
        Recovery(MatchingEngine(demo_instruments())).run([bad])


def test_snapshot_with_wrong_hash_raises() -> None:
    """A snapshot whose engine bytes do not hash to its recorded hash is refused."""
    snap = LiveRun(5).run(10).snapshot()
    bad = SnapshotState(snap.next_seq, snap.last_ts, snap.last_tick_ts, "f" * 64, snap.engine)
    with pytest.raises(StateHashMismatch):
        Recovery.from_snapshot(bad, MatchingEngine.restore)


def test_gap_after_snapshot_raises() -> None:
    """A journal that does not continue at the snapshot's next seq is refused."""
    live = LiveRun(6).run(20)
    snap = live.snapshot()
    live.run(10)
    records = records_of(live.records)
    tail = [r for r in records if r.first_seq >= snap.next_seq]
    rec = Recovery.from_snapshot(snap, MatchingEngine.restore)
    with pytest.raises(RecoveryError, match="expected"):
        rec.run(tail[1:])


def test_damaged_snapshot_is_refused() -> None:
    """A truncated or bit-flipped snapshot file raises SnapshotCorruptError."""
    data = encode_snapshot(LiveRun(7).run(5).snapshot())
    with pytest.raises(SnapshotCorruptError):
        decode_snapshot(data[:-3])
    flipped = data[:20] + bytes([data[20] ^ 1]) + data[21:]
    with pytest.raises(SnapshotCorruptError):
        decode_snapshot(flipped)
    with pytest.raises(SnapshotCorruptError):
        decode_snapshot(b"garbage!" + data[8:])


@settings(derandomize=True, max_examples=25, deadline=None)
@given(st.data())
def test_crash_mid_write_recovers_state_after_last_complete_tick(data: st.DataObject) -> None:
    """A journal cut at any byte replays to the state hash after its last complete tick."""
    live = LiveRun(8).run(25)
    stream = MAGIC + b"".join(live.records)
    ends = []
    pos = len(MAGIC)
    for r in live.records:
        pos += len(r)
        ends.append(pos)
    cut = data.draw(st.integers(len(MAGIC), len(stream)))
    records, _, _ = decode_segment(stream[:cut])
    complete = sum(1 for e in ends if e <= cut)
    assert len(records) == complete
    rec = Recovery(MatchingEngine(demo_instruments()))
    replayed = list(rec.replay(records))
    expected_hash = live.hashes[complete - 1] if complete else (
        MatchingEngine(demo_instruments()).state_hash()
    )
    assert rec.engine.state_hash() == expected_hash
    assert replayed == live.processed[: len(replayed)]


def test_payload_size_per_command_is_modest() -> None:
    """A realistic tick costs on average under 80 bytes per command in the journal."""
    live = LiveRun(9).run(40)
    commands = sum(len(decode_payload(r[8:]).entries) for r in live.records)
    assert sum(len(r) for r in live.records) / commands < 80

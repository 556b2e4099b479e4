"""AdminAction (an operator's audit record) is sequenced, journaled and replayed, and changes
nothing in the engine."""

from __future__ import annotations

from engine import MatchingEngine, demo_instruments
from engine.commands import AdminAction, SetInstrumentStatus
from engine.enums import InstrumentStatus
from engine.journal import (
    COMMAND_CODES,
    MAGIC,
    decode_payload,
    decode_segment,
    encode_entry,
    encode_packed_record,
    encode_record,
)
from engine.recovery import Recovery
from engine.sequencer import COMMAND_CLASSES, Sequencer

ORIGIN = ("", "A", "alice", "logout")


def test_admin_action_round_trips_the_journal() -> None:
    """Sequenced with its origin, packed, framed and decoded: the same command comes back."""
    seq = Sequencer()
    seq.submit(ORIGIN, AdminAction(0, 0, "alice", "logout", '{"session":"S"}'))
    batch = seq.next_batch(1_000)
    assert batch is not None
    (_, tick), (origin, cmd) = batch.entries
    assert origin == ORIGIN
    assert cmd == AdminAction(2, 1_000, "alice", "logout", '{"session":"S"}')
    packed = encode_record(batch, "h")
    rec = decode_payload(packed[8:])
    assert rec.entries == [(None, tick), (ORIGIN, cmd)] and rec.state_hash == "h"
    # the pipeline's path: entries packed at submit time, framed per tick
    fast = encode_packed_record(batch.first_seq, batch.ts,
                                [encode_entry(None, tick), encode_entry(ORIGIN, cmd)], "h")
    assert fast == packed
    records, _, torn = decode_segment(MAGIC + packed)
    assert not torn and records[0].entries[1] == (ORIGIN, cmd)
    assert AdminAction in COMMAND_CODES and AdminAction in COMMAND_CLASSES
    assert len(set(COMMAND_CODES.values())) == len(COMMAND_CODES)


def test_admin_action_changes_no_state_and_replays() -> None:
    """No events and an unchanged state hash; a replay of a journal holding it reproduces
    the live engine's hash."""
    live = MatchingEngine(demo_instruments())
    before = live.state_hash()
    assert live.process(AdminAction(1, 5, "bob", "snapshot")) == []
    assert live.state_hash() == before
    seq = Sequencer()
    seq.submit(ORIGIN, AdminAction(0, 0, "alice", "set-seq", "{}"))
    seq.submit(("", "A", "alice", "instrument-status"),
               SetInstrumentStatus(0, 0, "BTC-PERP", InstrumentStatus.HALTED))
    batch = seq.next_batch(2_000)
    assert batch is not None
    engine = MatchingEngine(demo_instruments())
    for _, command in batch.entries:
        engine.process(command)
    record = decode_payload(encode_record(batch, engine.state_hash())[8:])
    replay = Recovery(MatchingEngine(demo_instruments()))
    replayed = list(replay.replay([record]))
    assert replay.verified_hashes == 1
    assert [p.origin for p in replayed][1] == ORIGIN
    assert replay.engine.status("BTC-PERP") is InstrumentStatus.HALTED

"""Journal records round-trip every command exactly, and torn tails stop at the last good record."""

from __future__ import annotations

from typing import Any

import attr
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.commands import (
    CancelOrder,
    MassCancel,
    NewOrder,
    ReplaceOrder,
    SetAccountStp,
    SetInstrumentStatus,
    SetPosition,
    Tick,
)
from engine.enums import InstrumentStatus, OrdType, Side, StpMode, TimeInForce
from engine.journal import (
    MAGIC,
    TICK_ENTRY,
    JournalCorruptError,
    decode_payload,
    decode_segment,
    encode_entry,
    encode_packed_record,
    encode_payload,
    encode_record,
    frame,
)
from engine.sequencer import Batch

BTC = "BTC-PERP"


def one_of_each(seq: int, ts: int) -> Batch:
    """A batch holding one command of every class, enums and Nones included."""
    cmds = [
        Tick(seq, ts),
        NewOrder(seq + 1, ts, "A", BTC, Side.SELL, 3, 5, OrdType.STOP_LIMIT, TimeInForce.GTD,
                 "x", 7, 99, True, True, 1, 2, StpMode.CANCEL_OLDEST),
        NewOrder(seq + 2, ts, "B", BTC, Side.BUY, 1, 600_000),
        CancelOrder(seq + 3, ts, "A", 9, "y"),
        ReplaceOrder(seq + 4, ts, "A", 9, 4, 5, "z", 6),
        MassCancel(seq + 5, ts, "A", BTC, Side.BUY, "m"),
        MassCancel(seq + 6, ts),
        SetInstrumentStatus(seq + 7, ts, BTC, InstrumentStatus.HALTED),
        SetPosition(seq + 8, ts, "A", BTC, -4),
        SetAccountStp(seq + 9, ts, "A", StpMode.CANCEL_BOTH),
    ]
    origins = [None, ("FIX.4.4:EX->C1", 17), "s2", ("s3", None), 4, b"raw", "x", "y", "z", "w"]
    return Batch(seq, ts, list(zip(origins, cmds)))


def test_every_command_class_round_trips_with_enum_members() -> None:
    """Decoding gives equal commands whose enum fields are enum members again."""
    batch = one_of_each(10, 123_456_789)
    rec = decode_payload(encode_payload(batch, "abc"))
    assert rec.first_seq == 10 and rec.ts == 123_456_789 and rec.state_hash == "abc"
    assert rec.entries == batch.entries
    assert rec.next_seq == 20
    new = rec.entries[1][1]
    assert type(new.side) is Side and type(new.ord_type) is OrdType
    assert type(new.tif) is TimeInForce and type(new.stp) is StpMode
    assert rec.entries[2][1].stp is None
    assert type(rec.entries[7][1].status) is InstrumentStatus


def test_out_of_range_enum_value_is_kept_as_sent() -> None:
    """A bad side the engine will reject is journaled and replayed as the same int."""
    bad_side: Any = 7
    batch = Batch(1, 1, [("s", NewOrder(1, 1, "A", BTC, bad_side, 1, 1))])
    rec = decode_payload(encode_payload(batch))
    assert rec.entries[0][1].side == 7


def test_commands_are_compact() -> None:
    """A plain limit order costs well under 64 bytes in the journal."""
    one = Batch(1, 1_700_000_000_000_000_000,
                [("s1", NewOrder(1, 1_700_000_000_000_000_000, "ACC1", BTC, Side.BUY, 5, 600_000,
                                 cl_ord_id="ord-000001"))])
    many = Batch(1, one.ts, one.entries * 2)
    per_command = len(encode_payload(many)) - len(encode_payload(one))
    assert per_command < 64


def segment(batches: list[Batch]) -> tuple[bytes, list[int]]:
    """A segment's bytes and the offset where each record ends."""
    data = bytearray(MAGIC)
    ends = []
    for b in batches:
        data += encode_record(b)
        ends.append(len(data))
    return bytes(data), ends


def batches(n: int) -> list[Batch]:
    out = []
    seq = 1
    for i in range(n):
        b = one_of_each(seq, 1_000 + i)
        out.append(b)
        seq += len(b.entries)
    return out


def test_whole_segment_decodes_untorn() -> None:
    """An intact segment gives all its records and no torn tail."""
    data, ends = segment(batches(3))
    records, good, torn = decode_segment(data)
    assert len(records) == 3 and good == ends[-1] and not torn


@settings(derandomize=True, max_examples=60, deadline=None)
@given(st.data())
def test_truncation_anywhere_stops_at_last_complete_record(data: st.DataObject) -> None:
    """Cutting a segment at any byte gives exactly the records that were complete."""
    all_batches = batches(4)
    raw, ends = segment(all_batches)
    cut = data.draw(st.integers(0, len(raw)))
    records, good, torn = decode_segment(raw[:cut])
    complete = [e for e in ends if e <= cut]
    assert len(records) == len(complete)
    assert [r.entries for r in records] == [b.entries for b in all_batches[: len(complete)]]
    expected_good = complete[-1] if complete else (len(MAGIC) if cut >= len(MAGIC) else 0)
    assert good == expected_good
    assert torn == (cut != expected_good)


def test_zero_filled_tail_is_torn() -> None:
    """Zeros after the last record (left by a power loss) are a torn tail, not corruption."""
    raw, ends = segment(batches(2))
    records, good, torn = decode_segment(raw + bytes(100))
    assert len(records) == 2 and good == ends[-1] and torn


def test_bad_last_record_checksum_is_torn() -> None:
    """A last record whose bytes are damaged is dropped as torn."""
    raw, ends = segment(batches(2))
    damaged = raw[:-1] + bytes([raw[-1] ^ 0xFF])
    records, good, torn = decode_segment(damaged)
    assert len(records) == 1 and good == ends[0] and torn


def test_bad_record_followed_by_data_is_corruption() -> None:
    """Damage before the last record raises instead of silently dropping acknowledged ticks."""
    raw, ends = segment(batches(3))
    pos = ends[0] + 12
    damaged = raw[:pos] + bytes([raw[pos] ^ 0xFF]) + raw[pos + 1:]
    with pytest.raises(JournalCorruptError):
        decode_segment(damaged)


def test_bad_magic_is_not_a_journal() -> None:
    """A file that does not start with the magic is refused."""
    with pytest.raises(JournalCorruptError):
        decode_segment(b"NOTAJRNL" + frame(b"\x90"))
    with pytest.raises(JournalCorruptError):
        decode_segment(b"XY")


def test_sequence_gap_between_records_is_corruption() -> None:
    """Records that do not continue each other's seqs are refused."""
    raw = MAGIC + encode_record(one_of_each(1, 5)) + encode_record(one_of_each(50, 6))
    with pytest.raises(JournalCorruptError, match="gap"):
        decode_segment(raw)


def test_undecodable_payload_is_corruption() -> None:
    """A frame with a valid checksum but a payload that is not a tick raises."""
    with pytest.raises(JournalCorruptError):
        decode_payload(b"\x93\x01\x02\x03")
    with pytest.raises(JournalCorruptError):
        decode_payload(encode_payload(Batch(1, 1, []))[:-1] + b"\xc1")


@pytest.mark.parametrize("count", [0, 1, 15, 16, 300, 70_000])
def test_packed_record_is_byte_identical_to_encode_record(count: int) -> None:
    """Assembling a record from pre-packed entries gives exactly encode_record's bytes."""
    base = one_of_each(1, 77)
    entries = (base.entries * (count // len(base.entries) + 1))[:count]
    cmds = [(o, type(c)(1 + i, 77, *list(attr.astuple(c, recurse=False))[2:]))
            for i, (o, c) in enumerate(entries)]
    batch = Batch(1, 77, cmds)
    packed = [TICK_ENTRY if type(c) is Tick else encode_entry(o, c) for o, c in cmds]
    assert encode_packed_record(1, 77, packed, "h") == encode_record(batch, "h")


def test_unencodable_origin_or_class_is_refused_at_entry() -> None:
    """encode_entry raises TypeError for origins msgpack cannot hold and unknown classes."""
    with pytest.raises(TypeError):
        encode_entry(object(), CancelOrder(0, 0, "A", 1))
    with pytest.raises(TypeError):
        encode_entry("s", ("not", "a", "command"))


def test_risk_commands_round_trip() -> None:
    """Collateral, leverage, margin mode, isolated margin, index and risk-parameter commands
    decode to equal commands (enums as members, tiers as tuples)."""
    from engine.commands import (
        AdjustIsolatedMargin,
        ConfigureInstrument,
        Deposit,
        SetIndexPrice,
        SetLeverage,
        SetMarginMode,
        Withdraw,
    )
    from engine.enums import MarginMode, TriggerBy

    ts = 5
    cmds = [
        Deposit(1, ts, "A", "USDT", 10**15, "wire-1"),
        Withdraw(2, ts, "A", "USDT", 7),
        SetLeverage(3, ts, "A", BTC, 25, "L1"),
        SetMarginMode(4, ts, "A", BTC, MarginMode.ISOLATED, "M1"),
        AdjustIsolatedMargin(5, ts, "A", BTC, -3, "I1"),
        SetIndexPrice(6, ts, BTC, 600_123),
        NewOrder(7, ts, "A", BTC, Side.SELL, 1, 0, OrdType.TAKE_PROFIT, stop_price=5,
                 trigger_by=TriggerBy.LAST),
        ConfigureInstrument(8, ts, BTC, "0.1", "0.001", max_leverage=100,
                            risk_tiers=[[50, 5_000, 100], [100, 10_000, 50]]),
    ]
    batch = Batch(1, ts, [(None, c) for c in cmds])
    rec = decode_payload(encode_payload(batch))
    assert rec.entries == batch.entries
    assert type(rec.entries[3][1].mode) is MarginMode
    assert type(rec.entries[6][1].trigger_by) is TriggerBy
    assert rec.entries[7][1].risk_tiers == ((50, 5_000, 100), (100, 10_000, 50))

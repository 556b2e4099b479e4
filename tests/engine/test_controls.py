"""Kill switch, session status and the trading-day boundary: journaled engine commands."""

from __future__ import annotations

from typing import Any

from engine import (
    CancelReason,
    MatchingEngine,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderRejected,
    RejectReason,
    RequestRejected,
    TimeInForce,
    demo_instruments,
)
from engine.commands import CancelOrder, KillSwitch, MassCancel, SessionStatus, SetTradingDay
from engine.events import KillSwitchChanged
from engine.journal import decode_payload, encode_payload
from engine.sequencer import Batch
from tests.engine.conftest import BTC, BUY, REF, SELL, Driver

DAY = 86_400 * 1_000_000_000
HOUR = 3_600 * 1_000_000_000


def _of(events: list, cls: type) -> list:
    return [e for e in events if type(e) is cls]


def test_kill_switch_cancels_and_blocks_the_firms_accounts(d: Driver) -> None:
    """On: every live order of the accounts is canceled (reason KILL_SWITCH), later orders and
    replaces are rejected; other firms trade on; off: trading resumes."""
    d.new("A1", BUY, 1, REF - 10)
    a1 = d.seq
    d.new("A2", SELL, 1, REF + 10)
    d.new("B1", BUY, 1, REF - 20)
    d.seq += 1
    ev = d.run(KillSwitch(d.seq, d.ts, "ACME", ("A1", "A2"), True))
    canceled = _of(ev, OrderCanceled)
    assert [e.account for e in canceled] == ["A1", "A2"]
    assert all(e.reason is CancelReason.KILL_SWITCH for e in canceled)
    (changed,) = _of(ev, KillSwitchChanged)
    assert changed.active and changed.canceled == 2 and changed.accounts == ("A1", "A2")
    (rej,) = _of(d.new("A1", BUY, 1, REF - 10), OrderRejected)
    assert rej.reason is RejectReason.KILL_SWITCH_ACTIVE
    assert _of(d.new("B1", BUY, 1, REF - 30), OrderAccepted)
    assert a1 not in d.eng.orders
    d.seq += 1
    ev = d.run(KillSwitch(d.seq, d.ts, "ACME", ("A1", "A2"), False))
    assert _of(ev, KillSwitchChanged)[0].active is False
    assert _of(d.new("A1", BUY, 1, REF - 10), OrderAccepted)


def test_kill_switch_blocks_replace(d: Driver) -> None:
    """A replace of an order that somehow survived (a stop placed after) is rejected too."""
    d.seq += 1
    d.run(KillSwitch(d.seq, d.ts, "ACME", ("A1",), True))
    from engine import ReplaceOrder
    d.seq += 1
    ev = d.run(ReplaceOrder(d.seq, d.ts, "A1", 999, 1, REF))
    assert _of(ev, RequestRejected)[0].reason is RejectReason.UNKNOWN_ORDER


def test_cancel_reasons_are_carried(d: Driver) -> None:
    """CancelOrder and MassCancel carry who canceled (cancel-on-disconnect, operator)."""
    d.new("A1", BUY, 1, REF - 10)
    oid = d.seq
    (c,) = _of(d.cancel("A1", oid, reason=CancelReason.CANCEL_ON_DISCONNECT),
               OrderCanceled)
    assert c.reason is CancelReason.CANCEL_ON_DISCONNECT
    d.new("A1", BUY, 1, REF - 10)
    (m,) = _of(d.mass_cancel(account="A1", reason=CancelReason.OPERATOR), OrderCanceled)
    assert m.reason is CancelReason.OPERATOR


def test_state_survives_snapshot_and_hash_changes(d: Driver) -> None:
    """Kill switches and session states are in the snapshot and the state hash."""
    before = d.eng.state_hash()
    d.seq += 1
    d.run(SessionStatus(d.seq, d.ts, "S1", True, True))
    d.seq += 1
    d.run(KillSwitch(d.seq, d.ts, "ACME", ("A1",), True))
    assert d.eng.state_hash() != before
    restored = MatchingEngine.restore(d.eng.snapshot())
    assert restored.state_hash() == d.eng.state_hash()
    assert restored.sessions == {"S1": (True, True)}
    assert restored.killed == {"ACME": ("A1",)} and restored.blocked == {"A1"}


def test_day_orders_expire_at_the_configured_boundary() -> None:
    """With the trading day ending at 22:00 UTC, a DAY order entered at 21:00 expires at
    22:00 the same day, one entered at 23:00 at 22:00 the next day."""
    eng = MatchingEngine(demo_instruments())
    midnight = 20_000 * DAY
    eng.process(SetTradingDay(1, midnight, 22 * HOUR))
    eng.process(NewOrder(2, midnight + 21 * HOUR, "A1", BTC, BUY, 1, REF - 10,
                         tif=TimeInForce.DAY))
    eng.process(NewOrder(3, midnight + 23 * HOUR, "A1", BTC, BUY, 1, REF - 20,
                         tif=TimeInForce.DAY))
    from engine import Tick
    assert not eng.process(Tick(4, midnight + 22 * HOUR - 1))
    (first,) = _of(eng.process(Tick(5, midnight + 22 * HOUR)), OrderExpired)
    assert first.order_id == 2
    assert not _of(eng.process(Tick(6, midnight + DAY + 22 * HOUR - 1)), OrderExpired)
    (second,) = _of(eng.process(Tick(7, midnight + DAY + 22 * HOUR)), OrderExpired)
    assert second.order_id == 3


def test_trading_day_offset_is_validated() -> None:
    """An offset outside one day is rejected and changes nothing."""
    eng = MatchingEngine(demo_instruments())
    (rej,) = eng.process(SetTradingDay(1, 1, DAY))
    assert rej.reason is RejectReason.INVALID_DAY_OFFSET and eng.day_offset_ns == 0


def test_journal_roundtrip_and_records_without_the_newer_fields() -> None:
    """The new commands journal and decode; a CancelOrder/MassCancel written before
    ``reason`` existed decodes with the default reason."""
    import msgpack

    cmds: list[Any] = [KillSwitch(1, 5, "ACME", ("A1", "A2"), True),
                       SessionStatus(2, 5, "S", False, True), SetTradingDay(3, 5, HOUR),
                       CancelOrder(4, 5, "A1", 9, "x", CancelReason.OPERATOR)]
    record = decode_payload(encode_payload(Batch(1, 5, [(None, c) for c in cmds])))
    assert [c for _, c in record.entries] == cmds
    old = msgpack.packb((7, 5, [(2, None, "A1", 9, "x"), (4, None, "A1", None, None, "q")],
                         None))
    entries = decode_payload(old).entries
    assert entries[0][1] == CancelOrder(7, 5, "A1", 9, "x", CancelReason.USER)
    assert entries[1][1] == MassCancel(8, 5, "A1", None, None, "q", CancelReason.MASS_CANCEL)

"""Every reject reason: each broken rule is rejected with the reason that names it."""

from __future__ import annotations

from typing import Any

import attr
import pytest

from engine import (
    CancelOrder,
    InstrumentStatus,
    MassCancel,
    MatchingEngine,
    NewOrder,
    OrderRejected,
    OrdType,
    RejectReason,
    ReplaceOrder,
    RequestKind,
    RequestRejected,
    SetAccountStp,
    SetInstrumentStatus,
    SetPosition,
    TimeInForce,
    demo_instruments,
)
from engine.instruments import OffGridError
from tests.engine.conftest import BTC, BUY, REF, SELL, Driver, of

R = RejectReason
BAD: Any = 77  # not a member of any enum

NEW_ORDER_CASES = [
    (R.UNKNOWN_SYMBOL, dict(symbol="DOGE-PERP")),
    (R.INVALID_SIDE, dict(side=7)),
    (R.INVALID_ORDER_TYPE, dict(ord_type=99)),
    (R.INVALID_TIF, dict(tif=42)),
    (R.INVALID_STP_MODE, dict(stp=9)),
    (R.INVALID_QTY, dict(qty=0)),
    (R.QTY_BELOW_MIN, dict(qty=1, _min_qty=2)),
    (R.QTY_ABOVE_MAX, dict(qty=1_000_001)),
    (R.INVALID_PRICE, dict(price=0)),
    (R.PRICE_OUTSIDE_BAND, dict(price=REF * 2)),
    (R.INVALID_STOP_PRICE, dict(ord_type=OrdType.STOP_LIMIT, stop_price=0)),
    (R.INVALID_EXPIRE_TIME, dict(tif=TimeInForce.GTD, expire_ts=1)),
    (R.POST_ONLY_INVALID, dict(post_only=True, tif=TimeInForce.IOC)),
    (R.INVALID_DISPLAY_QTY, dict(display_qty=50)),
    (R.INVALID_MIN_QTY, dict(min_qty=50)),
    (R.REDUCE_ONLY_WOULD_INCREASE, dict(reduce_only=True)),
]


@pytest.mark.parametrize("reason,kw", NEW_ORDER_CASES, ids=[c[0].name for c in NEW_ORDER_CASES])
def test_new_order_reject_reasons(book_factory, reason, kw):
    """Each invalid NewOrder is rejected with exactly the reason naming the broken rule."""
    kw = dict(kw)
    d = Driver(book_factory)
    if "_min_qty" in kw:
        min_qty = kw.pop("_min_qty")
        inst = [attr.evolve(i, min_qty=min_qty) for i in demo_instruments()]
        d.eng = MatchingEngine(inst, book_factory=book_factory)
    side = kw.pop("side", BUY)
    qty = kw.pop("qty", 10)
    price = kw.pop("price", REF)
    ev = d.new("a", side, qty, price, **kw)
    rej = of(ev, OrderRejected)
    assert len(rej) == 1 and len(ev) == 1
    assert rej[0].reason == reason
    assert rej[0].order_id == d.seq and rej[0].cl_ord_id == f"c{d.seq}"
    assert d.eng.orders == {}


def test_duplicate_order_id_rejected(d):
    """A NewOrder reusing a live order id (a replayed seq) is rejected."""
    d.new("a", BUY, 1, REF)
    ev = d.run(NewOrder(1, d.ts, "a", BTC, BUY, 1, REF))
    assert of(ev, OrderRejected)[0].reason == R.DUPLICATE_ORDER_ID


def test_post_only_would_take_and_status_rejects(d):
    """Post-only crossing, halted, cancel-only and post-only status each reject by name."""
    d.new("m", SELL, 1, REF)
    assert of(d.new("a", BUY, 1, REF, post_only=True), OrderRejected)[0].reason == (
        R.POST_ONLY_WOULD_TAKE)
    for status, reason in [(InstrumentStatus.HALTED, R.INSTRUMENT_HALTED),
                           (InstrumentStatus.CANCEL_ONLY, R.INSTRUMENT_CANCEL_ONLY),
                           (InstrumentStatus.POST_ONLY, R.INSTRUMENT_POST_ONLY)]:
        d.status(status)
        assert of(d.new("a", BUY, 1, REF), OrderRejected)[0].reason == reason


def test_market_order_without_reference_price_rejected(book_factory):
    """With no last trade, no mid and no configured reference, a market order is rejected."""
    inst = [attr.evolve(i, reference_price=0) for i in demo_instruments()]
    eng = MatchingEngine(inst, book_factory=book_factory)
    ev = eng.process(NewOrder(1, 1, "a", BTC, BUY, 1, 0, ord_type=OrdType.MARKET))
    assert ev[0].reason == R.NO_REFERENCE_PRICE


def test_post_only_invalid_on_market_and_stop(d):
    """Post-only makes no sense on market or stop orders."""
    ev = d.new("a", BUY, 1, 0, ord_type=OrdType.MARKET, post_only=True)
    assert ev[0].reason == R.POST_ONLY_INVALID
    ev = d.new("a", BUY, 1, REF, ord_type=OrdType.STOP_LIMIT, stop_price=REF, post_only=True)
    assert ev[0].reason == R.POST_ONLY_INVALID


def test_cancel_and_replace_rejects(d):
    """Cancel/replace of unknown or foreign orders, bad values and halted books are rejected."""
    d.new("a", BUY, 5, REF)
    oid = d.seq
    cases = [
        (CancelOrder(100, d.ts, "a", 999), RequestKind.CANCEL, R.UNKNOWN_ORDER),
        (CancelOrder(101, d.ts, "b", oid), RequestKind.CANCEL, R.UNKNOWN_ORDER),
        (ReplaceOrder(102, d.ts, "a", 999, 1, REF), RequestKind.REPLACE, R.UNKNOWN_ORDER),
        (ReplaceOrder(103, d.ts, "a", oid, 0, REF), RequestKind.REPLACE, R.INVALID_QTY),
        (ReplaceOrder(104, d.ts, "a", oid, 10**7, REF), RequestKind.REPLACE, R.QTY_ABOVE_MAX),
        (ReplaceOrder(105, d.ts, "a", oid, 5, 0), RequestKind.REPLACE, R.INVALID_PRICE),
        (ReplaceOrder(106, d.ts, "a", oid, 5, 1), RequestKind.REPLACE, R.PRICE_OUTSIDE_BAND),
        (ReplaceOrder(107, d.ts, "a", oid, 5, REF, stop_price=5), RequestKind.REPLACE,
         R.INVALID_STOP_PRICE),
        (MassCancel(108, d.ts, symbol="X"), RequestKind.MASS_CANCEL, R.UNKNOWN_SYMBOL),
        (MassCancel(109, d.ts, side=BAD), RequestKind.MASS_CANCEL, R.INVALID_SIDE),
        (SetInstrumentStatus(110, d.ts, "X", InstrumentStatus.HALTED), RequestKind.ADMIN,
         R.UNKNOWN_SYMBOL),
        (SetInstrumentStatus(111, d.ts, BTC, BAD), RequestKind.ADMIN, R.INVALID_STATUS),
        (SetPosition(112, d.ts, "a", "X", 1), RequestKind.ADMIN, R.UNKNOWN_SYMBOL),
        (SetAccountStp(113, d.ts, "a", BAD), RequestKind.ADMIN, R.INVALID_STP_MODE),
    ]
    for cmd, kind, reason in cases:
        ev = d.run(cmd)
        assert len(ev) == 1, cmd
        r = ev[0]
        assert type(r) is RequestRejected and (r.request, r.reason) == (kind, reason), cmd
    d.run(SetInstrumentStatus(120, d.ts, BTC, InstrumentStatus.HALTED))
    ev = d.run(CancelOrder(121, d.ts, "a", oid))
    assert ev[0].reason == R.INSTRUMENT_HALTED
    ev = d.run(ReplaceOrder(122, d.ts, "a", oid, 1, REF))
    assert ev[0].reason == R.INSTRUMENT_HALTED
    d.run(SetInstrumentStatus(123, d.ts, BTC, InstrumentStatus.CANCEL_ONLY))
    ev = d.run(ReplaceOrder(124, d.ts, "a", oid, 1, REF))
    assert ev[0].reason == R.INSTRUMENT_CANCEL_ONLY


def test_replace_post_only_crossing_rejected(d):
    """Replacing a post-only order to a crossing price is rejected, the order unchanged."""
    d.new("m", SELL, 1, REF)
    d.new("a", BUY, 1, REF - 5, post_only=True)
    ev = d.replace("a", d.seq, 1, REF)
    assert ev[0].reason == R.POST_ONLY_WOULD_TAKE
    assert d.book().best_bid == REF - 5


def test_off_grid_decimals_are_rejected_at_the_edge():
    """Prices off the tick grid and quantities off the lot grid raise with their reason."""
    btc = demo_instruments()[0]
    assert btc.price_to_ticks("60000.1") == 600_001
    assert btc.qty_to_lots("0.005") == 5
    with pytest.raises(OffGridError) as e:
        btc.price_to_ticks("60000.05")
    assert e.value.reason == R.PRICE_NOT_ON_TICK
    with pytest.raises(OffGridError) as e:
        btc.qty_to_lots("0.0005")
    assert e.value.reason == R.QTY_NOT_ON_LOT


def test_kill_switch_and_trading_day_rejects(d):
    """A killed firm's account: new orders and replaces are rejected KILL_SWITCH_ACTIVE; a
    trading-day offset outside one day is INVALID_DAY_OFFSET."""
    from engine.commands import KillSwitch, SetTradingDay

    d.new("a", BUY, 1, REF - 5)
    oid = d.seq
    d.seq += 1
    d.run(KillSwitch(d.seq, d.ts, "F", ("a",), True))
    (rej,) = [e for e in d.new("a", BUY, 1, REF - 5) if type(e) is OrderRejected]
    assert rej.reason == R.KILL_SWITCH_ACTIVE
    d.seq += 1
    (bad,) = d.run(SetTradingDay(d.seq, d.ts, -1))
    assert bad.reason == R.INVALID_DAY_OFFSET
    assert oid not in d.eng.orders


def test_instrument_configuration_rejects(d):
    """ConfigureInstrument: INVALID_INSTRUMENT for nonsense rules, INSTRUMENT_IN_USE for a
    tick size change while orders rest (tests/engine/test_configure_instrument.py)."""
    from engine.commands import ConfigureInstrument

    d.new("a", BUY, 1, REF - 5)
    d.seq += 1
    (bad,) = d.run(ConfigureInstrument(d.seq, d.ts, "X-PERP", "0", "1"))
    assert bad.reason == R.INVALID_INSTRUMENT
    d.seq += 1
    (busy,) = d.run(ConfigureInstrument(d.seq, d.ts, BTC, "0.5", "0.001"))
    assert busy.reason == R.INSTRUMENT_IN_USE


def test_risk_rejects():
    """Collateral, leverage, margin mode, isolated margin and index requests (the amounts
    and shortfalls are checked in tests/engine/test_risk_engine.py)."""
    from engine.book import FastBook
    from engine.commands import (
        AdjustIsolatedMargin,
        Deposit,
        SetIndexPrice,
        SetLeverage,
        SetMarginMode,
        Withdraw,
    )
    from engine.enums import MarginMode, TriggerBy
    from tests.engine.riskutil import RiskDriver

    r = RiskDriver()

    def reason(events: list) -> RejectReason:
        (bad,) = [e for e in events if type(e) in (RequestRejected, OrderRejected)]
        return bad.reason

    assert reason(r.run(Deposit, "a", "EUR", 5)) == R.UNKNOWN_ASSET
    assert reason(r.run(Deposit, "a", "USDT", -5)) == R.INVALID_AMOUNT
    assert reason(r.run(Withdraw, "a", "USDT", 5)) == R.INSUFFICIENT_MARGIN
    assert reason(r.order("a", BUY, 1, REF)) == R.INSUFFICIENT_MARGIN
    r.deposit("a", 10**9)
    assert reason(r.order("a", BUY, 1_000_000, REF)) == R.RISK_LIMIT_EXCEEDED
    assert reason(r.run(SetLeverage, "a", BTC, 0)) == R.INVALID_LEVERAGE
    r.order("a", BUY, 1, REF - 5)
    assert reason(r.run(SetMarginMode, "a", BTC, MarginMode.ISOLATED)) == \
        R.MARGIN_MODE_CHANGE_UNSAFE
    assert reason(r.run(SetMarginMode, "a", BTC, 9)) == R.INVALID_MARGIN_MODE
    assert reason(r.run(AdjustIsolatedMargin, "a", BTC, 5)) == R.NO_ISOLATED_POSITION
    assert reason(r.run(SetIndexPrice, BTC, 0)) == R.INVALID_INDEX_PRICE
    assert reason(r.run(SetPosition, "a", BTC, 3)) == R.MARGINED_INSTRUMENT
    assert reason(r.order("a", BUY, 1, REF, trigger_by=TriggerBy.MARK)) == R.INVALID_TRIGGER
    plain = Driver(FastBook)
    plain.seq += 1
    (bad,) = plain.run(SetLeverage(plain.seq, plain.ts, "a", BTC, 5))
    assert bad.reason == R.NOT_MARGINED


def test_every_reject_reason_is_covered_here():
    """This module exercises every RejectReason (guards against adding one untested)."""
    import inspect
    import sys

    src = inspect.getsource(sys.modules[__name__])
    missing = [r.name for r in RejectReason if f"R.{r.name}" not in src]
    assert missing == []

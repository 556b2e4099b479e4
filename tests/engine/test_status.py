"""Instrument status changes: trading, halted, cancel-only, post-only."""

from __future__ import annotations

from engine import (
    CancelReason,
    InstrumentStatus,
    InstrumentStatusChanged,
    OrderAccepted,
    OrderCanceled,
    OrderTriggered,
    OrdType,
)
from tests.engine.conftest import BUY, REF, SELL, of


def test_status_change_is_reported(d):
    """A status change emits InstrumentStatusChanged and is readable."""
    ev = d.status(InstrumentStatus.HALTED)
    assert ev == [InstrumentStatusChanged(1, d.ts, "BTC-PERP", InstrumentStatus.HALTED)]
    assert d.eng.status("BTC-PERP") is InstrumentStatus.HALTED


def test_cancel_only_allows_cancels(d):
    """In cancel-only, cancels work and new orders do not."""
    d.new("a", BUY, 1, REF)
    d.status(InstrumentStatus.CANCEL_ONLY)
    assert of(d.cancel("a", 1), OrderCanceled)


def test_halted_allows_mass_cancel_and_expiry(d):
    """A halted book is frozen to users but mass cancel still clears it."""
    d.new("a", BUY, 1, REF)
    d.status(InstrumentStatus.HALTED)
    assert len(of(d.mass_cancel(symbol="BTC-PERP"), OrderCanceled)) == 1


def test_post_only_status_accepts_passive_orders(d):
    """In post-only status a non-crossing limit order is accepted and rests."""
    d.status(InstrumentStatus.POST_ONLY)
    assert of(d.new("a", BUY, 1, REF), OrderAccepted)


def test_stops_do_not_trigger_while_halted_but_do_when_trading_resumes(d):
    """Triggers wait while halted and fire when trading resumes."""
    d.new("m", SELL, 5, REF)
    d.new("b", BUY, 1, REF)  # last = REF
    d.status(InstrumentStatus.HALTED)
    d.status(InstrumentStatus.TRADING)
    ev = d.new("s", BUY, 1, 0, ord_type=OrdType.STOP, stop_price=REF)
    assert of(ev, OrderTriggered)
    d.new("s", SELL, 1, 0, ord_type=OrdType.STOP, stop_price=REF - 1)
    d.status(InstrumentStatus.HALTED)
    d.new("x", BUY, 1, REF)  # rejected: halted
    d.eng.markets["BTC-PERP"].last_price = REF - 1  # as if a trade happened before the halt
    assert of(d.status(InstrumentStatus.HALTED), OrderTriggered) == []
    assert of(d.status(InstrumentStatus.TRADING), OrderTriggered)


def test_triggered_order_in_post_only_status_that_would_take_is_canceled(d):
    """A stop triggering during post-only status cannot take: it is canceled POST_ONLY."""
    d.new("m", SELL, 5, REF)
    d.new("b", BUY, 1, REF)
    d.status(InstrumentStatus.POST_ONLY)
    ev = d.new("s", BUY, 1, REF, ord_type=OrdType.STOP_LIMIT, stop_price=REF)
    assert of(ev, OrderCanceled)[0].reason == CancelReason.POST_ONLY

"""Execution instructions: post-only, reduce-only, iceberg (display quantity), minimum quantity."""

from __future__ import annotations

from engine import (
    CancelReason,
    LevelChanged,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    OrderRestated,
    OrdType,
    RejectReason,
    TimeInForce,
    Trade,
)
from tests.engine.conftest import BUY, REF, SELL, of


def test_post_only_rests_when_it_does_not_cross(d):
    """A post-only order that would not take is accepted and rests."""
    d.new("m", SELL, 1, REF + 1)
    ev = d.new("p", BUY, 1, REF, post_only=True)
    assert of(ev, OrderAccepted)
    assert d.book().best_bid == REF


def test_post_only_rejected_when_it_would_take(d):
    """A crossing post-only order is rejected POST_ONLY_WOULD_TAKE and never trades."""
    d.new("m", SELL, 1, REF)
    ev = d.new("p", BUY, 1, REF, post_only=True)
    assert of(ev, OrderRejected)[0].reason == RejectReason.POST_ONLY_WOULD_TAKE
    assert of(ev, Trade) == []


def test_reduce_only_rejected_without_a_position_to_reduce(d):
    """Reduce-only with a flat or same-direction position is rejected."""
    ev = d.new("r", SELL, 1, REF, reduce_only=True)
    assert of(ev, OrderRejected)[0].reason == RejectReason.REDUCE_ONLY_WOULD_INCREASE
    d.position("r", -3)
    ev = d.new("r", SELL, 1, REF, reduce_only=True)
    assert of(ev, OrderRejected)[0].reason == RejectReason.REDUCE_ONLY_WOULD_INCREASE


def test_reduce_only_quantity_is_clamped_to_the_position(d):
    """A reduce-only order larger than the position is accepted for the position's size."""
    d.position("r", 3)
    ev = d.new("r", SELL, 10, REF, reduce_only=True)
    assert of(ev, OrderAccepted)[0].qty == 3


def test_positions_follow_fills(d):
    """The engine keeps signed positions from its own fills."""
    d.new("a", SELL, 4, REF)
    d.new("b", BUY, 3, REF)
    assert d.eng.position("a", "BTC-PERP") == -3
    assert d.eng.position("b", "BTC-PERP") == 3


def test_resting_reduce_only_shrinks_when_position_shrinks(d):
    """After a fill reduces the position, resting reduce-only orders shrink to it."""
    d.position("r", 5)
    d.new("r", SELL, 5, REF + 10, reduce_only=True)
    ro = d.seq
    d.new("r", SELL, 2, REF)  # a plain sell of 2 closes part of the position
    ev = d.new("x", BUY, 2, REF)
    rs = of(ev, OrderRestated)[0]
    assert (rs.order_id, rs.reason, rs.leaves, rs.qty) == (ro, CancelReason.REDUCE_ONLY, 3, 3)
    assert d.book().levels(SELL) == [(REF + 10, 3, 1)]


def test_resting_reduce_only_canceled_when_position_closes(d):
    """When the position is gone, resting reduce-only orders are canceled REDUCE_ONLY."""
    d.position("r", 2)
    d.new("r", SELL, 2, REF + 10, reduce_only=True)
    ev = d.position("r", 0)
    assert of(ev, OrderCanceled)[0].reason == CancelReason.REDUCE_ONLY
    assert d.book().levels(SELL) == []


def test_two_reduce_only_makers_never_overshoot(d):
    """Two reduce-only bids summing past the short position fill only what closes it."""
    d.position("r", -3)
    d.new("r", BUY, 3, REF, reduce_only=True)
    d.new("r", BUY, 3, REF - 1, reduce_only=True)
    ev = d.new("x", SELL, 6, REF - 1)
    assert sum(t.qty for t in of(ev, Trade)) == 3
    assert d.eng.position("r", "BTC-PERP") == 0
    assert [c.reason for c in of(ev, OrderCanceled)] == [CancelReason.REDUCE_ONLY]


def test_reduce_only_taker_never_flips_the_position(d):
    """A reduce-only taker fills at most the position."""
    d.position("r", -2)
    d.new("m", SELL, 5, REF)
    d.new("r", BUY, 5, REF, reduce_only=True)
    assert d.eng.position("r", "BTC-PERP") == 0


def test_iceberg_shows_only_its_display_quantity(d):
    """L2 shows an iceberg's display quantity, not its total."""
    ev = d.new("i", SELL, 10, REF, display_qty=3)
    assert of(ev, LevelChanged) == [LevelChanged(1, "BTC-PERP", SELL, REF, 3, 1)]


def test_iceberg_refresh_loses_time_priority(d):
    """When its display is used up, an iceberg refreshes behind orders already at the level."""
    d.new("i", SELL, 10, REF, display_qty=3)
    ice = d.seq
    d.new("m", SELL, 2, REF)
    other = d.seq
    ev = d.new("t", BUY, 5, REF)
    assert [(t.maker_order_id, t.qty) for t in of(ev, Trade)] == [(ice, 3), (other, 2)]
    assert [o.id for o in d.book().orders_at(SELL, REF)] == [ice]
    assert d.book().levels(SELL) == [(REF, 3, 1)]
    ev = d.new("t", BUY, 7, REF)
    assert [t.qty for t in of(ev, Trade)] == [3, 3, 1]
    assert d.book().levels(SELL) == []


def test_min_qty_cancels_when_not_enough_is_available(d):
    """An order whose minimum quantity is not executable on entry is canceled unfilled."""
    d.new("m", SELL, 2, REF)
    ev = d.new("t", BUY, 5, REF, min_qty=3)
    assert of(ev, Trade) == []
    assert of(ev, OrderCanceled)[0].reason == CancelReason.MIN_QTY_UNFILLED


def test_min_qty_met_trades_and_rests_remainder(d):
    """With the minimum available the order trades and (GTC) rests the rest."""
    d.new("m", SELL, 3, REF)
    ev = d.new("t", BUY, 5, REF, min_qty=3)
    assert sum(t.qty for t in of(ev, Trade)) == 3
    assert d.book().levels(BUY) == [(REF, 2, 1)]


def test_min_qty_with_ioc(d):
    """IOC with a minimum quantity fills at least the minimum or nothing."""
    d.new("m", SELL, 4, REF)
    ev = d.new("t", BUY, 6, REF, min_qty=4, tif=TimeInForce.IOC)
    assert sum(t.qty for t in of(ev, Trade)) == 4
    assert of(ev, OrderCanceled)[0].reason == CancelReason.IOC_REMAINDER


def test_reduce_only_stop_canceled_at_trigger_if_it_would_increase(d):
    """A reduce-only stop whose position is gone when it triggers is canceled REDUCE_ONLY."""
    d.position("r", 2)
    d.new("r", SELL, 2, 0, ord_type=OrdType.STOP, stop_price=REF - 5, reduce_only=True)
    d.position("r", 0)
    d.new("b", BUY, 1, REF - 5)
    ev = d.new("s", SELL, 1, REF - 5)
    assert of(ev, OrderCanceled)[0].reason == CancelReason.REDUCE_ONLY

"""Time in force: GTC, IOC, FOK (all or nothing), GTD and DAY expiry on sequencer ticks."""

from __future__ import annotations

from engine import (
    CancelReason,
    OrderCanceled,
    OrderExpired,
    OrdType,
    StpMode,
    TimeInForce,
    Trade,
)
from engine.matcher import DAY_NS
from tests.engine.conftest import BUY, REF, SELL, of


def test_gtc_rests_until_canceled(d):
    """A GTC order survives ticks far in the future."""
    d.new("a", BUY, 1, REF)
    d.tick(d.ts + 10 * DAY_NS)
    assert d.book().levels(BUY) == [(REF, 1, 1)]


def test_ioc_remainder_is_canceled(d):
    """IOC fills what crosses now and cancels the rest with reason IOC_REMAINDER."""
    d.new("m", SELL, 2, REF)
    ev = d.new("t", BUY, 5, REF, tif=TimeInForce.IOC)
    assert [t.qty for t in of(ev, Trade)] == [2]
    c = of(ev, OrderCanceled)[0]
    assert (c.reason, c.filled, c.leaves, c.qty) == (CancelReason.IOC_REMAINDER, 2, 0, 5)
    assert d.book().levels(BUY) == []


def test_ioc_that_does_not_cross_is_canceled_whole(d):
    """An IOC order with nothing to take is canceled without trading."""
    ev = d.new("t", BUY, 5, REF, tif=TimeInForce.IOC)
    assert of(ev, OrderCanceled)[0].reason == CancelReason.IOC_REMAINDER


def test_fok_fills_completely_across_levels(d):
    """A FOK order that can fill in full does, across several levels."""
    d.new("m", SELL, 2, REF)
    d.new("m", SELL, 3, REF + 1)
    ev = d.new("t", BUY, 5, REF + 1, tif=TimeInForce.FOK)
    assert sum(t.qty for t in of(ev, Trade)) == 5
    assert of(ev, OrderCanceled) == []


def test_fok_that_cannot_fill_completely_does_not_trade(d):
    """A FOK order short of liquidity is canceled FOK_UNFILLED and leaves the book untouched."""
    d.new("m", SELL, 2, REF)
    d.new("m", SELL, 2, REF + 2)
    before = d.eng.state_hash()
    ev = d.new("t", BUY, 5, REF + 2, tif=TimeInForce.FOK)
    assert of(ev, Trade) == []
    assert of(ev, OrderCanceled)[0].reason == CancelReason.FOK_UNFILLED
    assert d.book().levels(SELL) == [(REF, 2, 1), (REF + 2, 2, 1)]
    assert before != d.eng.state_hash()  # only the exec sequence moved
    assert d.eng.orders.keys() == {1, 2}


def test_fok_counts_iceberg_hidden_quantity(d):
    """Hidden iceberg quantity is executable, so a FOK can fill against it completely."""
    d.new("m", SELL, 10, REF, display_qty=2)
    ev = d.new("t", BUY, 7, REF, tif=TimeInForce.FOK)
    assert sum(t.qty for t in of(ev, Trade)) == 7


def test_fok_blocked_by_own_order_under_cancel_newest(d):
    """A FOK that would meet its own resting order (cancel-newest STP) is not fillable."""
    d.new("m", SELL, 2, REF)
    d.new("t", SELL, 2, REF)
    d.new("m", SELL, 5, REF)
    ev = d.new("t", BUY, 5, REF, tif=TimeInForce.FOK, stp=StpMode.CANCEL_NEWEST)
    assert of(ev, Trade) == []
    assert of(ev, OrderCanceled)[0].reason == CancelReason.FOK_UNFILLED


def test_fok_market_order(d):
    """A FOK market order fills in full inside the band or not at all."""
    d.new("m", SELL, 2, REF)
    ev = d.new("t", BUY, 3, 0, ord_type=OrdType.MARKET, tif=TimeInForce.FOK)
    assert of(ev, Trade) == []
    ev = d.new("t", BUY, 2, 0, ord_type=OrdType.MARKET, tif=TimeInForce.FOK)
    assert sum(t.qty for t in of(ev, Trade)) == 2


def test_gtd_expires_at_its_time_on_a_tick(d):
    """A GTD order expires at the first tick at or after its expire time, not before."""
    t0 = d.ts
    d.new("a", BUY, 1, REF, tif=TimeInForce.GTD, expire_ts=t0 + 5_000_000)
    oid = d.seq
    assert d.tick(t0 + 4_999_999) == []
    ev = d.tick(t0 + 5_000_000)
    e = of(ev, OrderExpired)[0]
    assert (e.order_id, e.reason, e.leaves) == (oid, CancelReason.EXPIRY, 0)
    assert d.book().levels(BUY) == []


def test_gtd_partially_filled_expires_with_fills_reported(d):
    """An expiring partly filled order reports its cumulative fill."""
    t0 = d.ts
    d.new("a", BUY, 3, REF, tif=TimeInForce.GTD, expire_ts=t0 + 100_000)
    d.new("b", SELL, 1, REF)
    e = of(d.tick(t0 + 100_000), OrderExpired)[0]
    assert (e.filled, e.notional) == (1, REF)


def test_day_order_expires_at_the_day_boundary(d):
    """A DAY order expires at the next day boundary (UTC midnight by default)."""
    d.new("a", BUY, 1, REF, tif=TimeInForce.DAY)
    boundary = (d.ts // DAY_NS + 1) * DAY_NS
    assert d.tick(boundary - 1) == []
    assert len(of(d.tick(boundary), OrderExpired)) == 1


def test_expired_order_that_was_canceled_is_skipped(d):
    """A GTD order canceled before its time produces no expiry later."""
    t0 = d.ts
    d.new("a", BUY, 1, REF, tif=TimeInForce.GTD, expire_ts=t0 + 100_000)
    assert len(d.eng.orders) == 1
    d.cancel("a", d.seq)
    assert d.tick(t0 + 10**9) == []


def test_untriggered_gtd_stop_expires(d):
    """A waiting stop with GTD expiry expires like a resting order."""
    t0 = d.ts
    d.new("a", BUY, 1, 0, ord_type=OrdType.STOP, stop_price=REF + 5,
          tif=TimeInForce.GTD, expire_ts=t0 + 100_000)
    assert len(of(d.tick(t0 + 10**6), OrderExpired)) == 1
    assert d.eng.markets["BTC-PERP"].stops_up == []


def test_expiry_heap_stays_bounded_by_the_live_orders():
    """Filled DAY/GTD orders leave lazy heap entries; the heap is compacted once it holds
    more than twice the live orders (plus a slack), so memory follows the live book."""
    from engine import MatchingEngine, NewOrder, Side, TimeInForce, demo_instruments

    eng = MatchingEngine(demo_instruments())
    ts = 10**15
    for i in range(1, 20_001, 2):  # a DAY buy rests, a sell fills it: both gone at once
        eng.process(NewOrder(i, ts, "a", "BTC-PERP", Side.BUY, 1, 600_000,
                             tif=TimeInForce.DAY))
        eng.process(NewOrder(i + 1, ts, "b", "BTC-PERP", Side.SELL, 1, 600_000))
    assert not eng.orders
    assert len(eng._expiry) <= 2 * len(eng.orders) + 4096 + 1

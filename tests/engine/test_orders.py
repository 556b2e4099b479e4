"""Order types: limit, market (price band), stop-market, stop-limit and take-profit variants."""

from __future__ import annotations

from engine import (
    CancelReason,
    LevelChanged,
    OrderAccepted,
    OrderCanceled,
    OrderTriggered,
    OrdType,
    Trade,
)
from tests.engine.conftest import BUY, REF, SELL, of


def test_limit_rests_and_is_reported(d):
    """A non-crossing limit order is accepted, rests, and produces one L2 change."""
    ev = d.new("a", BUY, 5, REF - 10)
    acc = of(ev, OrderAccepted)[0]
    assert (acc.order_id, acc.cl_ord_id, acc.account, acc.symbol) == (1, "c1", "a", "BTC-PERP")
    assert (acc.side, acc.ord_type, acc.price, acc.qty, acc.filled, acc.leaves) == (
        BUY, OrdType.LIMIT, REF - 10, 5, 0, 5)
    assert of(ev, LevelChanged) == [LevelChanged(1, "BTC-PERP", BUY, REF - 10, 5, 1)]
    assert d.book().best_bid == REF - 10
    assert d.book().levels(BUY) == [(REF - 10, 5, 1)]


def test_crossing_limit_trades_at_maker_price_in_price_time_priority(d):
    """A crossing order takes the best price first, then the oldest order at that price."""
    d.new("m1", SELL, 2, REF + 2)
    d.new("m2", SELL, 2, REF + 1)
    d.new("m3", SELL, 2, REF + 1)
    ev = d.new("t", BUY, 5, REF + 2)
    trades = of(ev, Trade)
    assert [(t.maker_order_id, t.price, t.qty) for t in trades] == [
        (2, REF + 1, 2), (3, REF + 1, 2), (1, REF + 2, 1)]
    last = trades[-1]
    assert (last.taker_filled, last.taker_leaves) == (5, 0)
    assert last.taker_notional == 4 * (REF + 1) + (REF + 2)
    assert (last.maker_filled, last.maker_leaves) == (1, 1)
    assert d.book().levels(SELL) == [(REF + 2, 1, 1)]
    assert d.eng.last_price("BTC-PERP") == REF + 2


def test_partially_filled_limit_rests_remainder(d):
    """The unfilled part of a crossing GTC limit order rests at its limit price."""
    d.new("m", SELL, 2, REF)
    d.new("t", BUY, 5, REF + 5)
    assert d.book().levels(BUY) == [(REF + 5, 3, 1)]
    assert d.book().levels(SELL) == []


def test_market_order_sweeps_and_cancels_remainder_when_book_empty(d):
    """A market order takes what is there; with the book exhausted the rest is IOC_REMAINDER."""
    d.new("m", SELL, 2, REF)
    ev = d.new("t", BUY, 5, 0, ord_type=OrdType.MARKET)
    assert [t.qty for t in of(ev, Trade)] == [2]
    c = of(ev, OrderCanceled)[0]
    assert (c.reason, c.filled, c.leaves) == (CancelReason.IOC_REMAINDER, 2, 0)
    assert 2 not in d.eng.orders


def test_market_order_never_trades_through_band(d):
    """A market order stops at the band edge and its rest is canceled as MARKET_PROTECTION."""
    d.new("m", SELL, 3, REF + 25_000)  # inside the band around the configured reference
    d.new("b", BUY, 1, 580_000)
    d.new("s", SELL, 1, 580_000)  # trade: last = 580000, band now [551000, 609000]
    ev = d.new("t", BUY, 2, 0, ord_type=OrdType.MARKET)
    assert of(ev, Trade) == []
    c = of(ev, OrderCanceled)[0]
    assert c.reason == CancelReason.MARKET_PROTECTION
    assert d.book().levels(SELL) == [(REF + 25_000, 3, 1)]


def test_market_sell_bounded_below(d):
    """A market sell trades down to the lower band edge only, leaving lower bids alone."""
    d.new("b1", BUY, 1, 575_000)
    d.new("b2", BUY, 1, 610_000)
    d.new("x", SELL, 1, 610_000)  # last = 610000 -> band [579500, 640500]
    d.new("b3", BUY, 1, 600_000)
    ev = d.new("t", SELL, 5, 0, ord_type=OrdType.MARKET)
    assert [t.price for t in of(ev, Trade)] == [600_000]
    assert of(ev, OrderCanceled)[0].reason == CancelReason.MARKET_PROTECTION
    assert d.book().levels(BUY) == [(575_000, 1, 1)]


def test_stop_market_triggers_on_last_trade_and_enters_as_market(d):
    """A buy stop waits off-book and triggers when the last price reaches its stop price."""
    ev = d.new("s", BUY, 2, 0, ord_type=OrdType.STOP, stop_price=REF + 10)
    assert of(ev, OrderAccepted)[0].stop_price == REF + 10
    assert of(ev, LevelChanged) == []
    stop_id = d.seq
    d.new("m", SELL, 5, REF + 10)
    d.new("m2", SELL, 5, REF + 20)
    ev = d.new("b", BUY, 1, REF + 10)  # trade at REF+10 triggers the stop
    trig = of(ev, OrderTriggered)
    assert [(t.order_id, t.trigger_price) for t in trig] == [(stop_id, REF + 10)]
    fills = [t for t in of(ev, Trade) if t.taker_order_id == stop_id]
    assert [(t.price, t.qty) for t in fills] == [(REF + 10, 2)]
    assert fills[0].taker_ord_type == OrdType.STOP
    assert stop_id not in d.eng.orders


def test_stop_limit_sell_triggers_on_fall_and_rests_as_limit(d):
    """A sell stop-limit triggers when the last price falls to the stop and then rests."""
    d.new("s", SELL, 2, REF - 5, ord_type=OrdType.STOP_LIMIT, stop_price=REF - 1)
    stop_id = d.seq
    d.new("b", BUY, 1, REF - 10)
    d.new("x", SELL, 1, REF - 10)  # last = REF-10 <= stop
    assert d.book().levels(SELL) == [(REF - 5, 2, 1)]
    assert d.eng.orders[stop_id].spec.pending is False


def test_take_profit_variants_trigger_in_the_opposite_direction(d):
    """Buy take-profit triggers on a fall to its price; sell take-profit-limit on a rise."""
    d.position("tp", 0)
    d.new("tp", BUY, 1, 0, ord_type=OrdType.TAKE_PROFIT, stop_price=REF - 100)
    buy_tp = d.seq
    d.new("tp", SELL, 1, REF + 300, ord_type=OrdType.TAKE_PROFIT_LIMIT, stop_price=REF + 100)
    sell_tp = d.seq
    d.new("b", BUY, 1, REF + 100)
    ev = d.new("x", SELL, 1, REF + 100)  # last rises to REF+100: only the sell TP triggers
    assert [t.order_id for t in of(ev, OrderTriggered)] == [sell_tp]
    assert d.book().levels(SELL) == [(REF + 300, 1, 1)]
    d.new("b", BUY, 2, REF - 100)
    ev = d.new("x", SELL, 1, REF - 100)  # falls: the buy TP triggers, buys at market
    assert [t.order_id for t in of(ev, OrderTriggered)] == [buy_tp]
    assert buy_tp not in d.eng.orders


def test_cascading_triggers_run_in_order_id_order(d):
    """Stops triggered by the same price run lowest order id first, deterministically."""
    d.new("s2", BUY, 1, 0, ord_type=OrdType.STOP, stop_price=REF + 5)
    first = d.seq
    d.new("s1", BUY, 1, 0, ord_type=OrdType.STOP, stop_price=REF + 1)
    second = d.seq
    d.new("m", SELL, 10, REF + 5)
    ev = d.new("b", BUY, 1, REF + 5)
    assert [t.order_id for t in of(ev, OrderTriggered)] == [first, second]


def test_stop_whose_condition_already_holds_triggers_at_once(d):
    """A stop entered beyond the last price triggers at the end of its own command."""
    d.new("m", SELL, 5, REF)
    d.new("b", BUY, 1, REF)
    ev = d.new("s", BUY, 1, 0, ord_type=OrdType.STOP, stop_price=REF - 50)
    assert len(of(ev, OrderTriggered)) == 1
    assert len(of(ev, Trade)) == 1


def test_untriggered_stop_can_be_canceled(d):
    """Canceling a waiting stop removes it from the trigger index."""
    d.new("s", BUY, 1, 0, ord_type=OrdType.STOP, stop_price=REF + 5)
    sid = d.seq
    ev = d.cancel("s", sid)
    assert of(ev, OrderCanceled)[0].reason == CancelReason.USER
    d.new("m", SELL, 5, REF + 5)
    ev = d.new("b", BUY, 1, REF + 5)
    assert of(ev, OrderTriggered) == []

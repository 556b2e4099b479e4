"""Cancel, replace (priority rules, FIX end-of-order), mass cancel by account, symbol, side."""

from __future__ import annotations

from engine import (
    CancelReason,
    MassCancelDone,
    OrderCanceled,
    OrderReplaced,
    OrdType,
    Trade,
)
from tests.engine.conftest import BUY, ETH, REF, SELL, of


def test_user_cancel_removes_order_and_reports_request_id(d):
    """A cancel ends the order with reason USER and the cancel request's id."""
    d.new("a", BUY, 5, REF)
    oid = d.seq
    ev = d.cancel("a", oid, cl_ord_id="x1")
    c = of(ev, OrderCanceled)[0]
    assert (c.order_id, c.cl_ord_id, c.request_id, c.reason, c.leaves, c.qty) == (
        oid, f"c{oid}", "x1", CancelReason.USER, 0, 5)
    assert d.book().levels(BUY) == []
    assert d.eng.orders == {}


def test_cancel_in_the_middle_of_a_level_keeps_others_in_order(d):
    """Canceling one order at a level leaves the others in time order."""
    for _ in range(4):
        d.new("a", BUY, 1, REF)
    d.cancel("a", 2)
    assert [o.id for o in d.book().orders_at(BUY, REF)] == [1, 3, 4]
    assert d.book().levels(BUY) == [(REF, 3, 3)]


def test_replace_quantity_decrease_keeps_priority(d):
    """Reducing quantity at the same price keeps the order's place in the queue."""
    d.new("a", BUY, 5, REF)
    d.new("b", BUY, 5, REF)
    ev = d.replace("a", 1, 3, REF, cl_ord_id="a2")
    r = of(ev, OrderReplaced)[0]
    assert (r.qty, r.leaves, r.cl_ord_id, r.orig_cl_ord_id, r.priority_kept) == (
        3, 3, "a2", "c1", True)
    assert [o.id for o in d.book().orders_at(BUY, REF)] == [1, 2]
    assert d.book().levels(BUY) == [(REF, 8, 2)]


def test_replace_quantity_increase_loses_priority(d):
    """Increasing quantity sends the order to the back of its level."""
    d.new("a", BUY, 5, REF)
    d.new("b", BUY, 5, REF)
    ev = d.replace("a", 1, 7, REF)
    assert of(ev, OrderReplaced)[0].priority_kept is False
    assert [o.id for o in d.book().orders_at(BUY, REF)] == [2, 1]


def test_replace_price_change_loses_priority(d):
    """A price change moves the order to the back of the new level."""
    d.new("a", BUY, 5, REF)
    d.new("b", BUY, 5, REF - 1)
    d.replace("a", 1, 5, REF - 1)
    assert [o.id for o in d.book().orders_at(BUY, REF - 1)] == [2, 1]
    assert d.book().levels(BUY) == [(REF - 1, 10, 2)]


def test_replace_to_crossing_price_trades(d):
    """A replace that makes the order cross trades it as a taker."""
    d.new("m", SELL, 2, REF)
    d.new("a", BUY, 5, REF - 10)
    ev = d.replace("a", 2, 5, REF)
    t = of(ev, Trade)[0]
    assert (t.taker_order_id, t.qty, t.price) == (2, 2, REF)
    assert d.book().levels(BUY) == [(REF, 3, 1)]


def test_replace_at_or_below_filled_ends_the_order(d):
    """A new quantity at or below the filled quantity leaves nothing to work: leaves 0."""
    d.new("a", BUY, 5, REF)
    d.new("m", SELL, 3, REF)
    ev = d.replace("a", 1, 2, REF)
    r = of(ev, OrderReplaced)[0]
    assert (r.qty, r.filled, r.leaves) == (2, 3, 0)
    assert d.eng.orders == {}
    assert d.book().levels(BUY) == []


def test_replace_partially_filled_order_keeps_fills(d):
    """Replacing a partly filled order computes leaves as new quantity minus filled."""
    d.new("a", BUY, 5, REF)
    d.new("m", SELL, 2, REF)
    ev = d.replace("a", 1, 4, REF)
    r = of(ev, OrderReplaced)[0]
    assert (r.qty, r.filled, r.leaves, r.notional) == (4, 2, 2, 2 * REF)


def test_replace_untriggered_stop(d):
    """A waiting stop's quantity, limit and stop price can be replaced."""
    d.new("a", BUY, 2, REF + 20, ord_type=OrdType.STOP_LIMIT, stop_price=REF + 10)
    ev = d.replace("a", 1, 3, REF + 30, stop_price=REF + 15)
    r = of(ev, OrderReplaced)[0]
    assert (r.qty, r.price, r.stop_price) == (3, REF + 30, REF + 15)
    assert d.eng.markets["BTC-PERP"].stops_up == [(REF + 15, 1)]


def test_mass_cancel_filters(d):
    """Mass cancel by account, by symbol and by side cancels exactly the matching orders."""
    d.new("a", BUY, 1, REF)  # 1
    d.new("a", SELL, 1, REF + 5)  # 2
    d.new("b", BUY, 1, REF)  # 3
    d.new("a", BUY, 1, 300_000, symbol=ETH)  # 4
    d.new("a", BUY, 1, 0, ord_type=OrdType.STOP, stop_price=REF + 50)  # 5
    ev = d.mass_cancel(account="a", symbol="BTC-PERP", side=BUY, cl_ord_id="m1")
    assert [c.order_id for c in of(ev, OrderCanceled)] == [1, 5]
    assert all(c.reason == CancelReason.MASS_CANCEL for c in of(ev, OrderCanceled))
    assert of(ev, MassCancelDone)[0].canceled == 2
    ev = d.mass_cancel(account="a")
    assert [c.order_id for c in of(ev, OrderCanceled)] == [2, 4]
    ev = d.mass_cancel()
    assert [c.order_id for c in of(ev, OrderCanceled)] == [3]
    assert d.eng.orders == {}

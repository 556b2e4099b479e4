"""Self-trade prevention: each mode, per order, account default and engine default."""

from __future__ import annotations

import pytest

from engine import (
    CancelReason,
    FastBook,
    OrderCanceled,
    OrderRestated,
    StpMode,
    Trade,
)
from tests.engine.conftest import BUY, REF, SELL, Driver, of


def _setup(d):
    d.new("a", SELL, 3, REF)  # own resting order, id 1
    d.new("b", SELL, 2, REF)  # someone else's, id 2


def test_cancel_newest_cancels_the_taker(d):
    """CANCEL_NEWEST: the incoming order's remainder is canceled; the resting one stays."""
    _setup(d)
    ev = d.new("a", BUY, 5, REF, stp=StpMode.CANCEL_NEWEST)
    assert of(ev, Trade) == []
    c = of(ev, OrderCanceled)
    assert [(x.order_id, x.reason) for x in c] == [(3, CancelReason.STP)]
    assert [o.id for o in d.book().orders_at(SELL, REF)] == [1, 2]


def test_cancel_oldest_cancels_the_maker_and_continues(d):
    """CANCEL_OLDEST: the resting own order is canceled and matching continues."""
    _setup(d)
    ev = d.new("a", BUY, 5, REF, stp=StpMode.CANCEL_OLDEST)
    assert [(x.order_id, x.reason) for x in of(ev, OrderCanceled)] == [(1, CancelReason.STP)]
    assert [(t.maker_order_id, t.qty) for t in of(ev, Trade)] == [(2, 2)]
    assert d.book().levels(BUY) == [(REF, 3, 1)]


def test_cancel_both(d):
    """CANCEL_BOTH: both the resting and the incoming order are canceled."""
    _setup(d)
    ev = d.new("a", BUY, 5, REF, stp=StpMode.CANCEL_BOTH)
    assert [x.order_id for x in of(ev, OrderCanceled)] == [1, 3]
    assert of(ev, Trade) == []
    assert [o.id for o in d.book().orders_at(SELL, REF)] == [2]


def test_decrement_and_cancel_smaller_maker(d):
    """DECREMENT_AND_CANCEL: the smaller (maker) is canceled, the taker reduced and goes on."""
    _setup(d)
    ev = d.new("a", BUY, 5, REF, stp=StpMode.DECREMENT_AND_CANCEL)
    assert [(x.order_id, x.reason) for x in of(ev, OrderCanceled)] == [(1, CancelReason.STP)]
    r = of(ev, OrderRestated)[0]
    assert (r.order_id, r.qty, r.leaves, r.reason) == (3, 2, 2, CancelReason.STP)
    assert [(t.maker_order_id, t.qty) for t in of(ev, Trade)] == [(2, 2)]
    assert d.eng.orders.get(3) is None  # filled 2 of its reduced 2


def test_decrement_and_cancel_smaller_taker(d):
    """DECREMENT_AND_CANCEL: a smaller taker is canceled, the maker decremented in place."""
    _setup(d)
    ev = d.new("a", BUY, 2, REF, stp=StpMode.DECREMENT_AND_CANCEL)
    r = of(ev, OrderRestated)[0]
    assert (r.order_id, r.leaves) == (1, 1)
    assert [x.order_id for x in of(ev, OrderCanceled)] == [3]
    assert [o.id for o in d.book().orders_at(SELL, REF)] == [1, 2]
    assert d.book().levels(SELL) == [(REF, 3, 2)]


def test_account_default_applies_when_order_has_none(d):
    """An order without a mode uses its account's default."""
    d.account_stp("a", StpMode.CANCEL_OLDEST)
    _setup(d)
    ev = d.new("a", BUY, 5, REF)
    assert [x.order_id for x in of(ev, OrderCanceled)] == [2]  # seq 1 was SetAccountStp


def test_order_mode_overrides_account_default(d):
    """A mode on the order wins over the account default."""
    d.account_stp("a", StpMode.CANCEL_OLDEST)
    _setup(d)
    ev = d.new("a", BUY, 5, REF, stp=StpMode.CANCEL_NEWEST)
    assert [x.order_id for x in of(ev, OrderCanceled)] == [4]  # the taker


@pytest.mark.parametrize("mode", list(StpMode))
def test_engine_default_from_constructor(book_factory, mode):
    """The engine-wide default (and per-account defaults given at construction) apply."""
    d = Driver(book_factory, default_stp=mode)
    _setup(d)
    d.new("a", BUY, 5, REF)
    d2 = Driver(book_factory, account_stp={"a": mode})
    _setup(d2)
    d2.new("a", BUY, 5, REF)
    assert d.eng.state_hash() != "" and d.eng.default_stp is mode
    assert d2.eng.account_stp["a"] is mode


def test_no_self_trade_ever_prints():
    """No trade ever has the same account on both sides."""
    d = Driver(FastBook)
    for mode in StpMode:
        d.new("a", SELL, 1, REF)
        ev = d.new("a", BUY, 1, REF, stp=mode)
        assert all(t.maker_account != t.taker_account for t in of(ev, Trade))

"""Order books: both books give the same best prices, L2 aggregates, L3 order and cancels."""

from __future__ import annotations

import pytest

from engine import FastBook, OrdType, ReferenceBook, TimeInForce
from engine.book import NO_ASK
from engine.order import Order, OrderSpec
from tests.engine.conftest import BUY, SELL

SPEC = OrderSpec(OrdType.LIMIT, TimeInForce.GTC, 0, 0, 0, None, False, False, 0, False)
ICE = OrderSpec(OrdType.LIMIT, TimeInForce.GTC, 0, 2, 0, None, False, False, 0, False)


def order(oid, side, price, qty, spec=SPEC):
    o = Order(oid, f"c{oid}", "a", "X", side, price, qty, qty, 0, 0, 0, spec)
    o.visible = min(spec.display, qty) if spec.display else qty
    return o


@pytest.fixture(params=[FastBook, ReferenceBook], ids=["fast", "reference"])
def book(request):
    """An empty book of each kind."""
    return request.param("X")


def test_empty_book(book):
    """An empty book has no best bid (0) and no best ask (NO_ASK)."""
    assert (book.best_bid, book.best_ask) == (0, NO_ASK)
    assert book.best_order(BUY) is None and book.best_order(SELL) is None


def test_best_prices_and_levels(book):
    """Best bid/ask follow adds and removes; L2 aggregates qty and count per level."""
    os = [order(1, BUY, 100, 2), order(2, BUY, 101, 3), order(3, BUY, 100, 4),
          order(4, SELL, 105, 1), order(5, SELL, 103, 2)]
    for o in os:
        book.add(o)
    assert (book.best_bid, book.best_ask) == (101, 103)
    assert book.levels(BUY) == [(101, 3, 1), (100, 6, 2)]
    assert book.levels(SELL) == [(103, 2, 1), (105, 1, 1)]
    book.remove(os[1])
    assert book.best_bid == 100
    assert [o.id for o in book.orders_at(BUY, 100)] == [1, 3]
    book.remove(os[0])
    assert book.best_order(BUY).id == 3
    book.remove(os[2])
    assert book.best_bid == 0 and book.levels(BUY) == []


def test_many_cancels_compact_and_keep_order(book):
    """Cancels in any pattern keep the survivors in time order."""
    os = [order(i, SELL, 200, 1) for i in range(1, 101)]
    for o in os:
        book.add(o)
    for o in os:
        if o.id % 3:
            book.remove(o)
    assert [o.id for o in book.orders_at(SELL, 200)] == [i for i in range(1, 101) if i % 3 == 0]
    assert book.levels(SELL) == [(200, 33, 33)]
    assert book.order_count() == 33


def test_fill_partial_and_full(book):
    """fill() reduces the head order, removes it when done, updates notional."""
    a, b = order(1, SELL, 50, 3), order(2, SELL, 50, 2)
    book.add(a)
    book.add(b)
    book.fill(a, 1)
    assert (a.leaves, a.filled, a.notional, a.visible) == (2, 1, 50, 2)
    book.fill(a, 2)
    assert book.best_order(SELL) is b
    assert book.levels(SELL) == [(50, 2, 1)]


def test_iceberg_fill_refreshes_at_the_back(book):
    """An exhausted iceberg display refreshes and requeues behind the level."""
    ice, other = order(1, SELL, 50, 5, ICE), order(2, SELL, 50, 1)
    book.add(ice)
    book.add(other)
    book.fill(ice, 2)
    assert [o.id for o in book.orders_at(SELL, 50)] == [2, 1]
    assert ice.visible == 2 and book.levels(SELL) == [(50, 3, 2)]


def test_restate_keeps_priority(book):
    """restate() lowers leaves and visible without moving the order."""
    a, b = order(1, BUY, 10, 5), order(2, BUY, 10, 5)
    book.add(a)
    book.add(b)
    book.restate(a, 2)
    assert [o.id for o in book.orders_at(BUY, 10)] == [1, 2]
    assert (a.qty, a.leaves) == (2, 2) and book.levels(BUY) == [(10, 7, 2)]


def test_drain_levels_reports_touched_levels_once(book):
    """drain_levels emits each touched level once, then nothing."""
    a = order(1, BUY, 10, 5)
    book.add(a)
    book.add(order(2, BUY, 10, 1))
    book.remove(a)
    out: list = []
    book.drain_levels(7, out)
    assert [(e.side, e.price, e.qty, e.count) for e in out] == [(BUY, 10, 1, 1)]
    out = []
    book.drain_levels(8, out)
    assert out == []


def test_fast_book_heap_stays_bounded():
    """Levels created and emptied far from the touch do not grow the price heap forever."""
    book = FastBook("X")
    book.add(order(0, BUY, 1_000, 1))
    for i in range(1, 5_000):
        o = order(i, BUY, 500 - (i % 400), 1)
        book.add(o)
        book.remove(o)
    assert len(book._bid_heap) <= 2 * len(book.bids) + 257
    assert book.best_bid == 1_000


def test_iter_crossing_yields_only_crossing_levels_best_first(book):
    """iter_crossing walks levels at or better than the limit, best first, both strategies."""
    for i, p in enumerate([100, 103, 110, 200]):
        book.add(order(i + 1, SELL, p, 1))
    for i, p in enumerate([90, 80, 79]):
        book.add(order(i + 10, BUY, p, 1))
    assert [lv[0].price for lv in book.iter_crossing(SELL, 105)] == [100, 103]
    assert [lv[0].price for lv in book.iter_crossing(SELL, 10_000)] == [100, 103, 110, 200]
    assert [lv[0].price for lv in book.iter_crossing(BUY, 80)] == [90, 80]
    assert [lv[0].price for lv in book.iter_crossing(BUY, 1)] == [90, 80, 79]
    assert list(book.iter_crossing(SELL, 99)) == []

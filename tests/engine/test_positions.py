"""PositionBook follows both sides of every trade: size, exact entry price, realised PnL, fees."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.enums import OrdType, Side
from engine.events import Trade
from engine.instruments import demo_instruments
from engine.positions import Position, PositionBook, apply_fill

_exec_ids = iter(range(1, 10**9))


def trade(
    price: int, qty: int, *, buyer: str = "B", seller: str = "S", aggressor: Side = Side.BUY,
    maker_fee: int = 0, taker_fee: int = 0, symbol: str = "BTC-PERP", ts: int = 1000,
) -> Trade:
    """A trade between ``buyer`` and ``seller``; the aggressor decides who is the taker."""
    taker, maker = (buyer, seller) if aggressor == Side.BUY else (seller, buyer)
    exec_id = next(_exec_ids)
    return Trade(
        exec_id, ts, exec_id, symbol, price, qty, aggressor,
        1, "m", maker, qty, 0, price * qty, maker_fee,
        2, "t", taker, qty, 0, price * qty, taker_fee, OrdType.LIMIT, price,
    )


def book(multiplier: int = 1) -> PositionBook:
    return PositionBook({"BTC-PERP": multiplier, "ETH-PERP": 1})


def test_unknown_account_is_flat() -> None:
    """An account that never traded has a flat zero position with entry price 0/1."""
    pos = book().position("X", "BTC-PERP")
    assert pos == Position("X", "BTC-PERP")
    assert pos.entry_price() == (0, 1)


def test_open_long_and_short_from_both_sides() -> None:
    """A trade opens a long for the buyer and a short for the seller, maker and taker alike."""
    b = book()
    maker, taker = b.apply_trade(trade(100, 5, aggressor=Side.SELL, maker_fee=-1, taker_fee=3))
    assert (maker.account, maker.size, maker.entry_notional, maker.fees) == ("B", 5, 500, -1)
    assert (taker.account, taker.size, taker.entry_notional, taker.fees) == ("S", -5, 500, 3)
    assert b.position("B", "BTC-PERP").entry_price() == (500, 5)
    assert b.position("S", "BTC-PERP").realised_pnl == 0


def test_add_keeps_exact_average() -> None:
    """Adding at another price averages exactly: 3 @ 100 + 4 @ 101 -> 704/7 ticks."""
    b = book()
    b.apply_trade(trade(100, 3))
    b.apply_trade(trade(101, 4))
    pos = b.position("B", "BTC-PERP")
    assert pos.size == 7
    assert pos.entry_price() == (704, 7)
    assert pos.realised_pnl == 0


def test_reduce_realises_pro_rata_and_keeps_remainder_cost() -> None:
    """Reducing realises the closed lots' share of the cost; the floor remainder stays open."""
    b = book(multiplier=10)
    b.apply_trade(trade(100, 3))
    b.apply_trade(trade(101, 4))  # 7 @ 704/7
    b.apply_trade(trade(110, 2, buyer="C", seller="B", aggressor=Side.SELL))
    pos = b.position("B", "BTC-PERP")
    closed_cost = 704 * 2 // 7  # 201
    assert pos.size == 5
    assert pos.entry_notional == 704 - closed_cost
    assert pos.realised_pnl == (110 * 2 - closed_cost) * 10


def test_close_realises_round_trip_exactly() -> None:
    """Closing in pieces realises exactly sell cash minus buy cash, times the multiplier."""
    b = book(multiplier=3)
    b.apply_trade(trade(100, 3))
    b.apply_trade(trade(101, 4))
    b.apply_trade(trade(110, 2, buyer="C", seller="B"))
    b.apply_trade(trade(95, 5, buyer="C", seller="B"))
    pos = b.position("B", "BTC-PERP")
    assert pos.size == 0 and pos.entry_notional == 0
    assert pos.realised_pnl == ((110 * 2 + 95 * 5) - (100 * 3 + 101 * 4)) * 3


def test_short_gains_when_price_falls() -> None:
    """A short closed lower realises a profit; its buy-back fee is added to the fees."""
    b = book()
    b.apply_trade(trade(100, 4, buyer="C", seller="S", taker_fee=2))
    b.apply_trade(trade(90, 4, buyer="S", seller="C", aggressor=Side.BUY, taker_fee=2))
    pos = b.position("S", "BTC-PERP")
    assert pos.size == 0
    assert pos.realised_pnl == 40
    assert pos.fees == 2  # the first trade's taker was buyer C (aggressor BUY)


def test_flip_long_to_short_opens_rest_at_fill_price() -> None:
    """A sell larger than the long closes it and opens a short of the rest at the fill price."""
    b = book()
    b.apply_trade(trade(100, 2))
    b.apply_trade(trade(105, 5, buyer="C", seller="B"))
    pos = b.position("B", "BTC-PERP")
    assert pos.size == -3
    assert pos.entry_price() == (315, 3)
    assert pos.realised_pnl == 10


def test_flip_short_to_long() -> None:
    """A buy larger than the short closes it (at a loss here) and opens a long."""
    b = book()
    b.apply_trade(trade(100, 2, buyer="C", seller="B"))
    b.apply_trade(trade(104, 3, buyer="B", seller="C"))
    pos = b.position("B", "BTC-PERP")
    assert pos.size == 1
    assert pos.entry_price() == (104, 1)
    assert pos.realised_pnl == -8


def test_self_trade_nets_to_no_position_but_pays_both_fees() -> None:
    """A trade with itself leaves the account flat and charges maker and taker fees."""
    b = book()
    b.apply_trade(trade(100, 2, buyer="A", seller="A", maker_fee=-1, taker_fee=5))
    pos = b.position("A", "BTC-PERP")
    assert (pos.size, pos.entry_notional, pos.realised_pnl, pos.fees) == (0, 0, 0, 4)


def test_version_and_time_follow_last_fill() -> None:
    """Each position carries the exec id and ts of the last fill applied to it."""
    b = book()
    t = trade(100, 1, ts=777)
    b.apply_trade(t)
    pos = b.position("B", "BTC-PERP")
    assert (pos.last_exec_id, pos.updated_ts) == (t.exec_id, 777)


def test_unknown_symbol_raises() -> None:
    """A trade in an instrument the book has no multiplier for is a KeyError, not a guess."""
    with pytest.raises(KeyError):
        book().apply_trade(trade(100, 1, symbol="DOGE-PERP"))


def test_snapshot_round_trips_through_msgpack() -> None:
    """to_dict is msgpack-able and from_dict rebuilds an equal book that keeps working."""
    b = PositionBook.for_instruments(demo_instruments())
    b.apply_trade(trade(100, 3))
    b.apply_trade(trade(101, 1, buyer="C", seller="B", symbol="ETH-PERP"))
    packed = msgpack.packb(b.to_dict())
    restored = PositionBook.from_dict(msgpack.unpackb(packed, strict_map_key=False))
    assert restored.positions() == b.positions()
    assert restored.to_dict() == b.to_dict()
    t = trade(99, 3, buyer="C", seller="B")
    assert restored.apply_trade(t) == b.apply_trade(t)


fills = st.lists(
    st.tuples(st.sampled_from([Side.BUY, Side.SELL]), st.integers(1, 10_000),
              st.integers(1, 50)),
    max_size=40,
)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(fills, st.integers(1, 10_000), st.integers(1, 5))
def test_total_pnl_equals_cash_flow(fill_list, mark: int, multiplier: int) -> None:
    """Realised plus unrealised PnL at any mark equals the fills' cash flow, exactly."""
    pos = Position("A", "X")
    cash = 0
    for i, (side, price, qty) in enumerate(fill_list):
        pos = apply_fill(pos, side, price, qty, 0, multiplier, i, i)
        cash += (-price * qty) if side == Side.BUY else price * qty
    assert pos.entry_notional >= 0
    if pos.size == 0:
        assert pos.entry_notional == 0
    direction = 1 if pos.size > 0 else -1
    unrealised = direction * (mark * abs(pos.size) - pos.entry_notional) * multiplier
    assert pos.realised_pnl + unrealised == (cash + pos.size * mark) * multiplier

"""Shared fixtures: an engine driver parametrized over the fast and the reference book."""

from __future__ import annotations

from typing import Any

import pytest

from engine import (
    CancelOrder,
    FastBook,
    MassCancel,
    MatchingEngine,
    NewOrder,
    ReferenceBook,
    ReplaceOrder,
    SetAccountStp,
    SetInstrumentStatus,
    SetPosition,
    Side,
    Tick,
    demo_instruments,
)

BTC = "BTC-PERP"
ETH = "ETH-PERP"
REF = 600_000  # BTC demo reference price (ticks); band is +-5%: [570000, 630000]
BUY, SELL = Side.BUY, Side.SELL


class Driver:
    """Builds commands with increasing seq/ts and feeds them to one engine."""

    def __init__(self, book_factory: Any, **kw: Any) -> None:
        self.eng = MatchingEngine(demo_instruments(), book_factory=book_factory, **kw)
        self.seq = 0
        self.ts = 1_000_000_000

    def _next(self) -> tuple[int, int]:
        self.seq += 1
        self.ts += 1_000
        return self.seq, self.ts

    def run(self, cmd: Any) -> list:
        """Process one command."""
        return self.eng.process(cmd)

    def new(self, account: str, side: Side, qty: int, price: int = 0, **kw: Any) -> list:
        """Enter an order; its id is ``self.seq`` afterwards."""
        seq, ts = self._next()
        symbol = kw.pop("symbol", BTC)
        kw.setdefault("cl_ord_id", f"c{seq}")
        return self.eng.process(NewOrder(seq, ts, account, symbol, side, qty, price, **kw))

    def cancel(self, account: str, order_id: int, **kw: Any) -> list:
        seq, ts = self._next()
        return self.eng.process(CancelOrder(seq, ts, account, order_id, **kw))

    def replace(self, account: str, order_id: int, qty: int, price: int, **kw: Any) -> list:
        seq, ts = self._next()
        return self.eng.process(ReplaceOrder(seq, ts, account, order_id, qty, price, **kw))

    def mass_cancel(self, **kw: Any) -> list:
        seq, ts = self._next()
        return self.eng.process(MassCancel(seq, ts, **kw))

    def status(self, status: Any, symbol: str = BTC) -> list:
        seq, ts = self._next()
        return self.eng.process(SetInstrumentStatus(seq, ts, symbol, status))

    def position(self, account: str, pos: int, symbol: str = BTC) -> list:
        seq, ts = self._next()
        return self.eng.process(SetPosition(seq, ts, account, symbol, pos))

    def account_stp(self, account: str, mode: Any) -> list:
        seq, ts = self._next()
        return self.eng.process(SetAccountStp(seq, ts, account, mode))

    def tick(self, ts: int) -> list:
        self.seq += 1
        self.ts = max(self.ts, ts)
        return self.eng.process(Tick(self.seq, ts))

    def book(self, symbol: str = BTC) -> Any:
        return self.eng.book(symbol)


def of(events: list, cls: type) -> list:
    """The events of one class, in order."""
    return [e for e in events if type(e) is cls]


@pytest.fixture(params=[FastBook, ReferenceBook], ids=["fast", "reference"])
def book_factory(request: Any) -> Any:
    """Each engine test runs on both books."""
    return request.param


@pytest.fixture
def d(book_factory: Any) -> Driver:
    """A driver over a fresh demo engine."""
    return Driver(book_factory)

"""Margined demo instruments and a driver for risk tests."""

from __future__ import annotations

from typing import Any

import attr

from engine import MatchingEngine, demo_instruments
from engine.book import FastBook
from engine.commands import (
    AdjustIsolatedMargin,
    CancelOrder,
    Deposit,
    NewOrder,
    ReplaceOrder,
    SetIndexPrice,
    SetLeverage,
    SetMarginMode,
    Tick,
    Withdraw,
)
from engine.enums import MarginMode, Side
from engine.instruments import Instrument

BTC, ETH = "BTC-PERP", "ETH-PERP"
USDT = 1_000_000  # minor units per USDT (6 decimals)
TIERS = ((50_000_000_000, 5_000, 100), (250_000_000_000, 10_000, 50),
         (10_000_000_000_000, 50_000, 10))
BUY, SELL = Side.BUY, Side.SELL
SECOND = 1_000_000_000


def margined_instruments(**kw: Any) -> list[Instrument]:
    """The demo instruments with risk parameters (100x max, 10x default, Binance-like tiers)."""
    params = dict(max_leverage=100, default_leverage=10, risk_tiers=TIERS, mark_smoothing=4)
    params.update(kw)
    return [attr.evolve(i, **params) for i in demo_instruments()]


class RiskDriver:
    """Builds commands with increasing seq/ts (one second apart) and runs them."""

    def __init__(self, book_factory: Any = FastBook, **kw: Any) -> None:
        self.eng = MatchingEngine(margined_instruments(**kw), book_factory=book_factory)
        self.seq = 0
        self.ts = 1_000 * SECOND

    def run(self, cls: Any, *args: Any, **kw: Any) -> list:
        self.seq += 1
        self.ts += SECOND
        return self.eng.process(cls(self.seq, self.ts, *args, **kw))

    def deposit(self, acct: str, usdt: int) -> list:
        return self.run(Deposit, acct, "USDT", usdt * USDT)

    def run_deposit(self, acct: str, usdt: int) -> list:
        """Deposit to any account, the insurance fund included."""
        return self.run(Deposit, acct, "USDT", usdt * USDT)

    def withdraw(self, acct: str, amount: int) -> list:
        return self.run(Withdraw, acct, "USDT", amount)

    def order(self, acct: str, side: Side, qty: int, price: int, sym: str = BTC,
              **kw: Any) -> list:
        return self.run(NewOrder, acct, sym, side, qty, price, **kw)

    def cancel(self, acct: str, oid: int) -> list:
        return self.run(CancelOrder, acct, oid)

    def replace(self, acct: str, oid: int, qty: int, price: int) -> list:
        return self.run(ReplaceOrder, acct, oid, qty, price)

    def leverage(self, acct: str, lev: int, sym: str = BTC) -> list:
        return self.run(SetLeverage, acct, sym, lev)

    def mode(self, acct: str, mode: MarginMode, sym: str = BTC) -> list:
        return self.run(SetMarginMode, acct, sym, mode)

    def iso(self, acct: str, amount: int, sym: str = BTC) -> list:
        return self.run(AdjustIsolatedMargin, acct, sym, amount)

    def index(self, price: int, sym: str = BTC) -> list:
        return self.run(SetIndexPrice, sym, price)

    def tick(self) -> list:
        return self.run(Tick)

    def view(self, acct: str) -> Any:
        return self.eng.risk.view(acct, "USDT")


def of(events: list, cls: type) -> list:
    """The events of one class."""
    return [e for e in events if type(e) is cls]

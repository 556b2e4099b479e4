"""Random but reproducible order flow for the feed tests and the WebSocket benchmark."""

from __future__ import annotations

import random
from collections.abc import Iterator

from engine.commands import CancelOrder, NewOrder, ReplaceOrder
from engine.enums import OrdType, Side, TimeInForce
from engine.instruments import Instrument


class OrderFlow:
    """Commands around each instrument's reference price: limits, cancels, replaces, markets.

    ``seq`` and ``ts`` are stamped here (the sequencer's job in the server); ``ts`` comes from
    the caller so that tests use engine time and the benchmark uses wall time.
    """

    def __init__(self, instruments: list[Instrument], seed: int = 1, spread_ticks: int = 40):
        self.rng = random.Random(seed)
        self.instruments = instruments
        self.spread = spread_ticks
        self.seq = 0
        self.live: list[tuple[int, str]] = []  # (order id, account), may include dead ones

    def next_command(self, ts: int) -> object:
        """One command stamped with the next seq and ``ts``."""
        rng = self.rng
        self.seq += 1
        seq = self.seq
        inst = rng.choice(self.instruments)
        roll = rng.random()
        if self.live and roll < 0.25:
            order_id, account = self.live.pop(rng.randrange(len(self.live)))
            return CancelOrder(seq, ts, account, order_id)
        if self.live and roll < 0.32:
            order_id, account = self.live[rng.randrange(len(self.live))]
            price = inst.reference_price + rng.randint(-self.spread, self.spread)
            return ReplaceOrder(seq, ts, account, order_id, rng.randint(1, 20), price)
        account = f"acct{rng.randint(1, 8)}"
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        qty = rng.randint(1, 30)
        if roll < 0.40:
            return NewOrder(seq, ts, account, inst.symbol, side, qty, ord_type=OrdType.MARKET,
                            tif=TimeInForce.IOC)
        # Limit orders lean to their own side of the reference, so the book has depth and
        # a fraction of them cross.
        offset = rng.randint(-self.spread // 4, self.spread)
        price = inst.reference_price - offset if side is Side.BUY else inst.reference_price + offset
        self.live.append((seq, account))
        if len(self.live) > 400:
            del self.live[: len(self.live) - 400]
        return NewOrder(seq, ts, account, inst.symbol, side, qty, price=price)

    def commands(self, n: int, ts0: int, step_ns: int) -> Iterator[object]:
        """``n`` commands with ts advancing by ``step_ns`` from ``ts0``."""
        for i in range(n):
            yield self.next_command(ts0 + i * step_ns)

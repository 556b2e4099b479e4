"""The risk engine's mutable records: accounts (collateral per asset), positions, marks.

Small ``__slots__`` classes, owned by :class:`engine.risk.book.RiskBook`; nothing else
changes them. All money is minor units of the settlement asset, prices ticks, sizes lots.
"""

from __future__ import annotations

from engine.enums import MarginMode


class RiskPosition:
    """One account's position and live-order aggregates in one margined instrument.

    ``buy_qty``/``buy_cost`` (and the sell pair) sum the leaves and leaves*price of the
    account's working orders there, so the order margin is O(1) to recompute; ``om`` is the
    order margin currently counted in the account's total.
    """

    __slots__ = (
        "account", "asset", "buy_cost", "buy_qty", "entry_cost", "fees", "iso", "key",
        "last_exec_id", "leverage", "mode", "om", "owner", "realised", "sell_cost", "sell_qty",
        "size", "symbol",
    )

    def __init__(self, account: str, symbol: str, asset: str, leverage: int,
                 owner: RiskAccount) -> None:
        self.owner = owner  # the account record (collateral in ``asset``) it belongs to
        self.key = (account, symbol)
        self.account = account
        self.symbol = symbol
        self.asset = asset
        self.size = 0
        self.entry_cost = 0  # ticks*lots, >= 0
        self.realised = 0
        self.fees = 0  # charged minus rebated
        self.leverage = leverage
        self.mode = MarginMode.CROSS
        self.iso = 0  # isolated margin (part of the account's balance)
        self.buy_qty = 0
        self.buy_cost = 0
        self.sell_qty = 0
        self.sell_cost = 0
        self.om = 0
        self.last_exec_id = 0

    def as_row(self) -> list:
        """The persistent fields (snapshots, hashing); aggregates are rebuilt from orders."""
        return [self.account, self.symbol, self.asset, self.size, self.entry_cost,
                self.realised, self.fees, self.leverage, int(self.mode), self.iso,
                self.last_exec_id]

    @property
    def isolated(self) -> bool:
        """True for an isolated-margin position."""
        return self.mode is MarginMode.ISOLATED

    def idle(self) -> bool:
        """No position and no working orders."""
        return not (self.size or self.buy_qty or self.sell_qty)


class RiskAccount:
    """An account's collateral in one settlement asset and its positions settling in it.

    ``gen`` caches the cross valuation (``upnl``, ``im``, ``mm``): it equals the book's mark
    generation when they are current, -1 after a fill or settings change.
    """

    __slots__ = ("account", "asset", "balance", "gen", "im", "iso_total", "key", "mm",
                 "om_total", "positions", "upnl")

    def __init__(self, account: str, asset: str) -> None:
        self.key = (account, asset)
        self.account = account
        self.asset = asset
        self.balance = 0
        self.iso_total = 0
        self.om_total = 0
        self.positions: dict[str, RiskPosition] = {}
        self.gen = -1
        self.upnl = 0
        self.im = 0
        self.mm = 0


class MarkState:
    """Index and mark of one instrument. ``ema`` is the smoothed basis (mark - index) in
    ticks; ``last_ts`` when the mark was last recomputed."""

    __slots__ = ("ema", "index", "index_ts", "last_ts", "mark", "next_ts", "rate")

    def __init__(self) -> None:
        self.index = 0
        self.index_ts = 0
        self.ema = 0
        self.mark = 0
        self.last_ts = 0
        self.rate = 0  # the predicted funding rate last published (1e-8)
        self.next_ts = 0  # the next funding instant last published

    def as_row(self) -> list:
        """Fields for snapshots."""
        return [self.index, self.index_ts, self.ema, self.mark, self.last_ts, self.rate,
                self.next_ts]

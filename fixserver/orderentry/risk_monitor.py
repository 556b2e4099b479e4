"""RiskMonitor: the server's durable view of collateral, positions, marks and index ages.

Theory of operation
-------------------
Readers outside the engine (the admin API's account view, ``/health``, metrics) must show
what has been journaled, never the live engine, which runs ahead of the disk. The monitor
is built at start-up from the engine *as recovered* (snapshot + journal replay: everything
in it is durable, and no new tick has run yet) and then follows the pipeline's released
ticks (:meth:`on_released`), feeding a :class:`engine.risk.readmodel.RiskReadModel` and
noting, by the server's clock (``now``, seconds), when each instrument's index price last
moved. Sans-IO: no Twisted, time is a callable; the gauge is set when :meth:`publish_metrics`
is called (the wiring's timer).

Index age: seconds since the last released IndexPriceUpdated of a margined instrument; one
with no index since this process started counts from its start (or its listing), as the
server cannot know better. Past ``stale_after`` seconds it is *stale* (``/health`` says
degraded and names it): the marks, and with them margin calls, follow a frozen index.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable

from prometheus_client import Gauge

from engine.events import (
    IndexPriceUpdated,
    InstrumentConfigured,
)
from engine.instruments import Instrument
from engine.risk.readmodel import RiskReadModel
from fixserver.orderentry.reports import money

INDEX_AGE = Gauge("index_price_age_seconds",
                  "Seconds since the last index price of each margined instrument (server "
                  "clock; since start-up or listing if none came since)", ["symbol"])
INDEX_STALE = Gauge("index_price_stale",
                    "1 if the instrument's index price is older than IndexStaleSeconds",
                    ["symbol"])


class RiskMonitor:
    """See the module docstring. ``engine`` is the engine as recovered (read once)."""

    def __init__(self, engine: Any, now: Callable[[], float], stale_after: float) -> None:
        self.now = now
        self.stale_after = stale_after
        self.instruments: dict[str, Instrument] = {}
        #: settlement asset -> decimals (of the margined instruments)
        self.assets: dict[str, int] = {}
        #: margined symbol -> server time of its last index price (or start-up / listing)
        self.index_seen: dict[str, float] = {}
        #: symbol -> the last durable index price (ticks)
        self.index: dict[str, int] = {}
        self.model = RiskReadModel()
        for inst in engine.instruments:
            self._instrument(inst)
        self.model.seed(engine)
        for symbol, (index, _mark) in engine.marks().items():
            if index:
                self.index[symbol] = index

    def _instrument(self, inst: Instrument) -> None:
        self.instruments[inst.symbol] = inst
        self.model.instrument(inst)
        if inst.margined:
            self.assets.setdefault(inst.settlement_asset, inst.settlement_decimals)
            self.index_seen.setdefault(inst.symbol, self.now())
        else:
            if self.index_seen.pop(inst.symbol, None) is not None:
                for gauge in (INDEX_AGE, INDEX_STALE):
                    try:
                        gauge.remove(inst.symbol)
                    except KeyError:  # never published
                        pass

    def on_released(self, processed: list) -> None:
        """Pipeline subscriber: apply a durable tick's events."""
        apply = self.model.apply
        for p in processed:
            for e in p.events:
                t = type(e)
                if t is IndexPriceUpdated:
                    self.index[e.symbol] = e.price
                    if e.symbol in self.index_seen:
                        self.index_seen[e.symbol] = self.now()
                elif t is InstrumentConfigured:
                    self._instrument(e.instrument)
                    continue  # _instrument fed the read model
                apply(e)

    # -- reads ------------------------------------------------------------------------------

    def index_ages(self) -> dict[str, float]:
        """Margined symbol -> seconds since its last index price (server clock)."""
        now = self.now()
        return {s: max(0.0, now - t) for s, t in sorted(self.index_seen.items())}

    def stale_symbols(self) -> list[str]:
        """Margined symbols whose index is older than ``stale_after`` seconds (sorted)."""
        return [s for s, age in self.index_ages().items() if age > self.stale_after]

    def health_degraded(self) -> dict[str, object] | None:
        """What makes ``/health`` degraded (None: nothing)."""
        stale = self.stale_symbols()
        if not stale:
            return None
        return {"stale_index": stale, "index_stale_seconds": self.stale_after}

    def publish_metrics(self) -> None:
        """Set the index age gauges (called by a timer)."""
        for symbol, age in self.index_ages().items():
            INDEX_AGE.labels(symbol).set(age)
            INDEX_STALE.labels(symbol).set(1 if age > self.stale_after else 0)

    # -- rendering (decimal strings at the edge) --------------------------------------------

    def money(self, asset: str, minor: int) -> str:
        """Minor units of ``asset`` as a decimal string of asset units (plain notation:
        ``0.00000001``, never ``1E-8``)."""
        return money(minor, self.assets.get(asset, 0))

    def account(self, account: str) -> dict[str, Any]:
        """The account's collateral per asset and its positions, as JSON-able decimals."""
        assets = sorted(set(self.model.assets_of(account)))
        out: list[dict[str, Any]] = []
        positions: list[dict[str, Any]] = []
        for asset in assets:
            view, rows = self.model.view(account, asset)
            m = self.money
            out.append({
                "asset": asset, "balance": m(asset, view.balance),
                "equity": m(asset, view.equity), "available": m(asset, view.available),
                "withdrawable": m(asset, view.withdrawable),
                "unrealised_pnl": m(asset, view.unrealised_pnl),
                "initial_margin": m(asset, view.initial_margin),
                "maintenance_margin": m(asset, view.maintenance_margin),
                "order_margin": m(asset, view.order_margin),
                "isolated_margin": m(asset, view.isolated_margin),
                "margin_ratio": format(Decimal(view.margin_ratio_ppm).scaleb(-6), "f"),
            })
            for v in rows:
                inst = self.instruments[v.symbol]
                entry = (inst.avg_price(v.entry_cost, abs(v.size)) if v.size else "0")
                positions.append({
                    "symbol": v.symbol, "asset": asset, "size": inst.lots_to_qty(v.size),
                    "entry_price": entry, "mark_price": inst.ticks_to_price(v.mark),
                    "leverage": v.leverage, "margin_mode": v.mode.name.lower(),
                    "isolated_margin": m(asset, v.isolated_margin),
                    "notional": m(asset, v.notional),
                    "unrealised_pnl": m(asset, v.unrealised_pnl),
                    "realised_pnl": m(asset, v.realised_pnl), "fees": m(asset, v.fees),
                    "initial_margin": m(asset, v.initial_margin),
                    "maintenance_margin": m(asset, v.maintenance_margin),
                    "liquidation_price": (inst.ticks_to_price(v.liquidation_price)
                                          if v.liquidation_price else None),
                })
        return {"account": account, "collateral": out, "positions": positions}

    def marks(self, symbol: str) -> dict[str, Any]:
        """The symbol's durable index and mark (decimal strings; None before the first)."""
        inst = self.instruments[symbol]
        index = self.index.get(symbol)
        mark = self.model.marks.get(symbol)
        return {"index": inst.ticks_to_price(index) if index else None,
                "mark": inst.ticks_to_price(mark) if mark else None}

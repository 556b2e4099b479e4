"""LiquidationMonitor: liquidations, margin calls, the insurance fund and funding as released.

Theory of operation
-------------------
Like :class:`~fixserver.orderentry.risk_monitor.RiskMonitor`, this follows the pipeline's
released (durable) ticks, never the live engine. It keeps the Prometheus metrics of
"Futures risk II" and the insurance fund's recent ledger for the admin API
(``GET /admin/insurance-fund``):

- counters by symbol: ``liquidations_total`` (liquidation steps, each one liquidation order),
  ``liquidation_fills_total`` (steps the book filled, wholly or partly),
  ``liquidation_takeovers_total`` and ``liquidation_adl_total`` (``PositionTransferred``
  TAKEOVER by the fund, ADL against one counterparty each), and
  ``liquidation_closed_qty_total{symbol,via}`` (contracts closed: via book, takeover, adl);
  ``margin_calls_total{level}`` (the level crossed: maintenance margin over equity, "0.8");
- gauges: ``insurance_fund_balance{asset}`` (asset units), ``funding_rate{symbol}`` (the last
  applied rate, a fraction: 0.0001 = 0.01%), ``predicted_funding_rate{symbol}`` (the rate if
  funding were now, from MarkPriceUpdated) and ``next_funding_timestamp_seconds{symbol}``.

Per released event the cost is one dict lookup on its type; only the kinds above have a
handler, and each handler is an increment or a gauge set through a cached labelled child
(``labels()`` takes a lock and builds a tuple per call). ``BalanceChanged`` is the one
frequent kind handled: its handler compares the account with the fund's and returns.

At start-up the monitor is seeded from the engine as recovered (everything in it is durable):
the fund's balances, the predicted rates and next funding instants
(``RiskBook.state_events``), and the fund's ledger entries of the replayed journal tail
(:meth:`remember`). Counters and ``funding_rate`` start empty in a new process, as Prometheus
counters do; Postgres (``insurance_fund_ledger``, ``funding_rates``) has the whole history.
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal
from typing import Any, Callable

from prometheus_client import Counter, Gauge

from engine.enums import TransferKind
from engine.events import (
    AccountChanged,
    BalanceChanged,
    FundingApplied,
    InstrumentConfigured,
    Liquidated,
    MarginCall,
    MarkPriceUpdated,
    PositionTransferred,
)
from engine.instruments import Instrument
from engine.risk.accounts import INSURANCE
from fixserver.orderentry.reports import money
from fixserver.pg.units import ns_to_datetime

LIQUIDATIONS = Counter("liquidations", "Liquidation steps (one engine liquidation order each)",
                       ["symbol"])
LIQUIDATION_FILLS = Counter("liquidation_fills",
                            "Liquidation steps the book filled, wholly or partly", ["symbol"])
LIQUIDATION_TAKEOVERS = Counter("liquidation_takeovers",
                                "Positions taken over by the insurance fund at the bankruptcy "
                                "price (PositionTransferred TAKEOVER)", ["symbol"])
LIQUIDATION_ADL = Counter("liquidation_adl",
                          "Auto-deleveraging transfers, one per counterparty reduced "
                          "(PositionTransferred ADL)", ["symbol"])
LIQUIDATION_CLOSED_QTY = Counter("liquidation_closed_qty",
                                 "Contracts closed by liquidation: via the book, taken over by "
                                 "the fund, or auto-deleveraged", ["symbol", "via"])
MARGIN_CALLS = Counter("margin_calls",
                       "Margin calls (an account's or isolated position's maintenance margin "
                       "reached this fraction of its equity)", ["level"])
INSURANCE_FUND = Gauge("insurance_fund_balance",
                       "The insurance fund's balance (account ~INSURANCE), in asset units",
                       ["asset"])
FUNDING_RATE = Gauge("funding_rate",
                     "The last applied funding rate (fraction: 0.0001 = 0.01%; positive: "
                     "longs pay shorts)", ["symbol"])
PREDICTED_FUNDING_RATE = Gauge("predicted_funding_rate",
                               "The funding rate the premium so far gives (fraction), as of "
                               "the last mark", ["symbol"])
NEXT_FUNDING = Gauge("next_funding_timestamp_seconds",
                     "The next funding instant (Unix seconds)", ["symbol"])

#: fund ledger entries kept per asset for the admin API
LEDGER_SIZE = 1000
_E8 = 100_000_000
_NS = 1_000_000_000


def _cached(metric: Any) -> Callable[..., Any]:
    """``metric.labels`` memoised per label values (the label sets are bounded: symbols,
    assets, configured levels)."""
    children: dict[tuple[str, ...], Any] = {}

    def child(*values: str) -> Any:
        c = children.get(values)
        if c is None:
            c = children[values] = metric.labels(*values)
        return c

    return child


class LiquidationMonitor:
    """See the module docstring. ``engine``: the engine as recovered (read once)."""

    def __init__(self, engine: Any, ledger_size: int = LEDGER_SIZE) -> None:
        #: settlement asset -> decimals (of the margined instruments)
        self.assets: dict[str, int] = {}
        #: asset -> the fund's balance (minor units), as released
        self.fund_balance: dict[str, int] = {}
        #: asset -> the fund's most recent BalanceChanged events, oldest first
        self.fund_ledger: dict[str, deque[BalanceChanged]] = {}
        self.ledger_size = ledger_size
        self._liquidations = _cached(LIQUIDATIONS)
        self._fills = _cached(LIQUIDATION_FILLS)
        self._takeovers = _cached(LIQUIDATION_TAKEOVERS)
        self._adl = _cached(LIQUIDATION_ADL)
        self._closed = _cached(LIQUIDATION_CLOSED_QTY)
        self._calls = _cached(MARGIN_CALLS)
        self._fund = _cached(INSURANCE_FUND)
        self._rate = _cached(FUNDING_RATE)
        self._predicted = _cached(PREDICTED_FUNDING_RATE)
        self._next = _cached(NEXT_FUNDING)
        self._levels: dict[int, str] = {}
        self._lots: dict[str, float] = {}  # symbol -> contracts per lot
        self._handlers: dict[type, Callable[[Any], None]] = {
            Liquidated: self._liquidated,
            PositionTransferred: self._transferred,
            MarginCall: self._margin_call,
            BalanceChanged: self._balance_changed,
            FundingApplied: self._funding_applied,
            MarkPriceUpdated: self._mark,
            InstrumentConfigured: lambda e: self._instrument(e.instrument),
        }
        for inst in engine.instruments:
            self._instrument(inst)
        for e in engine.risk.state_events():  # seq 0: the state the journal sums up
            t = type(e)
            if t is AccountChanged and e.account == INSURANCE:
                self._set_fund(e.asset, e.balance)
            elif t is MarkPriceUpdated:
                self._mark(e)

    def _instrument(self, inst: Instrument) -> None:
        self._lots[inst.symbol] = float(Decimal(inst.lot_size))
        if inst.margined:
            asset = inst.settlement_asset
            self.assets.setdefault(asset, inst.settlement_decimals)
            if asset not in self.fund_balance:  # an empty fund is 0, not a missing series
                self._set_fund(asset, 0)

    # -- released events --------------------------------------------------------------------

    def on_released(self, processed: list) -> None:
        """Pipeline subscriber: a durable tick's events."""
        handlers = self._handlers
        for p in processed:
            for e in p.events:
                handler = handlers.get(type(e))
                if handler is not None:
                    handler(e)

    def remember(self, processed: list) -> None:
        """The fund's ledger entries of ``processed`` (the replayed tail at start-up: its
        state is already in the recovered engine, and no metric counts it again)."""
        for p in processed:
            for e in p.events:
                if type(e) is BalanceChanged and e.account == INSURANCE:
                    self._ledger(e.asset).append(e)

    def _liquidated(self, e: Liquidated) -> None:
        symbol = e.symbol
        self._liquidations(symbol).inc()
        lot = self._lots.get(symbol, 1.0)
        if e.filled:
            self._fills(symbol).inc()
            self._closed(symbol, "book").inc(e.filled * lot)
        if e.taken_over:
            self._closed(symbol, "takeover").inc(e.taken_over * lot)
        if e.deleveraged:
            self._closed(symbol, "adl").inc(e.deleveraged * lot)

    def _transferred(self, e: PositionTransferred) -> None:
        if e.kind == TransferKind.TAKEOVER:
            self._takeovers(e.symbol).inc()
        else:
            self._adl(e.symbol).inc()

    def _margin_call(self, e: MarginCall) -> None:
        level = self._levels.get(e.level_ppm)
        if level is None:
            level = self._levels[e.level_ppm] = str(
                (Decimal(e.level_ppm) / 1_000_000).normalize())
        self._calls(level).inc()

    def _balance_changed(self, e: BalanceChanged) -> None:
        if e.account != INSURANCE:
            return
        self._ledger(e.asset).append(e)
        self._set_fund(e.asset, e.balance)

    def _funding_applied(self, e: FundingApplied) -> None:
        self._rate(e.symbol).set(e.rate_e8 / _E8)
        self._next(e.symbol).set(e.next_funding_ts / _NS)

    def _mark(self, e: MarkPriceUpdated) -> None:
        if not e.next_funding_ts:  # an unmargined instrument: no funding
            return
        self._predicted(e.symbol).set(e.funding_rate_e8 / _E8)
        self._next(e.symbol).set(e.next_funding_ts / _NS)

    def _ledger(self, asset: str) -> deque[BalanceChanged]:
        ledger = self.fund_ledger.get(asset)
        if ledger is None:
            ledger = self.fund_ledger[asset] = deque(maxlen=self.ledger_size)
        return ledger

    def _set_fund(self, asset: str, balance: int) -> None:
        self.fund_balance[asset] = balance
        # a float is fine for a gauge; the exact amount is in the admin API and Postgres
        self._fund(asset).set(balance / 10 ** self.assets.get(asset, 0))

    # -- reads ------------------------------------------------------------------------------

    def money(self, asset: str, minor: int) -> str:
        """Minor units of ``asset`` as a decimal string of asset units (plain notation:
        ``0.00000001``, never ``1E-8``)."""
        return money(minor, self.assets.get(asset, 0))

    def ledger_entries(self, asset: str, limit: int) -> list[dict[str, Any]]:
        """The fund's last ``limit`` ledger entries in ``asset``, newest first (JSON-able)."""
        entries = list(self.fund_ledger.get(asset, ()))[-limit:] if limit > 0 else []
        money = self.money
        out = []
        for e in reversed(entries):
            out.append({"seq": e.seq, "ts": ns_to_datetime(e.ts).isoformat(),
                        "amount": money(asset, e.amount), "balance": money(asset, e.balance),
                        "cause": getattr(e.cause, "name", str(e.cause)), "symbol": e.symbol,
                        "ref": e.ref})
        return out

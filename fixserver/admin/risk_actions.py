"""The admin API's risk actions: collateral, leverage, margin mode, isolated margin, index.

Each change is the engine's own command (Deposit, Withdraw, SetLeverage, SetMarginMode,
AdjustIsolatedMargin, SetIndexPrice) journaled with the operator in its origin
(``("", "A", who, action)``), like every admin change (:mod:`fixserver.admin.actions`); the
answer waits until the command's tick is durable and released, and says what the engine
did: the new balance, the position's settings, or the engine's refusal (HTTP 409 with
``reason`` and, for margin, ``shortfall`` in asset units). Amounts and prices are decimal
strings in asset units and instrument prices, converted exactly to minor units and ticks
(anything finer is refused 400, never rounded). Reads (an account's collateral and
positions, the index and mark prices) come from the server's
:class:`~fixserver.orderentry.risk_monitor.RiskMonitor`, which follows released events: an
answer never shows what is not yet durable. Each action first waits until every tick
matched so far is released (:meth:`RiskAdmin._settled`): the monitor then knows what the
exchange has done up to the request (at start-up, the configured instruments and funding),
so a read follows the operator's earlier changes and a check never sees a stale listing.

The insurance fund is the engine's account ``~INSURANCE`` (:data:`engine.risk.accounts.
INSURANCE`, one balance per settlement asset). It belongs to no firm, yet deposit, withdraw
and account take it, so an operator funds it with an ordinary journaled ``Deposit``;
``GET /admin/insurance-fund`` shows its balance, the positions it took over and its recent
ledger entries (:class:`~fixserver.orderentry.liquidation_monitor.LiquidationMonitor`,
released events; the whole ledger is Postgres' ``insurance_fund_ledger``). Leverage, margin
mode and isolated margin are refused for it: it never trades.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred

from engine.commands import (
    AdjustIsolatedMargin,
    Deposit,
    SetIndexPrice,
    SetLeverage,
    SetMarginMode,
    Withdraw,
)
from engine.enums import MarginMode
from engine.events import BalanceChanged, RequestRejected, RiskSettingsChanged
from engine.instruments import Instrument, OffGridError
from engine.risk.accounts import INSURANCE
from fixserver.admin.actions import PipelineControl, ReleaseWatch
from fixserver.admin.router import AdminCall, AdminError, AdminRouter, Answer
from fixserver.funding_config import to_minor_units
from fixserver.orderentry.firms import FirmDirectory
from fixserver.orderentry.ownership import origin

MARGIN_MODES = {"cross": MarginMode.CROSS, "isolated": MarginMode.ISOLATED}


class RiskViews(Protocol):
    """What the actions read (:class:`fixserver.orderentry.risk_monitor.RiskMonitor`)."""

    instruments: dict[str, Instrument]
    assets: dict[str, int]

    def money(self, asset: str, minor: int) -> str: ...

    def account(self, account: str) -> dict[str, Any]: ...

    def marks(self, symbol: str) -> dict[str, Any]: ...

    def index_ages(self) -> dict[str, float]: ...

    def stale_symbols(self) -> list[str]: ...


class FundLedger(Protocol):
    """The insurance fund's recent ledger
    (:class:`fixserver.orderentry.liquidation_monitor.LiquidationMonitor`)."""

    ledger_size: int

    def ledger_entries(self, asset: str, limit: int) -> list[dict[str, Any]]: ...


class RiskAdmin:
    """The risk actions (see module docstring); :meth:`add_routes` puts them in the table."""

    def __init__(self, pipeline: PipelineControl, directory: FirmDirectory, views: RiskViews,
                 released: ReleaseWatch, fund: FundLedger) -> None:
        self.pipeline = pipeline
        self.directory = directory
        self.views = views
        self.released = released
        self.fund = fund

    def add_routes(self, r: AdminRouter) -> None:
        """One line per action."""
        s = self._settled
        r.add("POST", "/admin/accounts/deposit", "deposit",
              "credit an account's collateral (amount in asset units, e.g. 2500.5); account "
              f"{INSURANCE} funds the insurance fund",
              s(self.deposit), ("account", "asset", "amount", "ref"))
        r.add("POST", "/admin/accounts/withdraw", "withdraw",
              "debit an account's collateral (refused below its margin requirement)",
              s(self.withdraw), ("account", "asset", "amount", "ref"))
        r.add("POST", "/admin/accounts/leverage", "leverage",
              "set an account's leverage in a margined instrument", s(self.set_leverage),
              ("account", "symbol", "leverage"))
        r.add("POST", "/admin/accounts/margin-mode", "margin-mode",
              "set an account's margin mode in an instrument: cross or isolated (only with "
              "nothing open there)", s(self.set_margin_mode), ("account", "symbol", "mode"))
        r.add("POST", "/admin/accounts/isolated-margin", "isolated-margin",
              "add margin to an isolated position (amount > 0) or remove it (amount < 0)",
              s(self.adjust_isolated), ("account", "symbol", "amount"))
        r.add("GET", "/admin/accounts/risk", "account",
              "an account's collateral and margin per asset, and its positions",
              s(self.show_account), ("account",))
        r.add("POST", "/admin/index", "index-price",
              "set an instrument's index price (the mark follows it)", s(self.set_index),
              ("symbol", "price"))
        r.add("GET", "/admin/index", "marks",
              "index and mark prices, and how old each index price is", s(self.list_marks))
        r.add("GET", "/admin/insurance-fund", "insurance-fund",
              f"the insurance fund ({INSURANCE}): balance per settlement asset, positions "
              "taken over, recent ledger entries (newest first)", s(self.show_insurance_fund),
              ("asset", "limit"))

    def _settled(self, handler: Callable[[AdminCall], Any]) -> Callable[[AdminCall], Deferred]:
        """``handler`` run once every tick matched so far is released (module docstring)."""
        def run(call: AdminCall) -> Deferred:
            return self.pipeline.when_idle().addCallback(lambda _: handler(call))

        return run

    # -- parameters -----------------------------------------------------------------------

    def _account(self, call: AdminCall, fund: bool = False) -> str:
        """A configured account; with ``fund``, the insurance fund's account too."""
        account = str(call.params.text("account", max_length=64))
        if account == INSURANCE:
            if fund:
                return account
            raise AdminError(409, f"{INSURANCE} is the insurance fund: only deposit, withdraw, "
                                  "account and insurance-fund apply to it",
                             details={"reason": "insurance_fund"})
        if self.directory.firm_of(account) is None:
            raise AdminError(404, f"unknown account {account}")
        return account

    def _instrument(self, call: AdminCall) -> Instrument:
        symbol = str(call.params.text("symbol", max_length=32))
        inst = self.views.instruments.get(symbol)
        if inst is None:
            raise AdminError(404, f"unknown instrument {symbol} (GET /admin/instruments)")
        return inst

    def _margined(self, call: AdminCall) -> Instrument:
        inst = self._instrument(call)
        if not inst.margined:
            raise AdminError(409, f"{inst.symbol} is not margined (no MaxLeverage in its "
                                  "[INSTRUMENT] section)", details={"reason": "not_margined"})
        return inst

    def _asset(self, call: AdminCall) -> str:
        asset = str(call.params.text("asset", max_length=12))
        if asset not in self.views.assets:
            known = ", ".join(sorted(self.views.assets)) or "none"
            raise AdminError(404, f"unknown asset {asset}: no margined instrument settles in "
                                  f"it (settlement assets: {known})")
        return asset

    def _amount(self, call: AdminCall, asset: str, signed: bool = False) -> int:
        """``amount`` (decimal string in asset units) as minor units, exactly."""
        number = _decimal(call, "amount")
        minor = to_minor_units(number, self.views.assets[asset])
        if minor is None:
            raise AdminError(400, f"amount={number}: {asset} has "
                                  f"{self.views.assets[asset]} decimals")
        if minor == 0 or (minor < 0 and not signed):
            raise AdminError(400, "amount must be " + ("non-zero" if signed else "positive"))
        return minor

    # -- journaling -----------------------------------------------------------------------

    def _journal(self, who: str, action: str, request: Any) -> Deferred:
        o = origin("", "A", who, action)
        try:
            self.pipeline.submit(o, request)
        except Exception as exc:  # PipelineStopped: shutting down, or the journal failed
            raise AdminError(503, f"the exchange is not accepting commands: {exc}") from exc
        return self.released.watch(o)

    def _refused(self, events: list, asset: str) -> None:
        """AdminError 409 with the engine's reason (and shortfall) if it refused."""
        for e in events:
            if type(e) is RequestRejected:
                reason = e.reason.name.lower()
                details: dict[str, Any] = {"reason": reason}
                text = "the engine refused it: " + reason.replace("_", " ")
                if e.shortfall:
                    details["shortfall"] = self.views.money(asset, e.shortfall)
                    text += f" (short by {details['shortfall']} {asset})"
                raise AdminError(409, text, details=details)

    # -- collateral -----------------------------------------------------------------------

    def deposit(self, call: AdminCall) -> Deferred:
        return self._transfer(call, Deposit, "deposit")

    def withdraw(self, call: AdminCall) -> Deferred:
        return self._transfer(call, Withdraw, "withdraw")

    def _transfer(self, call: AdminCall, kind: Any, action: str) -> Deferred:
        account = self._account(call, fund=True)
        asset = self._asset(call)
        amount = self._amount(call, asset)
        ref = call.params.text("ref", required=False, max_length=64) or f"admin:{call.who}"
        d = self._journal(call.who, action, kind(0, 0, account, asset, amount, ref))

        def answer(events: list) -> Answer:
            self._refused(events, asset)
            balance = next(e.balance for e in events if type(e) is BalanceChanged
                           and e.account == account and e.asset == asset)
            return {"account": account, "asset": asset, "amount": self.views.money(asset,
                                                                                   amount),
                    "balance": self.views.money(asset, balance), "ref": ref, "by": call.who}

        return d.addCallback(answer)

    # -- positions' settings ----------------------------------------------------------------

    def _settings(self, call: AdminCall, action: str, inst: Instrument, account: str,
                  request: Any) -> Deferred:
        asset = inst.settlement_asset
        d = self._journal(call.who, action, request)

        def answer(events: list) -> Answer:
            self._refused(events, asset)
            e = next(e for e in events if type(e) is RiskSettingsChanged)
            return {"account": account, "symbol": inst.symbol, "leverage": e.leverage,
                    "margin_mode": MarginMode(e.mode).name.lower(),
                    "isolated_margin": self.views.money(asset, e.isolated_margin),
                    "by": call.who}

        return d.addCallback(answer)

    def set_leverage(self, call: AdminCall) -> Deferred:
        account = self._account(call)
        inst = self._margined(call)
        leverage = call.params.integer("leverage", minimum=1)
        assert leverage is not None
        if leverage > inst.max_leverage:
            raise AdminError(400, f"leverage {leverage} is above {inst.symbol}'s maximum "
                                  f"{inst.max_leverage}")
        return self._settings(call, "leverage", inst, account,
                              SetLeverage(0, 0, account, inst.symbol, leverage))

    def set_margin_mode(self, call: AdminCall) -> Deferred:
        account = self._account(call)
        inst = self._margined(call)
        mode = call.params.choice("mode", MARGIN_MODES)
        return self._settings(call, "margin-mode", inst, account,
                              SetMarginMode(0, 0, account, inst.symbol, mode))

    def adjust_isolated(self, call: AdminCall) -> Deferred:
        account = self._account(call)
        inst = self._margined(call)
        amount = self._amount(call, inst.settlement_asset, signed=True)
        return self._settings(call, "isolated-margin", inst, account,
                              AdjustIsolatedMargin(0, 0, account, inst.symbol, amount))

    # -- index ----------------------------------------------------------------------------

    def set_index(self, call: AdminCall) -> Deferred:
        inst = self._instrument(call)
        price = _decimal(call, "price")
        try:
            ticks = inst.price_to_ticks(str(price))
        except OffGridError:
            raise AdminError(400, f"price={price} is not a multiple of {inst.symbol}'s tick "
                                  f"size {inst.tick_size}") from None
        if ticks <= 0:
            raise AdminError(400, "price must be positive")
        d = self._journal(call.who, "index-price", SetIndexPrice(0, 0, inst.symbol, ticks))

        def answer(events: list) -> Answer:
            self._refused(events, inst.settlement_asset)
            return {"symbol": inst.symbol, "index": inst.ticks_to_price(ticks),
                    "mark": self.views.marks(inst.symbol)["mark"], "by": call.who}

        return d.addCallback(answer)

    # -- reads ----------------------------------------------------------------------------

    def show_account(self, call: AdminCall) -> Answer:
        return self.views.account(self._account(call, fund=True))

    def show_insurance_fund(self, call: AdminCall) -> Answer:
        """Balance and margin per settlement asset (``asset``: one), the positions the fund
        took over, and its last ``limit`` (default 20) ledger entries per asset."""
        assets = [self._asset(call)] if "asset" in call.params else sorted(self.views.assets)
        limit = call.params.integer("limit", required=False, minimum=1)
        if limit is None:
            limit = 20
        if limit > self.fund.ledger_size:
            raise AdminError(400, f"limit must be at most {self.fund.ledger_size} (the entries "
                                  "kept in memory; Postgres' insurance_fund_ledger has all)")
        view = self.views.account(INSURANCE)
        collateral = {c["asset"]: c for c in view["collateral"]}
        funds = []
        for asset in assets:
            c = collateral.get(asset)
            zero = self.views.money(asset, 0)
            funds.append({
                "asset": asset, "balance": c["balance"] if c else zero,
                "equity": c["equity"] if c else zero,
                "unrealised_pnl": c["unrealised_pnl"] if c else zero,
                "withdrawable": c["withdrawable"] if c else zero,
                "ledger": self.fund.ledger_entries(asset, limit),
            })
        positions = [p for p in view["positions"]  # open ones: a flat row says nothing
                     if p["asset"] in assets and Decimal(p["size"])]
        return {"account": INSURANCE, "funds": funds, "positions": positions}

    def list_marks(self, call: AdminCall) -> Answer:
        ages = self.views.index_ages()
        stale = set(self.views.stale_symbols())
        rows = []
        for symbol in sorted(ages):
            rows.append({"symbol": symbol, **self.views.marks(symbol),
                         "index_age_seconds": round(ages[symbol], 3),
                         "stale": symbol in stale})
        return {"marks": rows}


def _decimal(call: AdminCall, name: str) -> Decimal:
    """A decimal parameter: a string (exact) or a JSON integer; floats are refused (a
    binary fraction is not the amount the operator typed)."""
    value = call.params.values.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    text = call.params.text(name, max_length=40)
    try:
        number = Decimal(str(text))
    except InvalidOperation:
        raise AdminError(400, f"{name} must be a decimal number as a string, e.g. "
                              "\"2500.50\"") from None
    if not number.is_finite():
        raise AdminError(400, f"{name} must be a finite decimal number")
    return number

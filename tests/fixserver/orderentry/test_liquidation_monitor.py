"""LiquidationMonitor: liquidation, ADL, takeover, margin call, funding and insurance fund
metrics from released events (engine driven by commands), seeded from the recovered engine;
the fund's recent ledger for the admin API."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

from engine.commands import Deposit
from engine.recovery import ProcessedCommand
from engine.risk.accounts import INSURANCE
from fixserver.orderentry.liquidation_monitor import LiquidationMonitor
from tests.engine.riskutil import BTC, BUY, ETH, SECOND, SELL, USDT, RiskDriver

METRICS = {
    "liquidations": ("liquidations_total", ("symbol",)),
    "fills": ("liquidation_fills_total", ("symbol",)),
    "takeovers": ("liquidation_takeovers_total", ("symbol",)),
    "adl": ("liquidation_adl_total", ("symbol",)),
}


def sample(name: str, **labels: str) -> float:
    """A sample's value now (0 if never set: counters are shared by every test)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Released:
    """A RiskDriver whose every command is also released to a LiquidationMonitor."""

    def __init__(self) -> None:
        self.d = RiskDriver(price_band_ppm=200_000)
        self.monitor: LiquidationMonitor | None = None
        run = self.d.run

        def released(cls: Any, *args: Any, **kw: Any) -> list:
            events = run(cls, *args, **kw)
            if self.monitor is not None:
                command = cls(self.d.seq, self.d.ts, *args, **kw)
                self.monitor.on_released([ProcessedCommand(("", "A"), command, events)])
            return events

        self.d.run = released  # type: ignore[method-assign]


def test_liquidations_adl_takeover_funding_and_the_fund_are_measured() -> None:
    """An ADL step (fund empty), a takeover step (fund funded), a funding instant: counters by
    symbol and how the contracts were closed, the fund's balance in asset units, the applied,
    predicted and next funding; the fund's ledger newest first."""
    r = Released()
    d = r.d
    d.index(600_000)
    d.index(300_000, ETH)
    d.tick()
    r.monitor = m = LiquidationMonitor(d.eng)
    before = {k: sample(n, symbol=BTC) for k, (n, _) in METRICS.items()}
    book_qty = sample("liquidation_closed_qty_total", symbol=BTC, via="book")
    adl_qty = sample("liquidation_closed_qty_total", symbol=BTC, via="adl")
    taken_qty = sample("liquidation_closed_qty_total", symbol=BTC, via="takeover")
    # ADL: A (979 USDT, 100x) long 0.7 against B and D; no bids, no fund
    d.deposit("A", 1_000)
    d.leverage("A", 100)
    d.deposit("B", 100_000)
    d.deposit("D", 100_000)
    d.order("B", SELL, 400, 600_000)
    d.order("D", SELL, 300, 600_000)
    d.order("A", BUY, 700, 600_000)
    d.withdraw("B", 90_000 * USDT)
    d.index(580_000)
    d.tick()
    # takeover: the fund (1,000 USDT) takes A2's 0.7 over
    d.run_deposit(INSURANCE, 1_000)
    assert sample("insurance_fund_balance", asset="USDT") == 1_000.05  # + A's fee
    d.deposit("A2", 1_000)
    d.leverage("A2", 100)
    d.deposit("S", 100_000)
    d.order("S", SELL, 700, 580_000)
    d.order("A2", BUY, 700, 580_000)
    d.index(560_000)
    d.tick()
    # through the book: A3 (2,300 USDT after the fee) long 1 BTC at 56,000 at 50x; at 53,950
    # its equity 250 is under the maintenance margin 289.5; C's bid at 53,900 is above the
    # bankruptcy price 53,700: it takes the first step (0.074, down to tier 1) and 0.126 of
    # the second; the fund, under water with its 0.7 long, cannot take the remaining 0.8:
    # S's short is deleveraged
    d.deposit("A3", 2_330)
    d.leverage("A3", 50)
    d.order("S", SELL, 1_000, 560_000)
    d.order("A3", BUY, 1_000, 560_000)
    d.deposit("C", 1_000_000)
    d.order("C", BUY, 200, 539_000)
    d.index(539_500)
    d.tick()
    after = {k: sample(n, symbol=BTC) for k, (n, _) in METRICS.items()}
    assert {k: after[k] - before[k] for k in after} == {
        "liquidations": 4, "fills": 2, "takeovers": 1, "adl": 3}
    closed = {via: round(sample("liquidation_closed_qty_total", symbol=BTC, via=via) - was, 9)
              for via, was in (("book", book_qty), ("takeover", taken_qty), ("adl", adl_qty))}
    assert closed == {"book": 0.2, "takeover": 0.7, "adl": 1.5}
    fund = d.eng.risk.accounts[(INSURANCE, "USDT")].balance
    assert sample("insurance_fund_balance", asset="USDT") == fund / USDT
    assert m.fund_balance == {"USDT": fund}
    # predicted funding from the marks: the interest rate, 0.01%, next instant 08:00 UTC
    assert sample("predicted_funding_rate", symbol=BTC) == 0.0001
    assert sample("next_funding_timestamp_seconds", symbol=BTC) == 28_800
    d.ts = 28_799 * SECOND  # the next command is a second later: 08:00 UTC exactly
    d.tick()
    assert sample("funding_rate", symbol=BTC) == 0.0001
    assert sample("funding_rate", symbol=ETH) == 0.0001
    assert sample("next_funding_timestamp_seconds", symbol=BTC) == 57_600
    assert sample("insurance_fund_balance", asset="USDT") == \
        d.eng.risk.accounts[(INSURANCE, "USDT")].balance / USDT
    ledger = m.ledger_entries("USDT", 100)
    # oldest first: A's fee (ADL), the operator's deposit, A2's fee (takeover)
    assert [e["cause"] for e in reversed(ledger)][:3] == ["LIQUIDATION", "DEPOSIT",
                                                         "LIQUIDATION"]
    assert ledger[0]["cause"] == "FUNDING" and ledger[0]["ts"] == "1970-01-01T08:00:00+00:00"
    assert ledger[0]["balance"] == m.money("USDT", d.eng.risk.accounts[(INSURANCE,
                                                                         "USDT")].balance)
    assert [e["seq"] for e in m.ledger_entries("USDT", 2)] == [e["seq"] for e in ledger[:2]]
    assert m.ledger_entries("USDT", 0) == [] and m.ledger_entries("BTC", 5) == []


def test_margin_calls_counted_by_level_once_per_crossing() -> None:
    """80% and 90% crossings each count once, a crossing again counts again."""
    r = Released()
    d = r.d
    d.index(600_000)
    d.tick()
    r.monitor = LiquidationMonitor(d.eng)
    at80, at90 = sample("margin_calls_total", level="0.8"), sample("margin_calls_total",
                                                                   level="0.9")
    d.deposit("A", 1_000)
    d.leverage("A", 100)
    d.deposit("B", 1_000_000)
    d.order("B", SELL, 700, 600_000)
    d.order("A", BUY, 700, 600_000)
    for index in (590_000, 589_500, 589_400, 589_100, 595_000, 589_500):
        d.index(index)
        d.tick()
    assert sample("margin_calls_total", level="0.8") - at80 == 2
    assert sample("margin_calls_total", level="0.9") - at90 == 1


def test_seeded_from_the_recovered_engine_and_the_replayed_tail() -> None:
    """A new monitor shows the fund's balance and the predicted funding the engine had, and
    the fund's entries of the replayed tail in its ledger (counting none of them)."""
    d = RiskDriver()
    d.index(600_000)
    d.tick()
    events = d.run(Deposit, INSURANCE, "USDT", 250 * USDT, "seed")
    d.index(600_100)
    d.tick()
    m = LiquidationMonitor(d.eng)
    m.remember([ProcessedCommand(None, None, events)])
    assert m.fund_balance == {"USDT": 250 * USDT}
    assert sample("insurance_fund_balance", asset="USDT") == 250
    assert sample("next_funding_timestamp_seconds", symbol=BTC) == 28_800
    (entry,) = m.ledger_entries("USDT", 20)
    assert (entry["cause"], entry["amount"], entry["ref"]) == ("DEPOSIT", "250.000000", "seed")


def test_an_empty_fund_is_zero() -> None:
    """Before any deposit the fund's gauge is 0 for each settlement asset, not missing."""
    d = RiskDriver()
    m = LiquidationMonitor(d.eng)
    assert m.fund_balance == {"USDT": 0}
    assert REGISTRY.get_sample_value("insurance_fund_balance", {"asset": "USDT"}) == 0

"""Liquidation, insurance fund, ADL, funding and margin calls: scenarios computed by hand.

BTC-PERP: 1 BTC = 1,000 lots, 60,000 USDT = 600,000 ticks, one tick on one lot = 100 minor
units (0.0001 USDT). Taker fee 5 bp, maker rebate 1 bp, liquidation fee 0.5%. Tiers: 0.5% to
50k USDT, 1% (cum 250) to 250k, 5% beyond. Books are kept one-sided where a test needs the
mark to equal the index (the smoothed basis only moves with a two-sided book).
"""

from __future__ import annotations

import pytest

from engine.enums import CancelReason, LedgerCause, MarginMode, TransferKind
from engine.events import (
    BalanceChanged,
    FundingApplied,
    FundingPayment,
    Liquidated,
    MarginBreached,
    MarginCall,
    OrderCanceled,
    PositionTransferred,
    Trade,
)
from engine.risk.liquidation import INSURANCE, bankruptcy_price
from tests.engine.riskutil import BTC, BUY, ETH, SECOND, SELL, USDT, RiskDriver, of


@pytest.fixture()
def d() -> RiskDriver:
    drv = RiskDriver(price_band_ppm=200_000)  # 20%: room for the crash bids below
    drv.index(600_000)
    drv.index(300_000, ETH)
    drv.tick()
    return drv


def balance(d: RiskDriver, acct: str) -> int:
    a = d.eng.risk.accounts.get((acct, "USDT"))
    return a.balance if a is not None else 0


def size(d: RiskDriver, acct: str, sym: str = BTC) -> int:
    p = d.eng.risk.positions.get((acct, sym))
    return p.size if p is not None else 0


def open_long(d: RiskDriver, acct: str, lots: int, price: int = 600_000,
              seller: str = "B") -> None:
    d.deposit(seller, 1_000_000)
    d.order(seller, SELL, lots, price)
    assert of(d.order(acct, BUY, lots, price), Trade)


def test_bankruptcy_price_rounds_toward_the_owner():
    # long 0.7 BTC at 60,000 with 979 USDT: 60000 - 979/0.7 = 58601.428... -> up
    assert bankruptcy_price(700, 600_000 * 700, 100, 979 * USDT) == 586_015
    # short: 60000 + 979/0.7 = 61398.57 -> down
    assert bankruptcy_price(-700, 600_000 * 700, 100, 979 * USDT) == 613_985


def test_isolated_long_liquidated_by_an_index_drop(d):
    d.deposit("A", 10_000)
    d.mode("A", MarginMode.ISOLATED)
    open_long(d, "A", 1_000)  # iso margin 6,000; taker fee 30 -> balance 9,970
    d.deposit("C", 1_000_000)
    d.order("C", BUY, 1_000, 545_000)  # the bid the liquidation will hit
    assert d.eng.risk.accounts[("A", "USDT")].iso_total == 6_000 * USDT
    # isolated liquidation price (tier 2): 6000 + (p - 60000) = 0.01p - 250 -> 54,292.93
    d.index(543_000)  # above: nothing
    assert not of(d.tick(), Liquidated)
    d.index(542_000)
    ev = d.tick()
    (breach,) = of(ev, MarginBreached)
    assert breach.symbol == BTC
    steps = of(ev, Liquidated)
    # bankruptcy: 60000 - 6000/1 = 54,000; first down to tier 1 (50k / 54.2 = 922 lots),
    # still under maintenance, then the rest; all at C's 54,500
    assert [(s.qty, s.filled, s.bankruptcy_price) for s in steps] == [
        (78, 78, 540_000), (922, 922, 540_000)]
    assert sum(s.taken_over + s.deleveraged for s in steps) == 0
    # PnL -5,500; taker fees 0.05% of 54,500 (split over two fills, each rounded up)
    fills = [t for t in of(ev, Trade) if t.taker_account == "A"]
    assert [t.price for t in fills] == [545_000, 545_000]
    # liquidation fee 0.5% of 54,500 = 272.5 (split as the steps' notionals)
    assert sum(s.fee for s in steps) == 272_500_000
    assert size(d, "A") == 0
    a = d.eng.risk.accounts[("A", "USDT")]
    assert a.iso_total == 0
    assert a.balance == (9_970 - 5_500 - 27.25 - 272.5) * USDT
    assert balance(d, INSURANCE) == 272_500_000


def test_cross_account_with_two_positions(d):
    d.deposit("A", 9_000)
    open_long(d, "A", 1_000)  # BTC 60k at 10x: IM 6,000, fee 30
    d.deposit("E", 1_000_000)
    d.order("E", SELL, 500, 300_000, ETH)
    d.order("A", BUY, 500, 300_000, ETH)  # ETH 5 x 3,000 = 15k: IM 1,500, fee 7.5
    d.deposit("C", 1_000_000)
    d.order("C", BUY, 1_000, 560_000)
    d.order("C", BUY, 500, 290_000, ETH)
    d.order("A", SELL, 100, 310_000, ETH)  # only closes: no margin; canceled at liquidation
    # cross equity 8,962.5 + upnl; MM: BTC 1% - 250, ETH 0.5% of 15k = 75
    d.index(566_000)  # BTC -3,400: equity 5,562.5 vs MM 310 + 75: fine
    assert not of(d.tick(), Liquidated)
    d.index(520_000)  # BTC -8,000: equity 962.5 vs MM 270 + 75 = 345: fine
    assert not of(d.tick(), Liquidated)
    d.index(512_000)  # BTC -8,800: equity 162.5 < MM 262 + 75
    ev = d.tick()
    steps = of(ev, Liquidated)
    assert steps and steps[0].symbol == BTC  # the larger maintenance margin goes first
    # cross: A's orders in every instrument were canceled first
    (canceled,) = [c for c in of(ev, OrderCanceled) if c.reason is CancelReason.LIQUIDATION]
    assert (canceled.account, canceled.symbol) == ("A", ETH)
    assert ev.index(canceled) < ev.index(steps[0])
    view, _ = d.view("A")
    assert view.equity >= view.maintenance_margin  # restored


def test_partial_liquidation_restores_margin(d):
    d.deposit("A", 2_330)
    d.leverage("A", 50)
    open_long(d, "A", 1_000)  # IM 1,200 + fee 30; balance 2,300
    d.deposit("C", 1_000_000)
    d.order("C", BUY, 200, 579_900)
    d.index(580_000)  # equity 300 < MM 0.01 * 58,000 - 250 = 330
    ev = d.tick()
    (step,) = of(ev, Liquidated)
    # down to tier 1: 50,000 / 58 = 862 lots kept, 138 sold at C's 57,990
    assert (step.qty, step.filled, step.notional) == (138, 138, 579_900 * 138)
    # bankruptcy: equity without the position's PnL is 2,300 -> 60000 - 2300 = 57,700
    assert step.bankruptcy_price == 577_000
    # fee 0.5% of 8,002.62 = 40.0131
    assert step.fee == 40_013_100
    assert size(d, "A") == 862
    view, _ = d.view("A")
    # 2300 - 277.38 realised - 4.00131 taker fee - 40.0131 liquidation fee
    assert view.balance == 2_300 * USDT - 277_380_000 - 4_001_310 - 40_013_100
    assert view.equity >= view.maintenance_margin  # restored: no further step
    assert not of(d.tick(), Liquidated)


def test_bankrupt_account_covered_by_the_fund(d):
    d.run_deposit(INSURANCE, 1_000)
    d.deposit("A", 1_000)
    d.leverage("A", 100)
    open_long(d, "A", 700)  # balance 979
    d.index(580_000)  # gaps through the bankruptcy price 58,601.5; no bids at all
    ev = d.tick()
    (step,) = of(ev, Liquidated)
    assert (step.filled, step.taken_over, step.deleveraged) == (0, 700, 0)
    (tr,) = of(ev, PositionTransferred)
    assert (tr.kind, tr.from_account, tr.to_account, tr.price) == (
        TransferKind.TAKEOVER, "A", INSURANCE, 586_015)
    # A lost exactly its collateral (to 0.05 USDT of rounding, taken as the fee)
    assert balance(d, "A") == 0
    assert size(d, INSURANCE) == 700
    assert of(ev, PositionTransferred)[0].kind is not TransferKind.ADL


def test_adl_when_the_fund_is_empty(d):
    d.deposit("A", 1_000)
    d.leverage("A", 100)
    d.deposit("B", 100_000)
    d.deposit("D", 100_000)
    d.order("B", SELL, 400, 600_000)
    d.order("D", SELL, 300, 600_000)
    d.order("A", BUY, 700, 600_000)  # B short 400, D short 300; A long 700, balance 979
    d.leverage("B", 50)  # same PnL ratio, B's higher effective leverage... same equity
    d.withdraw("B", 90_000 * USDT)  # B: less equity -> higher effective leverage
    d.index(580_000)
    ev = d.tick()
    (step,) = of(ev, Liquidated)
    assert (step.taken_over, step.deleveraged) == (0, 700)
    adl = [t for t in of(ev, PositionTransferred) if t.kind is TransferKind.ADL]
    assert [(t.to_account, t.qty, t.price) for t in adl] == [("B", 400, 586_015),
                                                             ("D", 300, 586_015)]
    assert size(d, "B") == 0 and size(d, "D") == 0 and size(d, "A") == 0


def test_funding_at_the_boundary(d):
    d.deposit("A", 10_000)
    open_long(d, "A", 7, price=600_000)
    d.index(600_001)
    d.tick()  # no premium samples of any size: rate = interest 0.01%
    # jump to just before 08:00 UTC of day 0 (28,800 s) and then past it
    d.ts = 28_799 * SECOND - SECOND
    assert not of(d.tick(), FundingApplied)
    ev = d.tick()
    (fa,) = [f for f in of(ev, FundingApplied) if f.symbol == BTC]
    # notional 7 lots x 600,001 ticks x 100 = 420,000,700; x 0.0001 = 42,000.07 minor
    assert (fa.rate_e8, fa.paid, fa.received, fa.residual) == (10_000, 42_001, 42_000, 1)
    pays = {p.account: p.amount for p in of(ev, FundingPayment)}
    assert pays == {"A": -42_001, "B": 42_000}
    assert sum(pays.values()) + fa.residual == 0
    ledger = [b for b in of(ev, BalanceChanged) if b.cause is LedgerCause.FUNDING]
    assert {(b.account, b.amount) for b in ledger} == {("A", -42_001), ("B", 42_000),
                                                       (INSURANCE, 1)}
    assert fa.next_funding_ts == 57_600 * SECOND


def test_margin_call_pushed_once_per_crossing(d):
    d.deposit("A", 1_000)
    d.leverage("A", 100)
    open_long(d, "A", 700)  # balance 979, MM 0.5%: 210 at 60k
    # ratio = MM / equity; 80% at equity ~ 1.25 MM
    d.index(590_000)  # equity 279, MM 206.5: 74%
    assert not of(d.tick(), MarginCall)
    d.index(589_500)  # equity 244, MM 206.3: 84.6%
    (c,) = of(d.tick(), MarginCall)
    assert (c.level_ppm, c.account, c.symbol) == (800_000, "A", "")
    d.index(589_400)  # still between 80% and 90%: nothing
    assert not of(d.tick(), MarginCall)
    d.index(589_100)  # equity 216, MM 206.2: 95.4%
    (c,) = of(d.tick(), MarginCall)
    assert c.level_ppm == 900_000
    d.index(595_000)  # back to 57%
    assert not of(d.tick(), MarginCall)
    d.index(589_500)  # crossing 80% again warns again
    (c,) = of(d.tick(), MarginCall)
    assert c.level_ppm == 800_000


def test_a_halted_book_is_not_traded_by_a_liquidation(d):
    from engine.commands import SetInstrumentStatus
    from engine.enums import InstrumentStatus

    d.run_deposit(INSURANCE, 1_000)
    d.deposit("A", 1_000)
    d.leverage("A", 100)
    open_long(d, "A", 700)
    d.deposit("C", 1_000_000)
    d.order("C", BUY, 700, 586_500)  # a bid above the bankruptcy price, but frozen
    d.run(SetInstrumentStatus, BTC, InstrumentStatus.HALTED)
    d.index(580_000)
    ev = d.tick()
    (step,) = of(ev, Liquidated)
    assert (step.filled, step.taken_over) == (0, 700)
    (c,) = [x for x in of(ev, OrderCanceled) if x.order_id == step.order_id]
    assert c.reason is CancelReason.INSTRUMENT_HALTED
    assert not of(ev, Trade)

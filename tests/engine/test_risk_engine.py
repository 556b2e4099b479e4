"""Collateral, margin and marks inside the engine: scenarios with hand-computed numbers.

BTC-PERP: tick 0.1 USDT, lot 0.001 BTC, so one tick on one lot is 0.0001 USDT = 100 minor
units; 1 BTC = 1,000 lots; 60,000 USDT = 600,000 ticks. Default leverage 10, taker fee
5 bp, maker rebate 1 bp. Tiers: 0.5% to 50k (100x), 1% to 250k (50x), 5% beyond (10x).
"""

from __future__ import annotations

import pytest

from engine import MatchingEngine
from engine.commands import Deposit
from engine.enums import CancelReason, LedgerCause, MarginMode, OrdType, RejectReason, TriggerBy
from engine.events import (
    AccountChanged,
    BalanceChanged,
    Liquidated,
    MarginBreached,
    MarkPriceUpdated,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    OrderTriggered,
    PositionChanged,
    RequestRejected,
    RiskSettingsChanged,
    Trade,
)
from tests.engine.riskutil import BTC, BUY, SELL, USDT, RiskDriver, of

R = RejectReason


@pytest.fixture()
def d() -> RiskDriver:
    return RiskDriver()


def test_deposit_and_withdraw_follow_the_ledger(d):
    ev = d.deposit("A", 1_000)
    (b,) = of(ev, BalanceChanged)
    assert (b.amount, b.balance, b.cause) == (1_000 * USDT, 1_000 * USDT, LedgerCause.DEPOSIT)
    assert of(ev, AccountChanged)[0].balance == 1_000 * USDT
    ev = d.withdraw("A", 400 * USDT)
    assert of(ev, BalanceChanged)[0].balance == 600 * USDT
    ev = d.withdraw("A", 601 * USDT)
    (rej,) = of(ev, RequestRejected)
    assert (rej.reason, rej.shortfall) == (R.INSUFFICIENT_MARGIN, 1 * USDT)
    assert of(d.run(Deposit, "A", "BTC", 1), RequestRejected)[0].reason == R.UNKNOWN_ASSET
    assert of(d.withdraw("A", 0), RequestRejected)[0].reason == R.INVALID_AMOUNT




def test_order_rejected_for_margin_then_accepted_after_a_deposit(d):
    d.deposit("A", 5_000)
    # 1 BTC at 60,000 at 10x: 6,000 initial margin + 30 opening fee = 6,030 USDT
    ev = d.order("A", BUY, 1_000, 600_000)
    (rej,) = of(ev, OrderRejected)
    assert (rej.reason, rej.shortfall) == (R.INSUFFICIENT_MARGIN, 1_030 * USDT)
    d.deposit("A", 1_030)
    ev = d.order("A", BUY, 1_000, 600_000)
    assert of(ev, OrderAccepted)
    (acct,) = of(ev, AccountChanged)
    assert acct.order_margin == 6_030 * USDT
    assert d.view("A")[0].available == 0
    # not a single minor unit more: 1 lot at 59,000 is 5.9 USDT at 10x + 0.0295 fee
    assert of(d.order("A", BUY, 1, 590_000), OrderRejected)[0].shortfall == 5_929_500
    # canceling releases it
    d.cancel("A", 4)
    assert d.view("A")[0].available == 6_030 * USDT


def test_fills_charge_fees_and_realise_pnl(d):
    for acct in ("A", "B", "C"):
        d.deposit(acct, 10_000)
    d.order("B", SELL, 1_000, 600_000)  # maker
    ev = d.order("A", BUY, 1_000, 600_000)  # taker
    assert of(ev, Trade)
    ledger = {(b.account, b.cause): b.amount for b in of(ev, BalanceChanged)}
    assert ledger == {("B", LedgerCause.FEE): 6 * USDT, ("A", LedgerCause.FEE): -30 * USDT}
    pos = {p.account: p for p in of(ev, PositionChanged)}
    assert (pos["A"].size, pos["A"].entry_cost, pos["A"].fees) == (1_000, 600_000_000,
                                                                   30 * USDT)
    assert pos["B"].size == -1_000
    view, (pv,) = d.view("A")
    assert view.balance == 9_970 * USDT
    assert pv.initial_margin == 6_000 * USDT  # at the mark (no index yet: the last price)
    # A sells at 61,000 to C: realises +1,000 USDT, pays 30.5 taker fee
    d.order("C", BUY, 1_000, 610_000)
    ev = d.order("A", SELL, 1_000, 610_000)
    ledger = {(b.account, b.cause): b.amount for b in of(ev, BalanceChanged)}
    assert ledger[("A", LedgerCause.REALISED_PNL)] == 1_000 * USDT
    assert ledger[("A", LedgerCause.FEE)] == -30_500_000
    assert ledger[("C", LedgerCause.FEE)] == 6_100_000
    assert d.view("A")[0].balance == (10_000 - 30 + 1_000 - 30.5) * USDT
    # conservation: balances + fee pool = deposits; open positions cost both sides
    risk = d.eng.risk
    total = sum(a.balance for a in risk.accounts.values()) + risk.fee_pool["USDT"]
    entries = sum((p.entry_cost if p.size > 0 else -p.entry_cost) * 100
                  for p in risk.positions.values() if p.size)
    assert total - entries == 30_000 * USDT


def test_reduce_only_and_closing_orders_need_no_margin(d):
    d.deposit("A", 6_030)
    d.deposit("B", 10_000)
    d.order("B", SELL, 1_000, 600_000)
    d.order("A", BUY, 1_000, 600_000)
    assert d.view("A")[0].available < 6 * USDT  # the position's margin took it all
    # a plain sell of 1 BTC only closes: no margin needed
    assert of(d.order("A", SELL, 1_000, 605_000), OrderAccepted)
    # a second one would open a short
    assert of(d.order("A", SELL, 1_000, 605_000), OrderRejected)
    assert of(d.order("A", SELL, 500, 606_000, reduce_only=True), OrderAccepted)


def test_risk_limit_tier_caps_the_position_at_a_leverage(d):
    d.deposit("A", 1_000_000)
    assert of(d.leverage("A", 100), RiskSettingsChanged)
    # 100x allows 50,000 USDT of notional: 0.8 BTC at 60k = 48k ok, 1 BTC refused
    assert of(d.order("A", BUY, 800, 600_000), OrderAccepted)
    rej = of(d.order("A", BUY, 200, 600_000), OrderRejected)[0]
    assert rej.reason == R.RISK_LIMIT_EXCEEDED
    # and leverage cannot go above 100 or to 0
    assert of(d.leverage("A", 101), RequestRejected)[0].reason == R.INVALID_LEVERAGE
    assert of(d.leverage("A", 0), RequestRejected)[0].reason == R.INVALID_LEVERAGE


def test_leverage_change_refused_when_margin_is_short(d):
    d.deposit("A", 1_000)
    d.leverage("A", 50)
    # 0.8 BTC at 60k = 48k notional: 960 + 24 fee = 984 USDT at 50x
    assert of(d.order("A", BUY, 800, 600_000), OrderAccepted)
    rej = of(d.leverage("A", 10), RequestRejected)[0]
    # at 10x: 4,800 + 24 = 4,824 held instead of 984 -> 3,840 more, 16 free
    assert (rej.reason, rej.shortfall) == (R.INSUFFICIENT_MARGIN, 3_824 * USDT)


def test_margin_mode_change_refused_with_orders_or_a_position(d):
    d.deposit("A", 100_000)
    d.order("A", BUY, 100, 590_000)
    rej = of(d.mode("A", MarginMode.ISOLATED), RequestRejected)[0]
    assert rej.reason == R.MARGIN_MODE_CHANGE_UNSAFE
    d.cancel("A", d.seq - 1)
    ok = of(d.mode("A", MarginMode.ISOLATED), RiskSettingsChanged)[0]
    assert ok.mode is MarginMode.ISOLATED
    assert of(d.mode("A", 7), RequestRejected)[0].reason == R.INVALID_MARGIN_MODE


def test_isolated_position_carries_its_own_margin(d):
    d.deposit("A", 10_000)
    d.deposit("B", 10_000)
    d.mode("A", MarginMode.ISOLATED)
    d.order("B", SELL, 1_000, 600_000)
    ev = d.order("A", BUY, 1_000, 600_000)
    (acct,) = [a for a in of(ev, AccountChanged) if a.account == "A"]
    assert acct.isolated_margin == 6_000 * USDT
    assert of(ev, PositionChanged)[0].isolated_margin in (0, 6_000 * USDT)
    # add 1,000 and remove too much
    assert of(d.iso("A", 1_000 * USDT), RiskSettingsChanged)[0].isolated_margin == 7_000 * USDT
    rej = of(d.iso("A", -1_001 * USDT), RequestRejected)[0]
    assert (rej.reason, rej.shortfall) == (R.INSUFFICIENT_MARGIN, 1 * USDT)
    assert of(d.iso("A", -1_000 * USDT), RiskSettingsChanged)
    assert of(d.iso("B", 5), RequestRejected)[0].reason == R.NO_ISOLATED_POSITION
    # closing releases the margin and realises the PnL into the balance
    d.order("B", BUY, 1_000, 590_000)
    ev = d.order("A", SELL, 1_000, 590_000)
    a = next(x for x in of(ev, AccountChanged) if x.account == "A")
    assert a.isolated_margin == 0
    assert a.balance == (10_000 - 30 - 1_000 - 29.5) * USDT


def test_mark_follows_the_index_and_smoothed_basis(d):
    d.deposit("A", 100_000)
    d.deposit("B", 100_000)
    d.order("A", BUY, 10, 600_500)
    d.order("B", SELL, 10, 601_500)  # mid 601,000
    d.index(600_000)
    (m,) = [e for e in of(d.tick(), MarkPriceUpdated) if e.symbol == BTC]
    # basis 1,000 ticks (cap 0.5% = 3,000): ema = 0 + 1000 / 4 = 250
    assert (m.index, m.mark) == (600_000, 600_250)
    (m,) = [e for e in of(d.tick(), MarkPriceUpdated) if e.symbol == BTC]
    assert m.mark == 600_000 + 250 + 188  # 750 / 4 = 187.5, rounded away from zero
    # a mark is recomputed at most once per interval (1 s): a tick 1 ms later does nothing
    d.seq += 1
    d.ts += 1_000_000
    from engine.commands import Tick
    assert not of(d.eng.process(Tick(d.seq, d.ts)), MarkPriceUpdated)


def test_basis_is_clamped(d):
    d.deposit("A", 100_000)
    d.deposit("B", 100_000)
    d.order("A", BUY, 10, 620_000)
    d.order("B", SELL, 10, 629_000)  # mid 624,500: 24,500 above an index of 600,000
    d.index(600_000)
    for _ in range(30):
        d.tick()
    assert d.eng.risk.marks[BTC].mark == 603_000  # index + 0.5%


def test_take_profit_triggers_on_mark_by_default_and_stops_on_last(d):
    d.deposit("A", 100_000)
    d.deposit("B", 100_000)
    d.index(600_000)
    d.tick()
    # A: sell take-profit at 605,000 (mark) and a buy stop at 605,000 (last)
    tp = d.order("A", SELL, 10, 0, ord_type=OrdType.TAKE_PROFIT, stop_price=605_000)
    tp_id = of(tp, OrderAccepted)[0].order_id
    assert d.eng.orders[tp_id].spec.trigger_mark
    stop = d.order("A", BUY, 10, 0, ord_type=OrdType.STOP, stop_price=605_000)
    assert not d.eng.orders[of(stop, OrderAccepted)[0].order_id].spec.trigger_mark
    d.index(606_000)
    ev = d.tick()
    trig = of(ev, OrderTriggered)
    assert [t.order_id for t in trig] == [tp_id]
    assert trig[0].trigger_price == 606_000
    # explicit last on a take-profit; a trigger type on an order that has no trigger is refused
    last_tp = d.order("A", SELL, 10, 0, ord_type=OrdType.TAKE_PROFIT, stop_price=700_000,
                      trigger_by=TriggerBy.LAST)
    assert not d.eng.orders[of(last_tp, OrderAccepted)[0].order_id].spec.trigger_mark
    bad = d.order("A", SELL, 10, 600_000, trigger_by=TriggerBy.MARK)
    assert of(bad, OrderRejected)[0].reason == R.INVALID_TRIGGER


def test_triggered_stop_without_margin_is_canceled(d):
    d.deposit("A", 10)
    d.deposit("B", 100_000)
    d.deposit("C", 100_000)
    # A's buy stop needs nothing until it triggers; then 1 BTC needs ~6,000 USDT
    ev = d.order("A", BUY, 1_000, 0, ord_type=OrdType.STOP, stop_price=600_100)
    oid = of(ev, OrderAccepted)[0].order_id
    d.order("B", SELL, 5, 600_100)
    ev = d.order("C", BUY, 5, 600_100)  # last trade reaches the stop
    (c,) = [x for x in of(ev, OrderCanceled) if x.order_id == oid]
    assert c.reason == CancelReason.INSUFFICIENT_MARGIN


def test_replace_checks_margin(d):
    d.deposit("A", 700)
    ev = d.order("A", BUY, 100, 600_000)  # 600 + 3 = 603 USDT
    oid = of(ev, OrderAccepted)[0].order_id
    rej = of(d.replace("A", oid, 200, 600_000), RequestRejected)[0]
    assert (rej.reason, rej.shortfall) == (R.INSUFFICIENT_MARGIN, 506 * USDT)
    assert of(d.replace("A", oid, 110, 600_000), RequestRejected) == []
    assert d.eng.orders[oid].qty == 110


def test_mark_move_reports_a_breach_once_and_liquidates_in_that_tick(d):
    d.deposit("A", 1_000)
    d.deposit("B", 100_000)
    d.leverage("A", 100)
    d.index(600_000)
    d.tick()
    d.order("B", SELL, 700, 600_000)
    d.order("A", BUY, 700, 600_000)  # 42k notional, IM 420, MM 210, balance 979
    d.index(599_000)
    assert not of(d.tick(), MarginBreached)
    d.index(589_000)  # 979 - 770 = 209 >= 206.15: not yet
    assert not of(d.tick(), MarginBreached)
    d.index(588_000)  # 979 - 840 = 139 < 205.8
    ev = d.tick()
    (b,) = of(ev, MarginBreached)
    assert (b.account, b.symbol, b.equity, b.maintenance) == ("A", "", 139 * USDT, 205_800_000)
    assert of(ev, Liquidated)[0].account == "A"
    d.index(587_000)
    assert not of(d.tick(), MarginBreached)  # once per breach: A is flat now


def test_snapshot_restores_margin_state(d):
    d.deposit("A", 10_000)
    d.deposit("B", 10_000)
    d.index(600_000)
    d.tick()
    d.order("A", BUY, 500, 599_000)
    d.order("B", SELL, 300, 599_000)
    d.order("B", SELL, 100, 601_000)
    d.mode("C", MarginMode.ISOLATED)
    copy = MatchingEngine.restore(d.eng.snapshot())
    assert copy.state_hash() == d.eng.state_hash()
    for acct in ("A", "B"):
        assert copy.risk.view(acct, "USDT") == d.view(acct)
        assert copy.risk.accounts[(acct, "USDT")].om_total == \
            d.eng.risk.accounts[(acct, "USDT")].om_total


def test_replace_changes_a_stops_trigger_source(d):
    d.deposit("A", 100_000)
    d.index(600_000)
    d.tick()
    ev = d.order("A", SELL, 10, 0, ord_type=OrdType.TAKE_PROFIT, stop_price=605_000)
    oid = of(ev, OrderAccepted)[0].order_id
    assert d.eng.orders[oid].spec.trigger_mark
    from engine.commands import ReplaceOrder
    d.run(ReplaceOrder, "A", oid, 10, 0, trigger_by=TriggerBy.LAST)
    assert not d.eng.orders[oid].spec.trigger_mark
    assert d.eng.markets[BTC].stops_up == [(605_000, oid)]
    # only an untriggered stop has a trigger source to change
    plain = of(d.order("A", BUY, 1, 590_000), OrderAccepted)[0].order_id
    rej = of(d.run(ReplaceOrder, "A", plain, 1, 590_000, trigger_by=TriggerBy.MARK),
             RequestRejected)[0]
    assert rej.reason == R.INVALID_TRIGGER

"""Property tests of the risk engine over random streams of deposits, withdrawals, orders,
index moves, leverage and margin-mode changes (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import MatchingEngine
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
from engine.enums import LedgerCause, MarginMode, OrdType, Side, TimeInForce
from engine.events import (
    BalanceChanged,
    FundingApplied,
    FundingPayment,
    OrderAccepted,
    Trade,
)
from engine.reference_book import ReferenceBook
from engine.risk.accounts import INSURANCE
from tests.engine.riskutil import BTC, USDT, margined_instruments

REF = 600_000
FUNDING_NS = 28_800 * 1_000_000_000
ACCOUNTS = ["a", "b", "c", "d"]
PROPS = settings(max_examples=150, derandomize=True, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MARKET_TYPES = (OrdType.MARKET, OrdType.STOP, OrdType.TAKE_PROFIT)


@st.composite
def an_op(draw: Any) -> tuple:
    k = draw(st.integers(0, 99))
    acct = draw(st.sampled_from(ACCOUNTS))
    if k < 10:
        return ("deposit", acct, draw(st.integers(1, 3_000)) * USDT)
    if k < 14:
        return ("withdraw", acct, draw(st.integers(1, 400)) * USDT)
    if k < 58:
        return ("new", acct, draw(st.sampled_from([Side.BUY, Side.SELL])),
                draw(st.integers(1, 80)), draw(st.integers(-10, 10)) * 100,
                draw(st.sampled_from([OrdType.LIMIT] * 6 + [
                    OrdType.MARKET, OrdType.STOP, OrdType.TAKE_PROFIT_LIMIT])),
                draw(st.sampled_from([TimeInForce.GTC] * 4 + [TimeInForce.IOC])),
                draw(st.booleans()) and draw(st.booleans()))
    if k < 66:
        return ("cancel", acct, draw(st.integers(0, 40)))
    if k < 72:
        return ("replace", acct, draw(st.integers(0, 40)), draw(st.integers(1, 80)),
                draw(st.integers(-10, 10)) * 100)
    if k < 80:
        return ("index", draw(st.integers(-1_200, 1_200)) * 100)
    if k < 86:
        return ("tick",)
    if k < 88:
        return ("funding",)
    if k < 94:
        return ("leverage", acct, draw(st.sampled_from([1, 5, 20, 50, 75, 100])))
    if k < 97:
        return ("mode", acct, draw(st.sampled_from([MarginMode.CROSS, MarginMode.ISOLATED])))
    if k < 99:
        return ("iso", acct, draw(st.integers(-50, 50)) * USDT)
    return ("fund", draw(st.integers(1, 2_000)) * USDT)


ops = st.lists(an_op(), min_size=20, max_size=90)


def build(op_list: list) -> list:
    """Concrete commands with seq and ts (ts advances 0.4 s per command); every account
    starts with 300 USDT at 50x."""
    ts = 10**15
    cmds: list[Any] = [Deposit(i, ts, a, "USDT", 300 * USDT)
                       for i, a in enumerate(ACCOUNTS, start=1)]
    cmds += [SetLeverage(len(cmds) + i, ts, a, BTC, 50)
             for i, a in enumerate(ACCOUNTS, start=1)]
    ids: list[tuple[int, str]] = []
    for seq, op in enumerate(op_list, start=len(cmds) + 1):
        ts += 400_000_000
        kind = op[0]
        if kind == "deposit":
            cmds.append(Deposit(seq, ts, op[1], "USDT", op[2]))
        elif kind == "withdraw":
            cmds.append(Withdraw(seq, ts, op[1], "USDT", op[2]))
        elif kind == "new":
            _, acct, side, qty, off, ot, tif, ro = op
            stop = REF + off // 2 if ot not in (OrdType.LIMIT, OrdType.MARKET) else 0
            cmds.append(NewOrder(seq, ts, acct, BTC, side, qty,
                                 0 if ot in MARKET_TYPES else REF + off, ord_type=ot,
                                 tif=tif if ot is OrdType.LIMIT else TimeInForce.GTC,
                                 stop_price=stop, reduce_only=ro))
            ids.append((seq, acct))
        elif kind == "cancel" and ids:
            oid, acct = ids[-1 - op[2] % len(ids)]
            cmds.append(CancelOrder(seq, ts, acct, oid))
        elif kind == "replace" and ids:
            oid, acct = ids[-1 - op[2] % len(ids)]
            cmds.append(ReplaceOrder(seq, ts, acct, oid, op[3], REF + op[4]))
        elif kind == "index":
            cmds.append(SetIndexPrice(seq, ts, BTC, REF + op[1]))
        elif kind == "tick":
            ts += 600_000_000
            cmds.append(Tick(seq, ts))
        elif kind == "funding":  # the next 8-hour funding instant
            ts = (ts // FUNDING_NS + 1) * FUNDING_NS
            cmds.append(Tick(seq, ts))
        elif kind == "leverage":
            cmds.append(SetLeverage(seq, ts, op[1], BTC, op[2]))
        elif kind == "mode":
            cmds.append(SetMarginMode(seq, ts, op[1], BTC, op[2]))
        elif kind == "fund":  # an operator tops the insurance fund up
            cmds.append(Deposit(seq, ts, INSURANCE, "USDT", op[1]))
        elif kind == "iso":
            if op[2]:
                cmds.append(AdjustIsolatedMargin(seq, ts, op[1], BTC, op[2]))
    return cmds


def conserved(eng: MatchingEngine) -> None:
    """Balances + fees collected - the open positions' entry cost (long +, short -) equal
    deposits - withdrawals exactly: every fill moves cost from one side to the other, and the
    realised PnL of both sides is counted. Positions sum to zero."""
    risk = eng.risk
    v = risk.instruments[BTC].v
    balances = sum(a.balance for a in risk.accounts.values())
    open_cost = sum((p.entry_cost if p.size > 0 else -p.entry_cost) * v
                    for p in risk.positions.values() if p.size)
    assert (balances + risk.fee_pool.get("USDT", 0) - open_cost
            == risk.deposited.get("USDT", 0) - risk.withdrawn.get("USDT", 0))
    assert sum(p.size for p in risk.positions.values()) == 0
    assert sum(eng.markets[BTC].positions.values()) == 0
    for (acct, sym), p in risk.positions.items():
        assert eng.markets[sym].positions.get(acct, 0) == p.size


@PROPS
@given(ops)
def test_collateral_is_conserved_and_the_ledger_sums_to_the_balance(op_list):
    """With liquidations, fund takeovers, ADL and funding in the flow: collateral + fund +
    fees conserved exactly, funding sums to zero, no account ends a tick with a negative
    balance unless the fund covered it (its ledger then says so), positions sum to zero."""
    eng = MatchingEngine(margined_instruments())
    ledger: dict[str, int] = {}
    for cmd in build(op_list):
        events = eng.process(cmd)
        funding: dict[str, int] = {}
        covered: set = set()
        for e in events:
            t = type(e)
            if t is BalanceChanged:
                ledger[e.account] = ledger.get(e.account, 0) + e.amount
                assert ledger[e.account] == e.balance
                if e.cause is LedgerCause.INSURANCE and e.amount > 0:
                    covered.add(e.account)
            elif t is FundingPayment:
                funding[e.symbol] = funding.get(e.symbol, 0) + e.amount
            elif t is FundingApplied:
                assert funding.get(e.symbol, 0) + e.residual == 0
                assert e.paid - e.received == e.residual
        conserved(eng)
        if type(cmd) is Tick:
            for (acct, _asset), a in eng.risk.accounts.items():
                assert acct == INSURANCE or a.balance >= 0 or acct in covered, (acct, a.balance)
    for (acct, _asset), a in eng.risk.accounts.items():
        assert ledger.get(acct, 0) == a.balance


@PROPS
@given(ops)
def test_adl_only_when_the_fund_cannot_cover(op_list):
    """Every auto-deleveraging happens with the insurance fund unable to take the position
    over: its equity plus the takeover's gain at mark would be negative (checked on the
    engine's own state at the moment ADL starts, over random streams)."""
    from engine.risk import liquidation as lq

    calls: list = []
    original = lq.deleverage

    def checked(book, eng, sym, account, side, qty, price, seq, ts, ev):
        fund = book.value(book.account(INSURANCE, "USDT"))
        mark, v = book.mark_of(sym), book.instruments[sym].v
        gain = (mark - price) * qty * v if side is Side.SELL else (price - mark) * qty * v
        calls.append(fund.balance - fund.iso_total + fund.upnl + gain)
        return original(book, eng, sym, account, side, qty, price, seq, ts, ev)

    lq.deleverage = checked
    try:
        eng = MatchingEngine(margined_instruments())
        for cmd in build(op_list):
            eng.process(cmd)
    finally:
        lq.deleverage = original
    assert all(after < 0 for after in calls), calls


@PROPS
@given(ops)
def test_no_accepted_order_leaves_available_negative(op_list):
    """An accepted order never takes the account below zero available. Fills round each
    fee, isolated margin and position margin to the minor unit (spec/risk.md), so a
    command with fills may end up to one minor unit per fill and rounding below."""
    eng = MatchingEngine(margined_instruments())
    risk = eng.risk
    for cmd in build(op_list):
        acct = risk.accounts.get((getattr(cmd, "account", ""), "USDT"))
        before = risk.available(acct) if acct is not None else 0
        events = eng.process(cmd)
        if type(cmd) is not NewOrder or cmd.reduce_only:
            continue
        if not any(type(e) is OrderAccepted for e in events) or before < 0:
            continue
        fills = sum(1 for e in events if type(e) is Trade)
        record = risk.accounts.get((cmd.account, "USDT"))  # none yet: a stop holds nothing
        after = risk.available(record) if record is not None else 0
        assert after >= -3 * fills, (cmd, before, after)


@PROPS
@given(ops)
def test_fast_and_reference_books_agree_with_risk_on(op_list):
    fast = MatchingEngine(margined_instruments(), book_factory=FastBook)
    ref = MatchingEngine(margined_instruments(), book_factory=ReferenceBook)
    for cmd in build(op_list):
        assert fast.process(cmd) == ref.process(cmd), cmd
    assert fast.state_hash() == ref.state_hash()


@PROPS
@given(ops, st.integers(0, 89))
def test_replay_from_a_snapshot_gives_the_same_state(op_list, cut):
    """Restore a snapshot taken anywhere in the stream and run the rest: same events, same
    state hash as the engine that never stopped."""
    cmds = build(op_list)
    cut = cut % (len(cmds) + 1)
    whole = MatchingEngine(margined_instruments())
    for cmd in cmds[:cut]:
        whole.process(cmd)
    resumed = MatchingEngine.restore(whole.snapshot())
    assert resumed.state_hash() == whole.state_hash()
    for cmd in cmds[cut:]:
        assert resumed.process(cmd) == whole.process(cmd), cmd
    assert resumed.state_hash() == whole.state_hash()


@PROPS
@given(ops)
def test_read_model_from_events_equals_the_engine(op_list):
    """What servers show (RiskReadModel fed only with the engine's events) equals the
    engine's own views after every command: balances, margins, PnL, liquidation prices."""
    from engine.risk.readmodel import RiskReadModel

    eng = MatchingEngine(margined_instruments())
    model = RiskReadModel()
    model.seed(eng)
    for cmd in build(op_list):
        for e in eng.process(cmd):
            model.apply(e)
        for (acct, asset) in eng.risk.accounts:
            assert model.view(acct, asset) == eng.risk.view(acct, asset), (cmd, acct)

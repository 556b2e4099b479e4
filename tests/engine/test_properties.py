"""Property tests: fast book equals reference book on random streams; engine invariants hold."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import (
    CancelOrder,
    FastBook,
    MassCancel,
    MatchingEngine,
    NewOrder,
    OrderTriggered,
    OrdType,
    ReferenceBook,
    ReplaceOrder,
    SetInstrumentStatus,
    SetPosition,
    Side,
    StpMode,
    Tick,
    TimeInForce,
    Trade,
    demo_instruments,
)
from engine.enums import InstrumentStatus
from engine.instruments import PPM

BTC = "BTC-PERP"
REF = 600_000
ACCOUNTS = ["a", "b", "c", "d"]
MARKET_TYPES = (OrdType.MARKET, OrdType.STOP, OrdType.TAKE_PROFIT)
PROPS = settings(max_examples=200, derandomize=True, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])

@st.composite
def an_op(draw: Any) -> tuple:
    """One abstract command, drawn with realistic weights (mostly new orders)."""
    k = draw(st.integers(0, 99))
    acct = draw(st.sampled_from(ACCOUNTS))
    if k < 58:
        return (
            "new",
            acct,
            Side.BUY if draw(st.booleans()) else Side.SELL,
            draw(st.integers(1, 8)),  # qty
            draw(st.integers(-8, 8)),  # price offset from REF
            draw(st.sampled_from([OrdType.LIMIT] * 6 + [
                OrdType.MARKET, OrdType.STOP, OrdType.STOP_LIMIT, OrdType.TAKE_PROFIT,
                OrdType.TAKE_PROFIT_LIMIT])),
            draw(st.sampled_from([TimeInForce.GTC] * 4 + [
                TimeInForce.IOC, TimeInForce.FOK, TimeInForce.GTD, TimeInForce.DAY])),
            draw(st.integers(0, 12)),  # flags selector
            draw(st.integers(0, 4)),  # display / min qty
            draw(st.sampled_from([None, None, *StpMode])),
        )
    if k < 72:
        return ("cancel", acct, draw(st.integers(0, 80)))
    if k < 84:
        return ("replace", acct, draw(st.integers(0, 80)), draw(st.integers(1, 8)),
                draw(st.integers(-8, 8)))
    if k < 87:
        return ("mass", draw(st.sampled_from([None, *ACCOUNTS])),
                draw(st.sampled_from([None, Side.BUY, Side.SELL])))
    if k < 92:
        return ("pos", acct, draw(st.integers(-6, 6)))
    if k < 98:
        return ("tick", draw(st.integers(1, 3)))
    return ("status", draw(st.sampled_from(list(InstrumentStatus))))


ops = st.lists(an_op(), min_size=15, max_size=80)


def build(op_list: list) -> list:
    """Concrete commands (seq/ts assigned) from abstract ops."""
    cmds: list[Any] = []
    ids: list[int] = []
    new_by_id: dict[int, NewOrder] = {}
    ts = 10**15
    status_changes = 0
    for seq, op in enumerate(op_list, start=1):
        ts += 1_000_000
        kind = op[0]
        if kind == "new":
            _, acct, side, qty, off, ot, tif, flags, extra, stp = op
            price = REF + off
            stop = REF + (off // 2) if ot not in (OrdType.LIMIT, OrdType.MARKET) else 0
            cmds.append(NewOrder(
                seq, ts, acct, BTC, side, qty, 0 if ot in MARKET_TYPES else price,
                ord_type=ot, tif=tif, cl_ord_id=f"o{seq}", stop_price=stop,
                expire_ts=ts + 3_000_000 if tif is TimeInForce.GTD else 0,
                post_only=flags == 1, reduce_only=flags in (2, 3),
                display_qty=min(extra, qty) if flags == 4 else 0,
                min_qty=min(extra, qty) if flags == 5 else 0, stp=stp))
            ids.append(seq)
            new_by_id[seq] = cmds[-1]
        elif kind == "cancel" and ids:
            oid = ids[-1 - op[2] % len(ids)]  # recent orders are the likely live ones
            cmds.append(CancelOrder(seq, ts, new_by_id[oid].account, oid, f"x{seq}"))
        elif kind == "replace" and ids:
            oid = ids[-1 - op[2] % len(ids)]
            cmds.append(ReplaceOrder(seq, ts, new_by_id[oid].account, oid, op[3], REF + op[4],
                                     f"r{seq}"))
        elif kind == "mass":
            cmds.append(MassCancel(seq, ts, account=op[1], symbol=BTC, side=op[2]))
        elif kind == "pos":
            cmds.append(SetPosition(seq, ts, op[1], BTC, op[2]))
        elif kind == "tick":
            ts += op[1] * 1_000_000
            cmds.append(Tick(seq, ts))
        elif kind == "status" and status_changes < 1:
            status_changes += 1
            cmds.append(SetInstrumentStatus(seq, ts, BTC, op[1]))
            cmds.append(SetInstrumentStatus(seq * 1000, ts, BTC, InstrumentStatus.TRADING))
    return cmds


def band_of(ref: int) -> tuple[int, int]:
    b = demo_instruments()[0].price_band_ppm
    return -((-ref * (PPM - b)) // PPM), ref * (PPM + b) // PPM


@PROPS
@given(ops)
def test_fast_book_equals_reference_book(op_list):
    """On random command streams both books give identical events and state hashes."""
    fast = MatchingEngine(demo_instruments(), book_factory=FastBook)
    ref = MatchingEngine(demo_instruments(), book_factory=ReferenceBook)
    for cmd in build(op_list):
        assert fast.process(cmd) == ref.process(cmd), cmd
        assert fast.book(BTC).levels(Side.BUY) == ref.book(BTC).levels(Side.BUY)
        assert fast.book(BTC).levels(Side.SELL) == ref.book(BTC).levels(Side.SELL)
    assert fast.state_hash() == ref.state_hash()


def check_invariants(eng: MatchingEngine, cmds: list) -> None:
    """Run ``cmds`` on ``eng`` asserting every engine invariant after each command."""
    new_orders: dict[int, NewOrder] = {}
    positions: dict[str, int] = {}
    fills: dict[int, int] = {}
    book = eng.book(BTC)
    m = eng.markets[BTC]
    for cmd in cmds:
        if isinstance(cmd, NewOrder):
            new_orders[cmd.seq] = cmd
        pre_band = m.band()
        pre_levels = {lv[0].price: [o.id for o in lv] for lv in book.iter_side(Side.SELL)}
        pre_levels.update({lv[0].price: [o.id for o in lv] for lv in book.iter_side(Side.BUY)})
        events = eng.process(cmd)
        if isinstance(cmd, SetPosition):
            positions[cmd.account] = cmd.position
        trigger_band: dict[int, tuple[int, int]] = {}
        seen_makers: dict[int, list[int]] = {}
        for e in events:
            if type(e) is OrderTriggered:
                trigger_band[e.order_id] = band_of(e.trigger_price)
            if type(e) is not Trade:
                continue
            assert e.maker_account != e.taker_account
            taker = new_orders[e.taker_order_id]
            maker = new_orders[e.maker_order_id]
            # post-only never takes
            assert not taker.post_only
            # market orders never trade outside the band fixed when they entered
            if taker.ord_type is OrdType.MARKET:
                assert pre_band[0] <= e.price <= pre_band[1]
            elif e.taker_order_id in trigger_band and taker.ord_type in MARKET_TYPES:
                lo, hi = trigger_band[e.taker_order_id]
                assert lo <= e.price <= hi
            # reduce-only never increases a position
            sign = 1 if e.aggressor_side is Side.BUY else -1
            for acct, delta, o in ((e.taker_account, sign * e.qty, taker),
                                   (e.maker_account, -sign * e.qty, maker)):
                before = positions.get(acct, 0)
                after = before + delta
                if o.reduce_only:
                    assert abs(after) < abs(before) and after * before >= 0
                positions[acct] = after
            # quantity conserved: cumulative fills add up
            for oid in (e.taker_order_id, e.maker_order_id):
                fills[oid] = fills.get(oid, 0) + e.qty
            assert fills[e.taker_order_id] == e.taker_filled
            assert fills[e.maker_order_id] == e.maker_filled
            # price-time priority: makers at a level are hit in their pre-command order
            seen = seen_makers.setdefault(e.price, [])
            if e.maker_order_id not in seen:
                seen.append(e.maker_order_id)
        for price, makers in seen_makers.items():
            order = [i for i in pre_levels.get(price, []) if i in makers]
            assert makers[: len(order)] == order
        # FOK: all or nothing
        if isinstance(cmd, NewOrder) and cmd.tif is TimeInForce.FOK:
            got = fills.get(cmd.seq, 0)
            assert got in (0, cmd.qty) or cmd.reduce_only
        # the book is never crossed at rest
        if book.best_bid and book.best_ask != 1 << 62:
            assert book.best_bid < book.best_ask
        # positions agree with the engine's, and every live order adds up
        for acct, p in positions.items():
            assert eng.position(acct, BTC) == p
        for live in eng.orders.values():
            assert live.filled + live.leaves == live.qty and live.leaves > 0
            assert fills.get(live.id, 0) == live.filled
        for side in (Side.BUY, Side.SELL):
            for price, qty, count in book.levels(side):
                at_level = book.orders_at(side, price)
                assert count == len(at_level) > 0
                assert qty == sum(o.visible for o in at_level)
                assert all(0 < o.visible <= o.leaves for o in at_level)


@PROPS
@given(ops)
def test_invariants_fast_book(op_list):
    """Never crossed, quantity conserved, priority, FOK, post-only, band and reduce-only hold."""
    check_invariants(MatchingEngine(demo_instruments(), book_factory=FastBook), build(op_list))


@settings(max_examples=60, derandomize=True, deadline=None)
@given(ops)
def test_invariants_reference_book(op_list):
    """The same invariants hold on the reference book."""
    check_invariants(MatchingEngine(demo_instruments(), book_factory=ReferenceBook),
                     build(op_list))


@PROPS
@given(ops, st.integers(0, 60), st.booleans())
def test_snapshot_restore_mid_stream_changes_nothing(op_list, cut, to_reference):
    """Snapshot and restore anywhere in a stream: same hash, same later events."""
    cmds = build(op_list)
    cut = cut % (len(cmds) + 1)
    eng = MatchingEngine(demo_instruments(), book_factory=FastBook)
    for cmd in cmds[:cut]:
        eng.process(cmd)
    other = MatchingEngine.restore(eng.snapshot(),
                                   book_factory=ReferenceBook if to_reference else FastBook)
    assert other.state_hash() == eng.state_hash()
    for cmd in cmds[cut:]:
        assert eng.process(cmd) == other.process(cmd)
    assert other.state_hash() == eng.state_hash()

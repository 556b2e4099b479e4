"""Positions, collateral and margin settings over FIX (AN/AO/AP, BB/BA/BG, AL/AM), margin
rejects and the trigger price source, against a real engine with margined instruments."""

from __future__ import annotations

from typing import Any

import attr
from twisted.internet import task

from engine import demo_instruments
from engine.commands import ConfigureInstrument, Deposit, SetIndexPrice
from engine.enums import TriggerBy
from fixserver.orderentry.ownership import origin
from fixserver.orderentry.redelivery import report_key
from fixserver.orderentry.risk_desk import PushPacer

from .harness import Exchange, msg, new_order

USDT = 1_000_000
TIERS = ((50_000_000_000, 5_000, 100), (250_000_000_000, 10_000, 50), (10**13, 50_000, 10))


def margined_exchange(symbols: tuple[str, ...] = ("BTC-PERP", "ETH-PERP"),
                      interval: float = 1.0) -> tuple[Exchange, task.Clock]:
    """The harness exchange with ``symbols`` margined (journaled ConfigureInstrument) and a
    task.Clock driving the desk's pacing."""
    clock = task.Clock()
    x = Exchange(call_later=clock.callLater, risk_push_interval=interval)
    x.app.risk_desk.now_ns = lambda: int(clock.seconds() * 1e9)
    for inst in demo_instruments():
        if inst.symbol in symbols:
            inst = attr.evolve(inst, max_leverage=100, default_leverage=10, risk_tiers=TIERS)
        x.pipeline.submit(origin("", "A"), ConfigureInstrument(
            0, 0, **attr.asdict(inst, recurse=False)))
    x.settle()
    for s in (x.acme, x.acme2, x.beta, x.dc):
        x.app.risk_desk.logged_on(s)
    return x, clock


def deposit(x: Exchange, account: str, usdt: int) -> None:
    x.pipeline.submit(origin("", "A"), Deposit(0, 0, account, "USDT", usdt * USDT))
    x.settle()


def move_index(x: Exchange, symbol: str, ticks: int) -> None:
    """An index price, then an engine Tick past the mark interval: the mark follows it (the
    harness's sequencer stamps a Tick only ahead of a request: the index is sent twice)."""
    for _ in range(2):
        x.pipeline.now += 2_000_000_000
        x.pipeline.submit(origin("", "A"), SetIndexPrice(0, 0, symbol, ticks))
        x.settle()


def an(req: str, account: str = "A1", sub: str = "0", symbol: str | None = None) -> Any:
    pairs = [(710, req), (724, "0"), (263, sub), (1, account), (581, "1"),
             (715, "20240101"), (60, "20240101-00:00:00")]
    if symbol:
        pairs.append((55, symbol))
    return msg("AN", *pairs)


def al(req: str, action: int, account: str = "A1", symbol: str = "BTC-PERP",
       **tags: str) -> Any:
    pairs = [(710, req), (709, "4"), (712, "1"), (715, "20240101"), (1, account), (581, "1"),
             (55, symbol), (60, "20240101-00:00:00"), (7941, str(action))]
    pairs += [(int(t[1:]), v) for t, v in tags.items()]
    return msg("AL", *pairs)


def only(got: list, msg_type: str) -> list[dict]:
    return [f for t, f in got if t == msg_type]


def trade(x: Exchange, qty: str = "0.010", price: str = "60000") -> list:
    """A1 buys ``qty`` BTC-PERP from B1 at ``price``; what A1's session received."""
    x.run(x.beta, new_order("S-" + qty + price, "2", qty, price, "2", "BTC-PERP", "B1"))
    return x.run(x.acme, new_order("B-" + qty + price, "1", qty, price, "2", "BTC-PERP", "A1"))


def test_order_rejected_for_margin_says_by_how_much_then_accepted_after_deposit():
    """An unfunded account's order: 150=8 with Text 'insufficient margin: short by N USDT'
    (103=3); after a Deposit the same order is accepted."""
    x, _clock = margined_exchange()
    got = x.run(x.acme, new_order("M1", "1", "0.010", "60000"))
    (er,) = only(got, "8")
    assert er[150] == "8" and er[103] == "3"
    # 0.010 BTC at 60,000 at leverage 10: 60 USDT initial margin plus the taker fee reserve
    assert er[58].startswith("insufficient margin: short by ") and er[58].endswith(" USDT")
    short = er[58].split("short by ")[1].split()[0]
    assert len(short.split(".")[1]) == 6
    assert 60 <= float(short) < 61
    deposit(x, "A1", 1_000)
    got = x.run(x.acme, new_order("M2", "1", "0.010", "60000"))
    assert only(got, "8")[0][150] == "0"


def test_replace_refused_for_margin_names_the_shortfall():
    """A replace that needs more margin than available: OrderCancelReject with the shortfall."""
    x, _clock = margined_exchange()
    deposit(x, "A1", 100)
    x.run(x.acme, new_order("R1", "1", "0.010", "59000"))
    got = x.run(x.acme, msg("G", (41, "R1"), (11, "R2"), (1, "A1"), (55, "BTC-PERP"),
                            (54, "1"), (60, "20240101-00:00:00"), (38, "0.100"), (40, "2"),
                            (44, "59000")))
    (rej,) = only(got, "9")
    assert rej[434] == "2" and rej[58].startswith("insufficient margin: short by ")


def test_set_leverage_over_fix_is_journaled_and_answered_with_am():
    """AL MarginAction 1 -> SetLeverage through the sequencer; AM 722=0 with the leverage;
    the position snapshot shows it."""
    x, _clock = margined_exchange()
    got = x.run(x.acme, al("L1", 1, t7930="25"))
    (am,) = only(got, "AM")
    assert am[722] == "0" and am[723] == "0" and am[7930] == "25" and am[7931] == "1"
    assert am[710] == am[713] == "L1" and am[721].startswith("PM-") and am[55] == "BTC-PERP"
    assert x.engine.risk.positions[("A1", "BTC-PERP")].leverage == 25
    got = x.run(x.acme, an("P1", symbol="BTC-PERP"))
    assert only(got, "AO")[0][728] == "0"
    (ap,) = only(got, "AP")
    assert ap[7930] == "25" and ap[704] == "0.000" and ap[705] == "0.000"


def test_maintenance_refusals_are_clear():
    """Leverage above the maximum (engine, AM 722=2), no leverage tag, a foreign account and
    an isolated-margin transfer without an isolated position are refused with Text."""
    x, _clock = margined_exchange()
    deposit(x, "A1", 1_000)
    cases = [
        (al("E1", 1, t7930="500"), "invalid leverage"),
        (al("E2", 1), "Leverage (7930) must be a positive integer"),
        (al("E3", 1, account="B1", t7930="5"), "not an account of firm ACME"),
        (al("E4", 3, t7942="10"), "no open isolated position"),
        (al("E5", 3, t7942="0.0000001"), "more than 6 decimals"),
        (al("E6", 2, t7931="7"), "MarginMode (7931) must be 1"),
        (al("E7", 1, symbol="DOGE-PERP", t7930="5"), "unknown symbol DOGE-PERP"),
    ]
    for message, text in cases:
        (am,) = only(x.run(x.acme, message), "AM")
        assert am[722] == "2" and am[723] == "1" and text in am[58], (text, am)


def test_margin_mode_change_refused_with_an_open_position():
    """SetMarginMode while a position is open: AM rejected (engine's reason in Text)."""
    x, _clock = margined_exchange()
    deposit(x, "A1", 10_000)
    deposit(x, "B1", 10_000)
    trade(x)
    (am,) = only(x.run(x.acme, al("MM1", 2, t7931="2")), "AM")
    assert am[722] == "2" and "cannot change while a position" in am[58]
    (am,) = only(x.run(x.acme2, al("MM2", 2, account="A2", t7931="2")), "AM")
    assert am[722] == "0" and am[7931] == "2"


def test_position_snapshot_values():
    """AP after a trade: long qty, entry price (734), mark (730), PnL amounts, margins,
    liquidation price, in asset units with the asset's decimals."""
    x, _clock = margined_exchange()
    deposit(x, "A1", 100)
    deposit(x, "B1", 10_000)
    trade(x)
    got = x.run(x.acme, an("P2"))
    (ao,) = only(got, "AO")
    assert ao[727] == "1" and ao[729] == "0"
    (ap,) = only(got, "AP")
    assert ap[55] == "BTC-PERP" and ap[704] == "0.010" and ap[705] == "0.000"
    assert ap[734] == "60000.0" and ap[731] == "2" and ap[15] == "USDT"
    view = x.app.risk.position_view("A1", "BTC-PERP")
    assert view is not None and ap[730] == "60000.0" == f"{view.mark / 10:.1f}"
    assert ap[7934] == "3.000000" == f"{view.maintenance_margin / USDT:.6f}"  # 0.5% of 600
    assert ap[7933] == "60.000000"  # 600 USDT at 10x
    # about 100 USDT of collateral behind 0.010 BTC: liquidated some 9,700 lower
    assert 50_000 < float(ap[7935]) < 51_000
    assert ap[7935] == f"{view.liquidation_price / 10:.1f}"
    assert ap[325] == "N" and ap[710] == "P2"


def test_position_request_refusals():
    """Foreign account -> AO 728=3 729=2; unmargined symbol -> 728=1; PosReqType 1 -> 728=4."""
    x, _clock = margined_exchange(symbols=("BTC-PERP",))
    (ao,) = only(x.run(x.acme, an("X1", account="B1")), "AO")
    assert ao[728] == "3" and ao[729] == "2" and "not an account of firm ACME" in ao[58]
    (ao,) = only(x.run(x.acme, an("X2", symbol="ETH-PERP")), "AO")
    assert ao[728] == "1" and ao[729] == "2" and "not a margined instrument" in ao[58]
    bad = msg("AN", (710, "X3"), (724, "1"), (1, "A1"), (581, "1"), (715, "20240101"),
              (60, "20240101-00:00:00"))
    (ao,) = only(x.run(x.acme, bad), "AO")
    assert ao[728] == "4" and ao[729] == "2"
    (ao,) = only(x.run(x.acme, an("X4", sub="2")), "AO")
    assert ao[729] == "2" and "no position subscription" in ao[58]


def test_position_subscription_pushes_changes_and_paced_mark_moves():
    """263=1: an AP on every PositionChanged; mark moves push at most one AP per position per
    interval (task.Clock), the waiting one shows the latest mark; 263=2 ends it."""
    x, clock = margined_exchange()
    deposit(x, "A1", 10_000)
    deposit(x, "B1", 10_000)
    x.run(x.acme, an("SUB", sub="1"))
    pushes = only(trade(x), "AP")
    assert pushes and pushes[-1][704] == "0.010" and pushes[-1][710] == "SUB"
    clock.advance(1.0)  # the trade's push began an interval
    move_index(x, "BTC-PERP", 610_000)  # 61,000: +10 USDT on 0.010
    (ap,) = only(x.acme.take(), "AP")
    assert ap[730] == "61000.0" and ap[708] == "10.000000"  # TVAR first: unrealised PnL
    move_index(x, "BTC-PERP", 620_000)
    assert only(x.acme.take(), "AP") == []  # within the interval: waits
    move_index(x, "BTC-PERP", 630_000)
    assert only(x.acme.take(), "AP") == []
    clock.advance(1.0)
    (ap,) = only(x.acme.take(), "AP")
    assert ap[730] == "63000.0" and ap[708] == "30.000000"
    (ao,) = only(x.run(x.acme, an("SUB", sub="2")), "AO")
    assert ao[729] == "0"
    clock.advance(5.0)
    move_index(x, "BTC-PERP", 640_000)
    assert only(x.acme.take(), "AP") == []


def test_collateral_inquiry_snapshot_subscription_and_logout():
    """BB: one BA per account of the firm (911/912); a subscription pushes a BA on every
    AccountChanged; a foreign account gets BG 945=4; logout ends the subscription."""
    x, _clock = margined_exchange()
    deposit(x, "A1", 1_000)
    got = x.run(x.acme, msg("BB", (909, "C1")))
    bas = only(got, "BA")
    assert [b[1] for b in bas] == ["A1", "A2"] and bas[-1][912] == "Y" and bas[0][911] == "2"
    assert bas[0][7937] == "1000.000000" and bas[0][899] == "1000.000000"
    assert bas[0][900] == "1000.000000" and bas[0][7940] == "0"
    (bg,) = only(x.run(x.acme, msg("BB", (909, "C2"), (1, "B1"))), "BG")
    assert bg[945] == "4" and bg[946] == "9"
    x.run(x.acme, msg("BB", (909, "CS"), (263, "1"), (1, "A1")))
    deposit(x, "A1", 500)
    (ba,) = only(x.acme.take(), "BA")
    assert ba[7937] == "1500.000000" and ba[909] == "CS"
    x.app.on_logout(x.acme, x.pipeline.now)
    x.app.on_logon(x.acme, None, x.pipeline.now)
    x.settle()
    x.acme.take()
    deposit(x, "A1", 1)
    assert only(x.acme.take(), "BA") == []


def test_drop_copy_receives_position_and_collateral_pushes():
    """A logged-on drop copy gets AP and BA (325=Y, 797=Y) for its firm's accounts, none for
    other firms', and may ask AN/BB itself but not AL."""
    x, _clock = margined_exchange()
    deposit(x, "A1", 10_000)
    deposit(x, "B1", 10_000)
    x.dc.take()
    trade(x)
    got = x.dc.take()
    aps = only(got, "AP")
    bas = only(got, "BA")
    assert aps and all(a[797] == "Y" and a[325] == "Y" and a[1] == "A1" for a in aps)
    assert bas and all(b[797] == "Y" and b[1] == "A1" for b in bas)
    assert aps[-1][704] == "0.010"
    got = x.run(x.dc, an("D1", symbol="BTC-PERP"))
    assert only(got, "AO")[0][728] == "0"
    (bmr,) = only(x.run(x.dc, al("D2", 1, t7930="5")), "j")
    assert bmr[380] == "3"


def test_trigger_price_source_on_new_and_replace():
    """7943=2 makes a stop trigger on the mark (NewOrder.trigger_by); invalid values and
    non-stop orders are refused; a replace may change it back (ReplaceOrder.trigger_by)."""
    x, _clock = margined_exchange()
    deposit(x, "A1", 10_000)
    seen: list = []
    x.pipeline.subscribers.insert(0, lambda processed: seen.extend(p.command for p in processed))
    got = x.run(x.acme, new_order("T1", "1", "0.001", None, "3", "BTC-PERP", "A1",
                                  (99, "61000"), (7943, "2")))
    assert only(got, "8")[0][150] == "0"
    assert [c.trigger_by for c in seen if getattr(c, "cl_ord_id", "") == "T1"] == [TriggerBy.MARK]
    (er,) = only(x.run(x.acme, new_order("T2", "1", "0.001", None, "3", "BTC-PERP", "A1",
                                         (99, "61000"), (7943, "3"))), "8")
    assert er[150] == "8" and "TriggerPriceSource (7943) must be 1" in er[58]
    (er,) = only(x.run(x.acme, new_order("T3", "1", "0.001", "59000", "2", "BTC-PERP", "A1",
                                         (7943, "1"))), "8")
    assert er[150] == "8" and "stop orders" in er[58]
    (er,) = only(x.run(x.acme, msg("G", (41, "T1"), (11, "T4"), (1, "A1"), (55, "BTC-PERP"),
                                   (54, "1"), (60, "20240101-00:00:00"), (38, "0.002"),
                                   (40, "3"), (99, "61000"), (7943, "1"))), "8")
    assert er[150] == "5"  # a waiting stop's source may change (test_liquidation_over_fix)
    assert [c.trigger_by for c in seen if getattr(c, "cl_ord_id", "") == "T4"] == [TriggerBy.LAST]


def test_am_reports_have_a_redelivery_key():
    """An AM built at release is found again in a store by its PosMaintRptID."""
    assert report_key("AM", [(721, "PM-12"), (709, "4")]) == ("AM", "PM-12")


def test_push_pacer():
    """First push now; later ones wait for the end of the interval, one at a time."""
    pacer = PushPacer(1.0)
    assert pacer.plan("k", 10.0) == 0.0
    pacer.sent("k", 10.0)
    assert pacer.plan("k", 10.25) == 0.75
    assert pacer.plan("k", 10.5) is None
    pacer.fired("k")
    pacer.sent("k", 11.0)
    assert pacer.plan("k", 12.0) == 0.0

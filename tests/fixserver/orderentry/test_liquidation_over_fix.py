"""Margin calls, liquidation, insurance-fund takeover, auto-deleveraging and funding over FIX
(application level, a real engine with margined instruments, task.Clock for the desk).

The scenario is the engine's (tests/engine/test_liquidation.py): A1 deposits 1,000 USDT,
sets leverage 100 and buys 0.7 BTC at 60,000 (balance 979 after the 21 USDT taker fee; MM
0.5%). Its bankruptcy price is 60,000 - 979 / 0.7 = 58,601.43, 58,601.5 on the tick grid.
The book stays one-sided, so the mark is the index."""

from __future__ import annotations

from typing import Any

from engine.commands import Deposit
from engine.enums import TransferKind
from engine.events import (
    FundingPayment,
    Liquidated,
    MarginCall,
    OrderAccepted,
    PositionTransferred,
    Trade,
)
from engine.risk.accounts import INSURANCE
from engine.risk.liquidation import LIQ_ID_BASE
from fixserver.orderentry.ownership import origin

from .harness import Exchange, msg, new_order
from .test_risk_desk import USDT, al, an, deposit, margined_exchange, move_index, only, trade


def events_of(x: Exchange) -> list:
    """Every released event from now on (a pipeline subscriber ahead of the application)."""
    seen: list = []
    x.pipeline.subscribers.insert(0, lambda processed: seen.extend(
        (p.command, e) for p in processed for e in p.events))
    return seen


def long_a1(x: Exchange, fund_usdt: int = 0) -> None:
    """A1 long 0.700 BTC-PERP at 60,000 at leverage 100 from B1; the fund holds ``fund_usdt``."""
    if fund_usdt:
        x.pipeline.submit(origin("", "A"), Deposit(0, 0, INSURANCE, "USDT", fund_usdt * USDT))
    deposit(x, "A1", 1_000)
    deposit(x, "B1", 100_000)
    (am,) = only(x.run(x.acme, al("LEV", 1, t7930="100")), "AM")
    assert am[722] == "0"
    move_index(x, "BTC-PERP", 600_000)
    trade(x, "0.700", "60000")
    assert x.engine.risk.positions[("A1", "BTC-PERP")].size == 700


def margin_calls(got: list) -> list[dict]:
    return [b for b in only(got, "BA") if 7944 in b]


def liq(got: list) -> list[dict]:
    """ExecutionReports marked as caused by a liquidation."""
    return [e for e in only(got, "8") if 7945 in e]


def test_margin_call_is_one_collateral_report_per_crossing():
    """An index move past 80% of the maintenance ratio: one BA (7944=0.8, 7940 the ratio,
    Text with the numbers) to each logged-on order-entry session of the firm and the drop
    copy (797=Y), with one CollRptID MC-<seq>-1; none to another firm, none to a session
    logged off; a further move within the level sends nothing; the next level warns again."""
    x, _clock = margined_exchange()
    long_a1(x)
    seen = events_of(x)
    x.app.risk_desk.logged_off(x.acme2)
    for s in (x.acme, x.acme2, x.beta, x.dc):
        s.take()
    move_index(x, "BTC-PERP", 589_500)  # equity 244, MM 206.3: 84.6%
    (call,) = [e for _c, e in seen if type(e) is MarginCall]
    (ba,) = margin_calls(x.acme.take())
    assert ba[908] == f"MC-{call.seq}-1" and ba[1] == "A1" and ba[15] == "USDT"
    assert ba[7944] == "0.8" and ba[7940] == f"{call.ratio_ppm / 1e6:.6f}".rstrip("0")
    assert 55 not in ba  # the cross account's ratio
    assert ba[58].startswith("margin call: the cross USDT account's maintenance margin ")
    assert "is 84.6% of its equity 244.000000 USDT (warning level 80.0%)" in ba[58]
    assert ba[900] == "244.000000" and ba[910] == "3" and 797 not in ba
    (copy,) = margin_calls(x.dc.take())
    assert copy[908] == ba[908] and copy[797] == "Y"
    assert margin_calls(x.acme2.take()) == [] and margin_calls(x.beta.take()) == []
    move_index(x, "BTC-PERP", 589_400)  # still between 80% and 90%
    assert margin_calls(x.acme.take()) == [] and margin_calls(x.dc.take()) == []
    move_index(x, "BTC-PERP", 589_100)  # 95.4%: the 90% level
    (ba,) = margin_calls(x.acme.take())
    assert ba[7944] == "0.9"


def test_isolated_margin_call_names_the_position():
    """An isolated position's margin call carries its Symbol and its own ratio."""
    x, _clock = margined_exchange()
    deposit(x, "A1", 1_000)
    deposit(x, "B1", 100_000)
    assert only(x.run(x.acme, al("ISO", 2, t7931="2")), "AM")[0][722] == "0"
    assert only(x.run(x.acme, al("LEV", 1, t7930="100")), "AM")[0][722] == "0"
    move_index(x, "BTC-PERP", 600_000)
    trade(x, "0.700", "60000")  # isolated margin 420 (0.7 x 60,000 / 100)
    x.acme.take()
    seen = events_of(x)
    move_index(x, "BTC-PERP", 598_000)  # equity 420 - 140 = 280, MM 209.3: 74.75%
    assert [e for _c, e in seen if type(e) is MarginCall] == []
    move_index(x, "BTC-PERP", 597_600)  # equity 252, MM 209.16: 83.0%
    (call,) = [e for _c, e in seen if type(e) is MarginCall]
    assert (call.symbol, call.level_ppm) == ("BTC-PERP", 800_000)
    (ba,) = margin_calls(x.acme.take())
    assert ba[55] == "BTC-PERP" and ba[7944] == "0.8"
    assert "the isolated BTC-PERP position's maintenance margin 209.160000 USDT" in ba[58]
    assert "of its equity 252.000000 USDT" in ba[58]
    assert ba[7940] == f"{call.ratio_ppm / 1e6:.6f}".rstrip("0")


def test_liquidation_reports_takeover_and_position_after():
    """The index falls through the bankruptcy price: A1's stop is canceled (7945=1, Text),
    its liquidation order LIQ-0 is reported New / fill against B1's bid / remainder canceled,
    then the insurance fund's takeover of the rest at 58,601.5 (7945=2, OrderID TKO-<exec
    id>, ExecID <exec id>-L, SecondaryOrderID the liquidation order); to both order-entry
    sessions of the firm (logged on or not) and once to the drop copy; the subscribed AP
    shows the position flat after them; everything from the same engine command."""
    x, _clock = margined_exchange()
    long_a1(x, fund_usdt=1_000)
    got = x.run(x.acme, new_order("STOP", "2", "0.100", None, "3", "BTC-PERP", "A1",
                                  (99, "57000")))
    assert only(got, "8")[0][150] == "0"
    x.run(x.beta, new_order("BID", "1", "0.100", "58700", "2", "BTC-PERP", "B1"))
    x.run(x.acme, an("SUB", sub="1", symbol="BTC-PERP"))
    x.app.risk_desk.logged_off(x.acme2)  # away: still gets the reports (stored for resend)
    for s in (x.acme, x.acme2, x.beta, x.dc):
        s.take()
    seen = events_of(x)
    move_index(x, "BTC-PERP", 580_000)

    (step,) = [e for _c, e in seen if type(e) is Liquidated]
    (command,) = {c for c, e in seen if e is step}
    (tr,) = [e for _c, e in seen if type(e) is PositionTransferred]
    (acc,) = [e for _c, e in seen if type(e) is OrderAccepted and e.order_id >= LIQ_ID_BASE]
    (fill,) = [e for _c, e in seen if type(e) is Trade and e.taker_order_id == acc.order_id]
    assert (step.filled, step.taken_over, step.bankruptcy_price) == (100, 600, 586_015)
    assert tr.kind is TransferKind.TAKEOVER and tr.to_account == INSURANCE

    got = x.acme.take()
    ers = liq(got)
    assert [(e[150], e[39]) for e in ers] == [("4", "4"), ("0", "0"), ("F", "1"), ("4", "4"),
                                              ("F", "2")]
    stop, new, part, rest, takeover = ers
    assert stop[11] == "STOP" and stop[7945] == "1" and "being liquidated" in stop[58]
    assert new[37] == str(acc.order_id) and new[11] == "LIQ-0" == acc.cl_ord_id
    assert new[17] == str(acc.exec_id) and new[7945] == "1" and new[1] == "A1"
    assert (new[54], new[38], new[40], new[44], new[59]) == ("2", "0.700", "2", "58601.5", "3")
    assert "bankruptcy price 58601.5" in new[58]
    assert part[17] == f"{fill.exec_id}-T" and (part[32], part[31]) == ("0.100", "58700.0")
    assert (part[14], part[151], part[851], part[7945]) == ("0.100", "0.600", "2", "1")
    assert rest[37] == new[37] and rest[14] == "0.100" and rest[151] == "0"
    assert "taken over by the insurance fund or auto-deleveraged" in rest[58]
    assert takeover[37] == takeover[11] == f"TKO-{tr.exec_id}"
    assert takeover[17] == f"{tr.exec_id}-L" and takeover[198] == str(acc.order_id)
    assert (takeover[32], takeover[31], takeover[6], takeover[14], takeover[151]) == (
        "0.600", "58601.5", "58601.5", "0.600", "0")
    assert (takeover[54], takeover[7945], takeover[12]) == ("2", "2", "0")
    assert "taken over by the insurance fund at the bankruptcy price 58601.5" in takeover[58]
    stamp = {e[60] for e in ers}
    assert len(stamp) == 1  # one engine command: one TransactTime
    # the subscribed position report comes after the reports, flat, from the same command
    kinds = [t for t, _f in got if t in ("8", "AP")]
    assert kinds.index("AP") > max(i for i, t in enumerate(kinds) if t == "8")
    ap = only(got, "AP")[-1]
    assert ap[710] == "SUB" and (ap[704], ap[705]) == ("0.000", "0.000")
    assert ap[721].startswith(f"AP-{command.ts}-")
    # the other session of the firm gets the liquidation's (the stop was ACME1's own order);
    # the drop copy one copy of each
    assert [e[17] for e in liq(x.acme2.take())] == [e[17] for e in ers[1:]]
    got_dc = x.dc.take()
    copies = liq(got_dc)
    assert [e[17] for e in copies] == [e[17] for e in ers]
    assert all(c[797] == "Y" for c in copies)
    # and the drop copy's position and collateral pushes after the liquidation
    dc_ap = [a for a in only(got_dc, "AP") if a[1] == "A1"][-1]
    assert (dc_ap[704], dc_ap[705], dc_ap[797]) == ("0.000", "0.000", "Y")
    dc_ba = [b for b in only(got_dc, "BA") if b[1] == "A1"][-1]
    balance = x.app.risk.accounts[("A1", "USDT")][0]
    assert dc_ba[7937] == f"{balance / USDT:.6f}" and dc_ba[7936] == "0.000000"
    # B1's bid was the maker: an ordinary fill, not marked
    (maker,) = only(x.beta.take(), "8")
    assert maker[11] == "BID" and maker[150] == "F" and 7945 not in maker
    assert x.app.risk.positions[(INSURANCE, "BTC-PERP")].size == 600


def test_adl_reports_reach_the_counterparty():
    """With an empty insurance fund the remainder is auto-deleveraged against B1 (the only
    short): A1 gets 7945=3 with ExecID <exec id>-L, B1's session an ExecutionReport of its
    own (OrderID ADL-<exec id>, ExecID <exec id>-C, side buy, 'auto-deleveraged' Text) and
    its subscribed AP shows it flat."""
    x, _clock = margined_exchange()
    long_a1(x)
    x.run(x.beta, an("BSUB", account="B1", sub="1", symbol="BTC-PERP"))
    for s in (x.acme, x.acme2, x.beta, x.dc):
        s.take()
    seen = events_of(x)
    move_index(x, "BTC-PERP", 580_000)
    (tr,) = [e for _c, e in seen if type(e) is PositionTransferred]
    assert tr.kind is TransferKind.ADL and (tr.from_account, tr.to_account) == ("A1", "B1")
    ers = liq(x.acme.take())
    assert [e[150] for e in ers] == ["0", "4", "F"]
    mine = ers[-1]
    assert mine[37] == mine[11] == f"ADL-{tr.exec_id}" and mine[17] == f"{tr.exec_id}-L"
    assert mine[7945] == "3" and mine[54] == "2" and "auto-deleveraged" in mine[58]
    got = x.beta.take()
    (theirs,) = liq(got)
    assert theirs[37] == f"ADL-{tr.exec_id}" and theirs[17] == f"{tr.exec_id}-C"
    assert (theirs[1], theirs[54], theirs[32], theirs[31], theirs[7945]) == (
        "B1", "1", "0.700", "58601.5", "3")
    assert 198 not in theirs and theirs[58].startswith("auto-deleveraged: your position")
    ap = only(got, "AP")[-1]
    assert ap[710] == "BSUB" and (ap[704], ap[705]) == ("0.000", "0.000")
    assert [e[17] for e in liq(x.dc.take())] == [e[17] for e in ers]  # ACME's copy only


def test_liquidation_reports_are_rebuilt_identically_for_redelivery():
    """The start-up redelivery runs the journal tail through reports_of/deliveries: the
    liquidation tick gives the same messages the live path sent (every recipient), and
    nothing is built when the builder is told every recipient stored them already."""
    x, _clock = margined_exchange()
    long_a1(x, fund_usdt=1_000)
    processed: list = []
    x.pipeline.subscribers.insert(0, processed.extend)
    for s in (x.acme, x.acme2, x.dc):
        s.take()
    move_index(x, "BTC-PERP", 580_000)
    (p,) = [q for q in processed if any(type(e) is Liquidated for e in q.events)]
    live = {s.settings.target_comp_id: liq(s.take()) for s in (x.acme, x.acme2, x.dc)}
    rebuilt: dict[str, list] = {name: [] for name in live}
    for report in x.app.reports_of(p):
        for session, msg_type, fields in x.app.deliveries(report):
            if msg_type == "8" and any(t == 7945 for t, _v in fields):
                rebuilt[session.settings.target_comp_id].append(
                    {t: v.decode() if isinstance(v, bytes) else str(v) for t, v in fields})
    assert rebuilt == live and all(live.values())
    asked: list = []

    def delivered(sid: str, account: str, exec_id: str) -> bool:
        asked.append((sid, account, exec_id))
        return True

    x.app.builder.delivered = delivered
    try:
        again = [r for r in x.app.reports_of(p) if any(t == 7945 for t, _v in r.fields)]
    finally:
        x.app.builder.delivered = None
    assert again == []
    # each report asked once per order-entry session; the firm's drop copies with the first
    acme1, acme2 = x.acme.settings.session_id, x.acme2.settings.session_id
    assert {(sid, account) for sid, account, _e in asked} == {(acme1, "A1"), (acme2, "")}


def test_funding_moves_the_collateral_report():
    """At the funding instant the subscribed BA shows the balance after the payment."""
    x, _clock = margined_exchange()
    long_a1(x)
    x.run(x.acme, msg("BB", (909, "FUND"), (263, "1"), (1, "A1")))
    before = x.app.risk.accounts[("A1", "USDT")][0]
    seen = events_of(x)
    instant = -(-x.pipeline.now // (28_800 * 10**9)) * 28_800 * 10**9
    x.pipeline.now = instant
    move_index(x, "BTC-PERP", 600_000)
    (pay,) = [e for _c, e in seen if type(e) is FundingPayment and e.account == "A1"]
    assert pay.amount < 0  # a long pays the interest rate
    pushed = [b for b in only(x.acme.take(), "BA") if b.get(909) == "FUND"]
    assert pushed and pushed[-1][7937] == f"{(before + pay.amount) / USDT:.6f}"


def test_replace_changes_the_trigger_source_of_a_waiting_stop():
    """G with 7943 changes an untriggered stop's source (ReplaceOrder.trigger_by); on a limit
    order it is refused at once, on a triggered stop by the engine, both with clear Text."""
    x, _clock = margined_exchange()
    deposit(x, "A1", 10_000)
    deposit(x, "B1", 10_000)
    seen: list = []
    x.pipeline.subscribers.insert(0, lambda processed: seen.extend(p.command for p in processed))

    def replace(orig: str, cl: str, ord_type: str, *extra: tuple[int, str]) -> Any:
        return msg("G", (41, orig), (11, cl), (1, "A1"), (55, "BTC-PERP"), (54, "1"),
                   (60, "20240101-00:00:00"), (38, "0.001"), (40, ord_type), *extra)

    x.run(x.acme, new_order("ST1", "1", "0.001", None, "3", "BTC-PERP", "A1", (99, "61000"),
                            (7943, "1")))
    (er,) = only(x.run(x.acme, replace("ST1", "ST2", "3", (99, "61000"), (7943, "2"))), "8")
    assert er[150] == "5" and er[11] == "ST2"
    (cmd,) = [c for c in seen if getattr(c, "cl_ord_id", "") == "ST2"]
    assert cmd.trigger_by == 2  # TriggerBy.MARK
    oid = int(er[37])
    assert x.engine.orders[oid].spec.trigger_mark
    (rej,) = only(x.run(x.acme, replace("ST2", "ST3", "3", (99, "61000"), (7943, "9"))), "9")
    assert "TriggerPriceSource (7943) must be 1" in rej[58]
    x.run(x.acme, new_order("LIM", "1", "0.001", "59000", "2", "BTC-PERP", "A1"))
    (rej,) = only(x.run(x.acme, replace("LIM", "LIM2", "2", (44, "59000"), (7943, "2"))), "9")
    assert rej[102] == "99" and "for stop orders (OrdType 3 or 4) only" in rej[58]
    # a stop-limit that has triggered (a trade at 60,000 >= its StopPx) rests as a limit
    x.run(x.acme, new_order("SL1", "1", "0.001", "59500", "4", "BTC-PERP", "A1",
                            (99, "60000")))
    trade(x, "0.001", "60000")
    (rej,) = only(x.run(x.acme, replace("SL1", "SL2", "4", (44, "59500"), (7943, "2"))), "9")
    assert rej[102] == "99" and "stop order that has not triggered yet" in rej[58]

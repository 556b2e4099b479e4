"""OrderEntryApplication driven end to end with a real engine and a synchronous pipeline."""

from __future__ import annotations

from fixserver.orderentry.ownership import OrderLedger
from fixserver.orderentry.used_ids import UsedIds

from .harness import Exchange, msg, new_order

KEY = ((55, "BTC-PERP"), (54, "1"), (60, "20240101-00:00:00"))


def only(received: list, msg_type: str = "8") -> list[dict]:
    return [f for m, f in received if m == msg_type]


def test_new_order_is_acknowledged_only_after_release() -> None:
    """A NewOrderSingle gets ExecType 0 once its tick is released, not before."""
    x = Exchange()
    x.send(x.acme, new_order("C1"))
    assert x.acme.take() == []
    x.pipeline.tick()
    (er,) = only(x.acme.take())
    assert er[150] == "0" and er[39] == "0" and er[11] == "C1" and er[1] == "A1"
    assert er[37] != "NONE" and er[17].isdigit()
    assert er[151] == "0.005" and er[14] == "0" and er[6] == "0" and er[55] == "BTC-PERP"
    assert er[44] == "60000.0" and er[40] == "2" and er[59] == "0"
    assert x.flushed, "the session must be flushed after a release"


def test_partial_fill_between_two_firms_reports_both_sides_and_drop_copy() -> None:
    """A trade gives the maker 851=1 and the taker 851=2, with LastQty/LastPx/fees;
    the ACME drop copy gets a copy with 797=Y."""
    x = Exchange()
    x.run(x.acme, new_order("S1", side="2", qty="0.010"))
    x.dc.take()
    x.send(x.beta, new_order("B1", side="1", qty="0.004", account="B1"))
    x.pipeline.tick()
    maker = only(x.acme.take())[-1]
    taker = only(x.beta.take())[-1]
    assert maker[150] == "F" and maker[39] == "1" and maker[851] == "1"
    assert maker[32] == "0.004" and maker[31] == "60000.0" and maker[151] == "0.006"
    assert maker[17].endswith("-M") and taker[17].endswith("-T")
    assert taker[150] == "F" and taker[39] == "2" and taker[851] == "2" and taker[14] == "0.004"
    assert taker[13] == "3" and taker[12] == "0.12"  # 5 bp of 240 USD
    assert maker[12] == "-0.024"
    copies = only(x.dc.take())
    assert [c[797] for c in copies] == ["Y"] and copies[0][17] == maker[17]


def test_cancel_and_unknown_orig_cl_ord_id() -> None:
    """F cancels the order (150=4, ClOrdID = request, OrigClOrdID = order); an unknown
    OrigClOrdID gets OrderCancelReject 102=1, 434=1."""
    x = Exchange()
    x.run(x.acme, new_order("C1"))
    cancel = msg("F", (41, "C1"), (11, "X1"), *KEY)
    (er,) = only(x.run(x.acme, cancel))
    assert er[150] == "4" and er[39] == "4" and er[11] == "X1" and er[41] == "C1"
    unknown = msg("F", (41, "NOPE"), (11, "X2"), *KEY)
    (rej,) = only(x.run(x.acme, unknown), "9")
    assert rej[102] == "1" and rej[434] == "1" and rej[41] == "NOPE" and rej[37] == "NONE"
    again = msg("F", (41, "C1"), (11, "X3"), *KEY)
    (late,) = only(x.run(x.acme, again), "9")
    assert late[102] == "0" and late[39] == "4"


def test_replace_keeps_or_loses_priority() -> None:
    """A quantity decrease keeps time priority; a price change loses it (the later order
    at the same price fills first)."""
    x = Exchange()
    x.run(x.acme, new_order("A", side="2", qty="0.002"))
    x.run(x.acme2, new_order("B", side="2", qty="0.002"))
    repl = msg("G", (41, "A"), (11, "A2"), (1, "A1"), (55, "BTC-PERP"), (54, "2"),
               (60, "20240101-00:00:00"), (38, "0.001"), (40, "2"), (44, "60000"))
    (er,) = only(x.run(x.acme, repl))
    assert er[150] == "5" and er[11] == "A2" and er[41] == "A" and er[151] == "0.001"
    x.run(x.beta, new_order("T1", side="1", qty="0.001", account="B1"))
    ledger = x.app.ledger
    assert ledger.find("FIX.4.4:EXCH->ACME1", "A2").leaves == 0  # "A" kept its priority
    assert ledger.find("FIX.4.4:EXCH->ACME2", "B").filled == 0
    repl2 = msg("G", (41, "B"), (11, "B2"), (1, "A1"), (55, "BTC-PERP"), (54, "2"),
                (60, "20240101-00:00:00"), (38, "0.002"), (40, "2"), (44, "60000.1"))
    x.run(x.acme2, repl2)
    x.run(x.acme, new_order("C", side="2", qty="0.001", price="60000.1"))
    x.run(x.beta, new_order("T2", side="1", qty="0.001", account="B1", price="60000.1"))
    assert ledger.find("FIX.4.4:EXCH->ACME2", "B2").filled == 1  # it re-entered first
    assert ledger.find("FIX.4.4:EXCH->ACME1", "C").filled == 0


def test_rejects_before_the_engine() -> None:
    """Unknown symbol 103=1, off-tick price 99, off-lot qty 13, missing OrderQty 13,
    foreign account 15, duplicate ClOrdID 6: each an ExecutionReport 150=8 with a Text."""
    x = Exchange()
    cases = [
        (new_order("R1", symbol="DOGE-PERP"), "1", "unknown symbol"),
        (new_order("R2", price="60000.05"), "99", "tick size"),
        (new_order("R3", qty="0.0005"), "13", "lot size"),
        (new_order("R4", qty=None), "13", "OrderQty (38) is required"),
        (new_order("R5", account="B1"), "15", "not an account of firm ACME"),
        (new_order("R5"), "6", "duplicate ClOrdID"),
        (new_order("R6", ord_type="2", price=None), "99", "Price (44) is required"),
        (new_order("R7", "1", "0.001", "60000", "2", "BTC-PERP", "A1", (59, "2")), "11",
         "TimeInForce"),
    ]
    for message, reason, text in cases:
        (er,) = only(x.run(x.acme, message))
        assert (er[150], er[39], er[103]) == ("8", "8", reason), (er, text)
        assert text in er[58], er
        assert er[37] == "NONE" and er[17].startswith("R-")


def test_engine_reject_maps_reason_and_text() -> None:
    """An engine reject (price outside the band) is ExecType 8 with 103=99 and the rule."""
    x = Exchange()
    (er,) = only(x.run(x.acme, new_order("E1", price="90000")))
    assert er[150] == "8" and er[103] == "99" and "band" in er[58] and er[17].isdigit()


def test_poss_resend_of_a_used_cl_ord_id_is_ignored() -> None:
    """PossResend=Y with a used ClOrdID gets no answer; without PossResend it is a duplicate."""
    x = Exchange()
    x.run(x.acme, new_order("P1"))
    resent = new_order("P1", "1", "0.005", "60000", "2", "BTC-PERP", "A1", (97, "Y"))
    assert x.run(x.acme, resent) == []
    fresh = new_order("P2", "1", "0.005", "60000", "2", "BTC-PERP", "A1", (97, "Y"))
    assert only(x.run(x.acme, fresh))[0][150] == "0"


def test_drop_copy_session_cannot_trade() -> None:
    """A drop-copy session's NewOrderSingle gets BusinessMessageReject 380=3."""
    x = Exchange()
    (bmr,) = only(x.run(x.dc, new_order("D1")), "j")
    assert bmr[380] == "3" and bmr[372] == "D"


def test_mass_cancel_and_mass_status() -> None:
    """q 530=7 cancels all the firm's orders (one report, 533 = count); AF lists open orders
    with 911 and 912=Y on the last."""
    x = Exchange()
    for cl in ("M1", "M2"):
        x.run(x.acme, new_order(cl, qty="0.001"))
    x.run(x.acme2, new_order("M3", qty="0.001", account="A2"))
    status = msg("AF", (584, "ST1"), (585, "7"))
    x.send(x.acme, status)
    reports = only(x.acme.take())
    assert [r[150] for r in reports] == ["I"] * 3
    assert [r[912] for r in reports] == ["N", "N", "Y"] and {r[911] for r in reports} == {"3"}
    q = msg("q", (11, "MC1"), (530, "7"), (60, "20240101-00:00:00"))
    received = x.run(x.acme, q)
    (report,) = only(received, "r")
    assert report[531] == "7" and report[533] == "3" and report[11] == "MC1"
    assert len(only(received)) == 2  # ACME1's two orders; ACME2's went to ACME2
    assert len(only(x.acme2.take())) == 1
    x.send(x.acme, msg("AF", (584, "ST2"), (585, "7")))
    (none,) = only(x.acme.take())
    assert none[911] == "0" and none[912] == "Y" and none[37] == "NONE"


def test_order_status_request() -> None:
    """H answers ExecType I with the order's state; an unknown ClOrdID gets 39=8 103=5."""
    x = Exchange()
    x.run(x.acme, new_order("H1"))
    x.send(x.acme, msg("H", (11, "H1"), (55, "BTC-PERP"), (54, "1"), (790, "Q1")))
    (er,) = only(x.acme.take())
    assert er[150] == "I" and er[39] == "0" and er[790] == "Q1" and er[11] == "H1"
    x.send(x.acme, msg("H", (11, "NOPE"), (55, "BTC-PERP"), (54, "1")))
    (unknown,) = only(x.acme.take())
    assert unknown[39] == "8" and unknown[103] == "5"


def test_stop_order_triggers_with_exec_type_l() -> None:
    """A buy stop triggers when the last trade reaches its StopPx: ExecType L, then fills."""
    x = Exchange()
    stop = new_order("ST", "1", "0.001", None, "3", "BTC-PERP", "A1", (99, "60010"))
    (ack,) = only(x.run(x.acme, stop))
    assert ack[150] == "0" and ack[99] == "60010.0"
    x.run(x.beta, new_order("S1", side="2", qty="0.002", price="60010", account="B1"))
    x.run(x.acme2, new_order("T1", side="1", qty="0.001", price="60010", account="A2"))
    types = [r[150] for r in only(x.acme.take())]
    assert types == ["L", "F"], types


def test_throttle_rejects_then_disconnects() -> None:
    """Over ThrottleRate: BusinessMessageReject 380=8 (after the acks of the orders before
    them: answers keep request order); past 3x the rate: logged out."""
    x = Exchange(session={"throttle_rate": 2})
    now = x.pipeline.now
    for i in range(7):
        x.send(x.acme, new_order(f"T{i}", qty="0.001"), now=now)
    assert x.acme.take() == [], "the rejects wait for the acks of T0 and T1"
    x.settle()
    got = x.acme.take()
    assert [m for m, _ in got] == ["8", "8", "j", "j", "j", "j", "j"]
    bmrs = [f for m, f in got if m == "j"]
    assert [b[380] for b in bmrs] == ["8"] * 5
    assert len(x.disconnected) == 1


def test_max_open_orders_per_account() -> None:
    """The account's MaxOpenOrders counts live and in-flight orders; the next is refused."""
    x = Exchange(max_open=2)
    x.send(x.acme, new_order("O1", qty="0.001"))
    x.send(x.acme, new_order("O2", qty="0.001"))
    x.send(x.acme, new_order("O3", qty="0.001"))
    x.settle()
    (_, _, refused) = only(x.acme.take())
    assert refused[103] == "99" and "MaxOpenOrders 2" in refused[58]


def test_kill_switch_cancels_and_refuses() -> None:
    """The kill switch cancels all the firm's orders and refuses new ones until lifted."""
    x = Exchange()
    x.run(x.acme, new_order("K1", qty="0.001"))
    x.app.set_kill_switch("ACME", True)
    x.pipeline.tick()
    assert [r[150] for r in only(x.acme.take())] == ["4"]
    (refused,) = only(x.run(x.acme, new_order("K2")))
    assert refused[58] == "kill switch active for firm ACME"
    x.app.set_kill_switch("ACME", False)
    assert only(x.run(x.acme, new_order("K3")))[0][150] == "0"


def test_cancel_on_disconnect_from_logon_tag() -> None:
    """CancelOnDisconnect=Y on the Logon (7929) cancels the session's orders at logout;
    the other session's orders stay."""
    x = Exchange()
    x.app.on_logon(x.acme, msg("A", (7929, "Y")), x.pipeline.now)
    x.run(x.acme, new_order("C1", qty="0.001"))
    x.run(x.acme2, new_order("C2", qty="0.001", account="A2"))
    x.app.on_logout(x.acme, x.pipeline.now)
    x.pipeline.tick()
    assert [r[150] for r in only(x.acme.take())] == ["4"]
    assert x.acme2.take() == []


def test_ledger_restores_owners_from_recorder_snapshot() -> None:
    """A ledger rebuilt from the recorder's snapshot and the engine knows the live orders'
    owners and ClOrdIDs (what a restart from a snapshot needs)."""
    x = Exchange()
    x.run(x.acme, new_order("L1", qty="0.001"))
    x.run(x.acme, new_order("L2", qty="0.001", price="59000"))
    extra = x.pipeline.sequencer.snapshot(x.engine.orders)
    ledger = OrderLedger()
    ledger.restore(x.engine, {int(k): v for k, v in extra["owners"].items()},
                   UsedIds.load(extra["used"]))
    view = ledger.find("FIX.4.4:EXCH->ACME1", "L2")
    assert view is not None and view.live and view.price == 590000
    assert ledger.is_used("FIX.4.4:EXCH->ACME1", "L1")


def test_reports_step_through_fills_of_an_order_that_trades_on_entry() -> None:
    """An aggressive order's New ack says CumQty 0 / LeavesQty = OrderQty, and each fill
    against two makers shows the quantities after that fill, not after the whole command."""
    x = Exchange()
    x.run(x.acme, new_order("S1", side="2", qty="0.002"))
    x.run(x.acme2, new_order("S2", side="2", qty="0.002"))
    x.send(x.beta, new_order("B1", side="1", qty="0.004", account="B1"))
    x.pipeline.tick()
    ack, first, second = only(x.beta.take())
    assert (ack[150], ack[39], ack[14], ack[151], ack[6]) == ("0", "0", "0", "0.004", "0")
    assert (first[150], first[39], first[14], first[151]) == ("F", "1", "0.002", "0.002")
    assert (second[150], second[39], second[14], second[151]) == ("F", "2", "0.004", "0")


def test_order_processing_latency_is_observed_when_the_ack_is_released() -> None:
    """order_processing_latency_ms counts one observation per order, at its release."""
    from prometheus_client import REGISTRY

    def count() -> float:
        return REGISTRY.get_sample_value("order_processing_latency_ms_count") or 0.0

    x = Exchange()
    before = count()
    x.send(x.acme, new_order("L1"))
    assert count() == before, "nothing is observed before the tick is released"
    x.pipeline.tick()
    assert count() == before + 1

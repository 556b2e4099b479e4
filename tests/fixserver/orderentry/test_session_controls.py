"""Kill switch with orders in flight, cancel-on-disconnect (journaled, with a grace delay),
cancel reasons in Text, and status answers for ended orders."""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import reactor, task

from engine.commands import SessionStatus
from fixserver.config import parse_config
from fixserver.server import FixServer
from tests.fixserver.inprocess_exchange import exchange_config

from .harness import Exchange, msg, new_order

KEY = ((55, "BTC-PERP"), (54, "1"), (60, "20240101-00:00:00"))


def test_kill_switch_leaves_no_live_order_even_in_flight() -> None:
    """Orders submitted but not yet matched when the switch is thrown are canceled by it like
    resting ones (Text says it was the kill switch); new ones are refused at once."""
    x = Exchange()
    x.run(x.acme, new_order("REST", price="59000"))
    x.send(x.acme, new_order("FLY", price="59001"))  # in the inbox, not matched
    x.app.set_kill_switch("ACME", True)
    x.send(x.acme2, new_order("LATE", price="59002", account="A2"))  # refused at once
    x.settle()
    got = [(f[11], f[150], f.get(58, "")) for _, f in x.acme.take()]
    # FLY entered the inbox before the switch: accepted, then canceled by it with REST
    assert got == [("FLY", "0", ""), ("REST", "4", "canceled by the firm's kill switch"),
                   ("FLY", "4", "canceled by the firm's kill switch")], got
    (late,) = [f for _, f in x.acme2.take()]
    assert late[150] == "8" and "kill switch" in late[58]
    assert not [o for o in x.engine.orders.values() if o.account in ("A1", "A2")]
    assert x.app.kill_canceled["ACME"] == 2
    x.app.set_kill_switch("ACME", False)
    x.settle()
    assert "ACME" not in x.app.killed and not x.engine.blocked


def test_cancel_on_disconnect_is_journaled_and_cancels_with_text() -> None:
    """Logon journals the choice; logout cancels the orders with Text and reason."""
    x = Exchange(session={"cancel_on_disconnect": True})
    x.app.on_logon(x.acme, None, 0)
    x.run(x.acme, new_order("C1"))
    assert x.engine.sessions[x.acme.settings.session_id] == (True, True)
    x.app.on_logout(x.acme, 0)
    x.settle()
    (er,) = [f for _, f in x.acme.take()]
    assert er[150] == "4" and "disconnect" in er[58]
    assert x.engine.sessions[x.acme.settings.session_id] == (False, True)


def test_cancel_on_disconnect_waits_for_the_delay_and_a_logon_keeps_the_orders() -> None:
    """With a delay, orders are canceled only once it has passed; logging on again within it
    keeps them."""
    clock = task.Clock()
    x = Exchange(session={"cancel_on_disconnect": True}, call_later=clock.callLater,
                 cancel_on_disconnect_delay=5.0)
    x.app.on_logon(x.acme, None, 0)
    x.run(x.acme, new_order("C1"))
    x.app.on_logout(x.acme, 0)
    x.settle()
    clock.advance(4.9)
    x.settle()
    assert len(x.engine.orders) == 1
    x.app.on_logon(x.acme, None, 0)
    clock.advance(10)
    x.settle()
    assert len(x.engine.orders) == 1, "a logon within the delay keeps the orders"
    x.app.on_logout(x.acme, 0)
    clock.advance(5.0)
    x.settle()
    assert not x.engine.orders


def test_order_in_flight_at_disconnect_is_canceled_when_released() -> None:
    """An order still in flight when the session leaves is canceled once it is accepted."""
    x = Exchange(session={"cancel_on_disconnect": True})
    x.app.on_logon(x.acme, None, 0)
    x.send(x.acme, new_order("C1"))
    x.app.on_logout(x.acme, 0)
    x.settle()
    assert not x.engine.orders


def test_resume_sessions_cancels_for_sessions_connected_at_the_crash() -> None:
    """At start-up, a session the journal says was connected with cancel-on-disconnect is
    handled as disconnected: journaled as such, its orders canceled."""
    x = Exchange()
    x.run(x.acme, new_order("C1"))
    sid = x.acme.settings.session_id
    x.pipeline.submit((sid, "S"), SessionStatus(0, 0, sid, True, True))
    x.settle()
    assert x.app.resume_sessions(dict(x.engine.sessions)) == [sid]
    x.settle()
    assert not x.engine.orders
    assert x.engine.sessions[sid] == (False, True)


def test_status_of_an_ended_order_and_retention() -> None:
    """H answers for a filled order; once its retention (the trading day it ended in and the
    next) is over, it is unknown."""
    x = Exchange()
    x.run(x.beta, new_order("S1", side="2", qty="0.001", account="B1"))
    x.run(x.acme, new_order("B1", qty="0.001"))
    (status,) = x.run(x.acme, msg("H", (11, "B1"), *KEY))
    assert status[1][150] == "I" and status[1][39] == "2"
    rows = x.app.ledger.ended_rows()
    assert {r[10] for r in rows} == {"S1", "B1"}
    x.pipeline.now += 2 * 86_400 * 1_000_000_000
    x.run(x.acme, new_order("C9", price="59000"))  # a tick on the day after next
    (gone,) = x.run(x.acme, msg("H", (11, "B1"), *KEY))
    assert gone[1][39] == "8"


def test_ended_rows_round_trip() -> None:
    """Ended orders saved in a snapshot are found again by a new ledger."""
    from fixserver.orderentry.ownership import OrderLedger

    x = Exchange()
    x.run(x.acme, new_order("C1", price="59000"))
    x.run(x.acme, msg("G", (41, "C1"), (11, "C2"), (1, "A1"), *KEY, (38, "0.001"), (40, "2"),
                      (44, "59000")))
    x.run(x.acme, msg("F", (41, "C2"), (11, "C3"), *KEY))
    ledger = OrderLedger()
    ledger.adopt_ended(x.app.ledger.ended_rows())
    sid = x.acme.settings.session_id
    view = ledger.find(sid, "C2")
    assert view is not None and view.status == "4" and ledger.find(sid, "C1") is view


@pytest_twisted.inlineCallbacks
def test_kill_switch_file_of_an_earlier_version_is_journaled_at_start(tmp_path):
    """A ``kill-switch.json`` left by an earlier version turns the switch on through the
    journal at start-up (the engine holds it from then on)."""
    (tmp_path / "journal").mkdir()
    (tmp_path / "journal" / "kill-switch.json").write_text(json.dumps({"killed": ["ACME"]}))
    server = FixServer(parse_config(exchange_config(tmp_path), base_dir=str(tmp_path)), reactor)
    server.start()
    try:
        pipeline = server.application.pipeline
        pipeline.tick()
        yield pipeline.when_idle()
        assert pipeline.engine.killed == {"ACME": ("A1",)}
        assert "ACME" in server.application.app.killed
    finally:
        yield server.stop()

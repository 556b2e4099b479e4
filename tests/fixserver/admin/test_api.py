"""The admin API over loopback against an in-process exchange: every action needs the
token, cross-site requests are refused, actions are journaled with who did them, a halt
makes the engine reject new orders."""

from __future__ import annotations

import os

import pytest_twisted
from twisted.internet import defer
from twisted.logger import formatEvent, globalLogPublisher

from engine.commands import AdminAction, KillSwitch, SetAccountStp, SetInstrumentStatus
from engine.enums import InstrumentStatus, StpMode
from fixserver.admin.journal_verify import verify_journal
from fixserver.journal_file import JournalDirectory

from .exchange import AUDITOR_TOKEN, TOKEN, api, base_url, is_type, logged_on, start
from .test_risk_api import RISK_VALID

#: one valid request per admin action (the test checks that it covers every route)
VALID = {
    "index": ("GET", "/admin", None),
    "state-hash": ("GET", "/admin/state-hash", None),
    "sessions": ("GET", "/admin/sessions", None),
    "instruments": ("GET", "/admin/instruments", None),
    "kill-switches": ("GET", "/admin/kill-switch", None),
    "instrument-status": ("POST", "/admin/instruments/status",
                          {"symbol": "BTC-PERP", "status": "post-only"}),
    "kill-switch": ("POST", "/admin/kill-switch", {"firm": "BETA", "active": True}),
    "account-stp": ("POST", "/admin/accounts/stp", {"account": "A1", "mode": "cancel-both"}),
    "snapshot": ("POST", "/admin/snapshot", {}),
    "list-instrument": ("POST", "/admin/instruments",
                        {"symbol": "XRP-PERP", "tick_size": "0.0001", "lot_size": "1"}),
    "set-seq": ("POST", "/admin/sessions/sequence",
                {"session": "BETA1", "next_sender_seq": 5, "next_target_seq": 7}),
    "logout": ("POST", "/admin/sessions/logout", {"session": "ACME1", "reason": "maintenance"}),
}


def _journal(tmp_path) -> list:
    """(origin, command) of every journaled command (read after the server stopped)."""
    directory = JournalDirectory(str(tmp_path / "journal"))
    return [entry for rec in directory.read_records() for entry in rec.entries]


@pytest_twisted.inlineCallbacks
def test_every_action_refuses_no_token_and_a_wrong_one_and_works_with_the_right_one(tmp_path):
    """401 with WWW-Authenticate without a token, 403 with a wrong one, the action's answer
    with the right one; the changes are journaled with the token's name."""
    server = start(tmp_path)
    try:
        url = base_url(server)
        routes = server.application.admin_resource.router.routes()
        # the risk actions need margined instruments: test_risk_api.py runs RISK_VALID
        assert {r.name for r in routes} == set(VALID) | set(RISK_VALID), \
            "VALID and RISK_VALID must cover every admin action"
        acme = yield logged_on(server, "ACME1")
        answers = {}
        for name, (method, path, body) in VALID.items():
            status, answer, headers = yield api(url, method, path, None, body)
            assert status == 401, (name, answer)
            assert headers["WWW-Authenticate"].startswith("Bearer"), name
            assert "authentication required" in answer["error"]
            status, answer, _ = yield api(url, method, path, "not-a-valid-token-xxxx", body)
            assert status == 403, (name, answer)
            status, answers[name], headers = yield api(url, method, path, TOKEN, body)
            assert status == 200, (name, answers[name])
            assert headers["Cache-Control"] == "no-store"
        assert {a["path"] for a in answers["index"]["actions"]} == \
            {v[1].split("?")[0] for v in (*VALID.values(), *RISK_VALID.values())}
        engine = server.application.pipeline.engine
        assert answers["state-hash"]["seq"] > 0
        sessions = {s["target_comp_id"]: s for s in answers["sessions"]["sessions"]}
        assert sessions["ACME1"]["logged_on"] and not sessions["BETA1"]["logged_on"]
        assert {"symbol": "BTC-PERP", "status": "trading"}.items() <= \
            answers["instruments"]["instruments"][0].items()
        assert answers["kill-switches"] == {"firms": ["ACME", "BETA"], "killed": []}
        assert answers["instrument-status"] == {"symbol": "BTC-PERP", "status": "post-only",
                                                "previous": "trading", "by": "ops"}
        assert engine.status("BTC-PERP") is InstrumentStatus.POST_ONLY
        assert answers["kill-switch"]["killed"] == ["BETA"] and engine.killed == {"BETA": ("B1",)}
        assert engine.account_stp["A1"] is StpMode.CANCEL_BOTH
        snapshot = answers["snapshot"]["snapshot"]
        assert os.path.exists(tmp_path / "journal" / snapshot)
        beta = next(s for s in server.sessions if s.settings.target_comp_id == "BETA1")
        assert (beta.store.next_sender_seq(), beta.store.next_target_seq()) == (5, 7)
        assert answers["set-seq"]["previous"] == {"next_sender_seq": 1, "next_target_seq": 1}
        logout = yield acme.wait_for(is_type(b"5"))
        assert logout.get(58) == b"maintenance"
        # a second token is a second operator
        status, answer, _ = yield api(url, "POST", "/admin/instruments/status", AUDITOR_TOKEN,
                                      {"symbol": "BTC-PERP", "status": "trading"})
        assert status == 200 and answer["by"] == "auditor"
    finally:
        # no final snapshot: its pruning would drop the journal segments read below
        server.application.pipeline.snapshot_on_shutdown = False
        yield server.stop()
    journaled = _journal(tmp_path)
    origins = {(o, type(c)) for o, c in journaled}
    assert (("", "A", "ops", "instrument-status"), SetInstrumentStatus) in origins
    assert (("", "A", "auditor", "instrument-status"), SetInstrumentStatus) in origins
    assert (("", "K", "BETA", "ops"), KillSwitch) in origins
    assert (("", "A", "ops", "account-stp"), SetAccountStp) in origins
    audit = [(c.who, c.action) for _, c in journaled if type(c) is AdminAction]
    assert audit == [("ops", "snapshot"), ("ops", "set-seq"), ("ops", "logout")]
    report = verify_journal(str(tmp_path / "journal"))
    assert report.ok, report.lines()
    assert report.admin_actions == {"ops": 3}


@pytest_twisted.inlineCallbacks
def test_cross_site_form_post_is_refused(tmp_path):
    """A form POST as a browser sends it (form content type, Origin, no Authorization) is
    refused; so is a change with the token but a form body or an Origin header."""
    server = start(tmp_path)
    try:
        url = base_url(server)
        form = {"Content-Type": "application/x-www-form-urlencoded",
                "Origin": "https://attacker.example"}
        status, answer, _ = yield api(url, "POST", "/admin/kill-switch", None, headers=form,
                                      raw=b"firm=ACME&active=1")
        assert status == 401, answer
        status, answer, _ = yield api(
            url, "POST", "/admin/kill-switch", TOKEN, raw=b"firm=ACME&active=1",
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 415, answer
        status, answer, _ = yield api(url, "POST", "/admin/kill-switch", TOKEN,
                                      {"firm": "ACME", "active": True},
                                      headers={"Origin": "http://127.0.0.1"})
        assert status == 403 and "Origin" in answer["error"]
        assert not server.application.pipeline.engine.killed
        assert not server.application.app.killed
    finally:
        yield server.stop()


@pytest_twisted.inlineCallbacks
def test_no_token_configured_disables_the_admin_api(tmp_path):
    """Safe by default: without AdminToken every /admin request is 403 saying why, while
    /health and /metrics stay open."""
    server = start(tmp_path, tokens=False)
    try:
        url = base_url(server)
        for method, path, body in VALID.values():
            status, answer, _ = yield api(url, method, path, TOKEN, body)
            assert status == 403 and "disabled" in answer["error"], (path, answer)
        for path in ("/health", "/metrics"):
            status, _, _ = yield api(url, "GET", path, None)
            assert status == 200
    finally:
        yield server.stop()


@pytest_twisted.inlineCallbacks
def test_bad_requests_get_clear_errors(tmp_path):
    """Unknown names 404, bad values and unknown parameters 400, wrong method 405, a
    logged-on session's sequence numbers 409, a session not logged on cannot be logged out."""
    server = start(tmp_path)
    try:
        url = base_url(server)
        yield logged_on(server, "ACME1")
        cases = [
            ("POST", "/admin/kill-switch", {"firm": "NOPE", "active": True}, 404, "unknown firm"),
            ("POST", "/admin/kill-switch", {"firm": "ACME"}, 400, "missing parameter active"),
            ("POST", "/admin/kill-switch", {"firm": "ACME", "activ": 1}, 400, "activ"),
            ("POST", "/admin/instruments/status", {"symbol": "BTC-PERP", "status": "closed"},
             400, "status must be one of trading, halted, cancel-only, post-only"),
            ("POST", "/admin/instruments/status", {"symbol": "DOGE", "status": "halted"}, 404,
             "unknown instrument"),
            ("POST", "/admin/accounts/stp", {"account": "ZZ", "mode": "cancel-both"}, 404,
             "unknown account"),
            ("POST", "/admin/sessions/sequence", {"session": "ACME1", "next_sender_seq": 9},
             409, "logged on"),
            ("POST", "/admin/sessions/sequence", {"session": "BETA1"}, 400, "next_sender_seq"),
            ("POST", "/admin/sessions/sequence", {"session": "BETA1", "next_target_seq": 0},
             400, ">= 1"),
            ("POST", "/admin/sessions/logout", {"session": "BETA1"}, 409, "not logged on"),
            ("POST", "/admin/sessions/logout", {"session": "X"}, 404, "not a configured"),
            ("GET", "/admin/kill-switch/extra", None, 404, "no admin action"),
            ("GET", "/admin/snapshot", None, 405, "takes POST"),
        ]
        for method, path, body, code, text in cases:
            status, answer, _ = yield api(url, method, path, TOKEN, body)
            assert (status, answer.get("status")) == (code, code), (path, body, answer)
            assert text in answer["error"], (path, body, answer)
        status, answer, _ = yield api(url, "POST", "/admin/kill-switch", TOKEN, raw=b"{no",
                                      headers={"Content-Type": "application/json"})
        assert status == 400 and "not valid JSON" in answer["error"]
        assert not server.application.app.killed
    finally:
        yield server.stop()


@pytest_twisted.inlineCallbacks
def test_halt_makes_the_engine_reject_new_orders(tmp_path):
    """After POST /admin/instruments/status halted, a NewOrderSingle is rejected (150=8)
    with Text "instrument is halted"; back to trading, it is accepted."""
    server = start(tmp_path)
    try:
        url = base_url(server)
        acme = yield logged_on(server, "ACME1")
        status, answer, _ = yield api(url, "POST", "/admin/instruments/status", TOKEN,
                                      {"symbol": "BTC-PERP", "status": "halted"})
        assert status == 200 and answer["status"] == "halted"
        order = [(11, "H1"), (1, "A1"), (55, "BTC-PERP"), (54, "1"),
                 (60, "20240101-00:00:00"), (38, "0.001"), (40, "2"), (44, "59000")]
        acme.send("D", order)
        report = yield acme.wait_for(lambda m: m.msg_type == b"8" and m.get(11) == b"H1")
        assert report.get(150) == b"8" and report.get(58) == b"instrument is halted"
        status, _, _ = yield api(url, "POST", "/admin/instruments/status", TOKEN,
                                 {"symbol": "BTC-PERP", "status": "trading"})
        assert status == 200
        acme.send("D", [(11, "H2"), *order[1:]])
        report = yield acme.wait_for(lambda m: m.msg_type == b"8" and m.get(11) == b"H2")
        assert report.get(150) == b"0"
    finally:
        yield server.stop()


@pytest_twisted.inlineCallbacks
def test_admin_port_serves_the_api_apart_from_the_http_port(tmp_path):
    """With AdminPort the admin API listens there only; /health stays on the HTTP port."""
    server = start(tmp_path, extra="AdminAddress=127.0.0.1\nAdminPort=0")
    try:
        status, _, _ = yield api(base_url(server), "GET", "/admin/sessions", TOKEN)
        assert status == 404
        status, answer, _ = yield api(base_url(server, admin_port=True), "GET",
                                      "/admin/sessions", TOKEN)
        assert status == 200 and len(answer["sessions"]) == 2
        status, _, _ = yield api(base_url(server, admin_port=True), "GET", "/admin/sessions",
                                 None)
        assert status == 401
    finally:
        yield server.stop()
    assert not server.admin_port.connected


@pytest_twisted.inlineCallbacks
def test_concurrent_kill_switch_requests_each_answer_once_durable(tmp_path):
    """Several changes at once: each is answered after its own tick is released."""
    server = start(tmp_path)
    try:
        url = base_url(server)
        results = yield defer.gatherResults([
            api(url, "POST", "/admin/kill-switch", TOKEN, {"firm": firm, "active": True})
            for firm in ("ACME", "BETA")])
        assert [r[0] for r in results] == [200, 200]
        assert server.application.pipeline.engine.killed.keys() == {"ACME", "BETA"}
    finally:
        yield server.stop()


@pytest_twisted.inlineCallbacks
def test_snapshot_now_is_a_full_snapshot_a_restart_recovers_from(tmp_path):
    """POST /admin/snapshot writes a snapshot at a tick boundary with the FIX layer's state
    (order ownership): the next start-up recovers from it and still knows the order's owner."""
    server = start(tmp_path)
    try:
        acme = yield logged_on(server, "ACME1")
        acme.send("D", [(11, "S1"), (1, "A1"), (55, "BTC-PERP"), (54, "1"),
                        (60, "20240101-00:00:00"), (38, "0.001"), (40, "2"), (44, "59000")])
        yield acme.wait_for(lambda m: m.msg_type == b"8" and m.get(11) == b"S1")
        status, answer, _ = yield api(base_url(server), "POST", "/admin/snapshot", TOKEN, {})
        assert status == 200, answer
        status, again, _ = yield api(base_url(server), "POST", "/admin/snapshot", TOKEN, {})
        assert status == 200 and again["next_seq"] > answer["next_seq"]
    finally:
        yield server.stop()
    server = start(tmp_path)
    try:
        pipeline = server.application.pipeline
        assert pipeline.recovered_from_seq >= again["next_seq"]
        (view,) = server.application.app.ledger.live_orders(accounts=["A1"])
        assert view.cl_ord_id == "S1" and view.session_id.endswith("ACME1")
    finally:
        yield server.stop()


@pytest_twisted.inlineCallbacks
def test_actions_and_refusals_are_logged_with_who_and_never_the_token(tmp_path):
    """admin.action names the operator and the action; admin.refused says why; no log line
    holds a secret, the presented one included."""
    events: list[str] = []

    def observe(event):
        if str(event.get("log_namespace", "")).startswith("fixserver.admin"):
            events.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    server = start(tmp_path)
    try:
        url = base_url(server)
        yield api(url, "POST", "/admin/kill-switch", TOKEN, {"firm": "ACME", "active": True})
        yield api(url, "GET", "/admin/sessions", "wrong-token-but-long-enough")
    finally:
        yield server.stop()
        globalLogPublisher.removeObserver(observe)
    action = next(e for e in events if e.startswith("admin.action"))
    assert "who=ops" in action and "action=kill-switch" in action and "code=200" in action
    refused = next(e for e in events if e.startswith("admin.refused"))
    assert "code=403" in refused and "/admin/sessions" in refused
    assert not any(TOKEN in e or "wrong-token" in e for e in events)


@pytest_twisted.inlineCallbacks
def test_an_instrument_listed_while_running_is_tradable_and_in_market_data(tmp_path):
    """POST /admin/instruments lists SOL-PERP through the journal: the engine, order entry,
    the FIX market-data SecurityList and the WebSocket feed's channels know it at once, it
    trades, and bad or duplicate listings are refused with the reason."""
    from tests.fixserver.inprocess_exchange import fix_message, session_of

    server = start(tmp_path, extra="WebSocketAddress=127.0.0.1\nWebSocketPort=0")
    try:
        url = base_url(server)
        body = {"symbol": "SOL-PERP", "tick_size": "0.001", "lot_size": "0.1",
                "min_qty": "0.1", "taker_fee_ppm": 600, "reference_price": "150"}
        status, answer, _ = yield api(url, "POST", "/admin/instruments", TOKEN, body)
        assert status == 200, answer
        assert answer == {"symbol": "SOL-PERP", "listed": True, "status": "trading",
                          "tick_size": "0.001", "lot_size": "0.1", "by": "ops"}
        service = server.application
        engine = service.pipeline.engine
        assert engine.markets["SOL-PERP"].instrument.taker_fee_ppm == 600
        assert "SOL-PERP" in service.app.instruments
        assert "SOL-PERP" in server.feeds.core.symbols
        assert "SOL-PERP" in server.feeds.market_data.instruments
        status, again, _ = yield api(url, "POST", "/admin/instruments", TOKEN, body)
        assert status == 409 and "already listed" in again["error"]
        status, bad, _ = yield api(url, "POST", "/admin/instruments", TOKEN,
                                   {"symbol": "ADA-PERP", "tick_size": "0.001",
                                    "lot_size": "0.1", "reference_price": "1.0005"})
        assert (status == 400 and "TickSize" in bad["error"]) or "tick_size" in bad["error"]
        now = server.now_ns()
        for session, cl, side, account in (("ACME1", "S1", "2", "A1"), ("BETA1", "B1", "1", "B1")):
            service.on_message(session_of(server, session), fix_message(
                "D", (11, cl), (1, account), (55, "SOL-PERP"), (54, side),
                (60, "20240101-00:00:00"), (38, "1.0"), (40, "2"), (44, "150.125")), now)
        service.pipeline.tick()
        yield service.pipeline.when_idle()
        assert engine.last_price("SOL-PERP") == 150_125
        assert service.positions.position("B1", "SOL-PERP").size == 10
    finally:
        yield server.stop()

"""The HTTP side serves Prometheus metrics and a JSON health document over loopback."""

from __future__ import annotations

import json

import attr
import pytest_twisted
from twisted.internet import reactor
from twisted.web.client import Agent, readBody

from fixserver import metrics
from fixserver.http import build_site
from fixserver.settings import SessionRole, SessionSettings
from fixserver.store import MemoryMessageStore


@attr.s(auto_attribs=True)
class _SessionView:
    """The attributes of a session that /health reads."""

    settings: SessionSettings
    store: MemoryMessageStore
    connection: object = None


def _sessions() -> list[_SessionView]:
    up = _SessionView(SessionSettings("FIX.4.4", "EXCH", "CLIENT1"), MemoryMessageStore())
    up.connection = object()
    up.store.set_next_sender_seq(5)
    down = _SessionView(
        SessionSettings("FIX.4.4", "EXCH", "MD", role=SessionRole.MARKET_DATA),
        MemoryMessageStore(),
    )
    return [up, down]


@pytest_twisted.inlineCallbacks
def _get(site, path: bytes):
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        agent = Agent(reactor)
        url = b"http://127.0.0.1:%d%s" % (port.getHost().port, path)
        response = yield agent.request(b"GET", url)
        body = yield readBody(response)
    finally:
        yield port.stopListening()
    return response, body


@pytest_twisted.inlineCallbacks
def test_health_lists_sessions():
    """GET /health returns status ok and each session's logon state and sequence numbers."""
    response, body = yield _get(build_site(_sessions()), b"/health")
    assert response.code == 200
    assert response.headers.getRawHeaders(b"content-type") == [b"application/json"]
    doc = json.loads(body)
    assert doc["status"] == "ok"
    assert doc["sessions"] == [
        {
            "id": "FIX.4.4:EXCH->CLIENT1",
            "role": "order-entry",
            "logged_on": True,
            "next_sender_seq": 5,
            "next_target_seq": 1,
        },
        {
            "id": "FIX.4.4:EXCH->MD",
            "role": "market-data",
            "logged_on": False,
            "next_sender_seq": 1,
            "next_target_seq": 1,
        },
    ]


@pytest_twisted.inlineCallbacks
def test_health_answers_503_with_the_reason_once_failing():
    """Once the server reports a failure, GET /health is 503: status failing and the reason."""
    reason = "order pipeline stopped: OSError: [Errno 28] No space left on device"
    response, body = yield _get(build_site(_sessions(), failure=lambda: reason), b"/health")
    assert response.code == 503
    doc = json.loads(body)
    assert (doc["status"], doc["reason"]) == ("failing", reason)
    assert [s["logged_on"] for s in doc["sessions"]] == [True, False]


@pytest_twisted.inlineCallbacks
def test_metrics_exposes_fix_counters():
    """GET /metrics returns the Prometheus text format including the FIX counters."""
    metrics.count_sent("FIX.4.4:EXCH->HTTPTEST", b"8=FIX.4.4\x019=5\x0135=0\x0110=000\x01")
    response, body = yield _get(build_site([]), b"/metrics")
    assert response.code == 200
    text = body.decode()
    assert 'fix_messages_sent_total{msg_type="0",session="FIX.4.4:EXCH->HTTPTEST"} 1.0' in text
    assert "fix_sessions_logged_on" in text


@pytest_twisted.inlineCallbacks
def test_unknown_path_is_404():
    """Paths other than /metrics and /health are not found."""
    response, _ = yield _get(build_site([]), b"/admin")
    assert response.code == 404


@pytest_twisted.inlineCallbacks
def test_admin_site_serves_only_admin():
    """With AdminPort the admin API has a site of its own: /admin there, nothing else."""
    from twisted.web.resource import Resource

    from fixserver.http import build_admin_site

    class Admin(Resource):
        isLeaf = True

        def render_GET(self, request):
            return b"admin"

    site = build_admin_site(Admin())
    response, body = yield _get(site, b"/admin/anything")
    assert response.code == 200 and body == b"admin"
    for path in (b"/metrics", b"/health"):
        response, _ = yield _get(site, path)
        assert response.code == 404

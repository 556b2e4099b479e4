"""RiskMonitor: seeded from the recovered engine, fed by released events; index ages by the
server's clock (task.Clock) make /health degraded naming the stale symbols, and the
index_price_age_seconds gauge follows."""

from __future__ import annotations

import json

import attr
import pytest_twisted
from prometheus_client import REGISTRY
from twisted.internet import task
from twisted.web.test.requesthelper import DummyRequest

from engine import MatchingEngine, demo_instruments
from engine.commands import Deposit, SetIndexPrice
from engine.recovery import ProcessedCommand
from fixserver.http import HealthResource
from fixserver.orderentry.risk_monitor import RiskMonitor
from tests.fixserver.admin.exchange import TOKEN, api, base_url
from tests.fixserver.admin.risk_exchange import start_margined
from tests.integration.conftest import wait_until

TIERS = ((50_000_000_000, 5_000, 100), (250_000_000_000, 10_000, 50))


def _engine() -> MatchingEngine:
    btc, eth = demo_instruments()
    return MatchingEngine([attr.evolve(btc, max_leverage=100, risk_tiers=TIERS),
                           attr.evolve(eth, max_leverage=50, default_leverage=10), ])


def _run(engine: MatchingEngine, command) -> list:
    """The command processed by the engine, as the pipeline releases it."""
    return [ProcessedCommand(("", "A"), command, engine.process(command))]


def _age(symbol: str) -> float | None:
    return REGISTRY.get_sample_value("index_price_age_seconds", {"symbol": symbol})


def test_seeded_from_the_recovered_engine_then_follows_released_events():
    """Collateral and index the engine had before the monitor existed are shown; later
    released deposits and index prices are applied."""
    engine = _engine()
    engine.process(Deposit(1, 1, "A1", "USDT", 5_000_000, "x"))
    engine.process(SetIndexPrice(2, 2, "BTC-PERP", 600_010))
    monitor = RiskMonitor(engine, lambda: 0.0, 10.0)
    assert monitor.model.view("A1", "USDT")[0].balance == 5_000_000
    assert monitor.marks("BTC-PERP")["index"] == "60001.0"
    assert monitor.assets == {"USDT": 6}
    monitor.on_released(_run(engine, Deposit(3, 3, "A1", "USDT", 1_500_000, "y")))
    monitor.on_released(_run(engine, SetIndexPrice(4, 4, "ETH-PERP", 300_123)))
    assert monitor.account("A1")["collateral"][0]["balance"] == "6.500000"
    assert monitor.marks("ETH-PERP")["index"] == "3001.23"


def test_stale_index_by_the_servers_clock_makes_health_degraded():
    """No index for longer than the limit: both symbols stale (counted from start-up); an
    index for one makes it fresh; /health says degraded with the names, 200; the gauge
    shows the ages."""
    clock = task.Clock()
    clock.advance(1000)
    engine = _engine()
    monitor = RiskMonitor(engine, clock.seconds, 10.0)
    health = HealthResource([], lambda: "ok", lambda: None, monitor.health_degraded)
    assert monitor.stale_symbols() == [] and monitor.health_degraded() is None
    assert json.loads(health.render_GET(DummyRequest([b"health"]))) == {
        "status": "ok", "sessions": []}
    clock.advance(10)
    assert monitor.stale_symbols() == []  # at the limit, not past it
    clock.advance(0.5)
    assert monitor.stale_symbols() == ["BTC-PERP", "ETH-PERP"]
    monitor.on_released(_run(engine, SetIndexPrice(1, 1, "BTC-PERP", 600_000)))
    clock.advance(3)
    assert monitor.index_ages() == {"BTC-PERP": 3.0, "ETH-PERP": 13.5}
    request = DummyRequest([b"health"])
    body = json.loads(health.render_GET(request))
    assert request.responseCode in (None, 200)
    assert body == {"status": "degraded", "stale_index": ["ETH-PERP"],
                    "index_stale_seconds": 10.0, "sessions": []}
    monitor.publish_metrics()
    assert _age("BTC-PERP") == 3.0 and _age("ETH-PERP") == 13.5
    assert REGISTRY.get_sample_value("index_price_stale", {"symbol": "ETH-PERP"}) == 1
    assert REGISTRY.get_sample_value("index_price_stale", {"symbol": "BTC-PERP"}) == 0
    # failing wins over degraded
    failing = HealthResource([], lambda: "failing", lambda: "journal", monitor.health_degraded)
    request = DummyRequest([b"health"])
    assert json.loads(failing.render_GET(request))["status"] == "failing"
    assert request.responseCode == 503


@pytest_twisted.inlineCallbacks
def test_health_over_http_names_stale_symbols_of_the_running_exchange(tmp_path):
    """The in-process exchange's /health: ok while fresh; with the monitor's clock 31 s on,
    degraded naming both symbols; an index posted through the admin API freshens one."""
    server = start_margined(tmp_path, stale=30.0)
    try:
        url = base_url(server)
        # the start-up ConfigureInstrument ticks must be released first: their release marks
        # each index as seen "now", which would undo the clock shift below
        monitor = server.application.risk
        yield wait_until(lambda: set(monitor.index_seen) == {"BTC-PERP", "ETH-PERP"},
                         "the start-up listings released")
        status, body, _ = yield api(url, "GET", "/health", None)
        assert status == 200 and body["status"] == "ok", body
        real_now = monitor.now
        monitor.now = lambda: real_now() + 31.0
        status, body, _ = yield api(url, "GET", "/health", None)
        assert status == 200 and body["status"] == "degraded", body
        assert body["stale_index"] == ["BTC-PERP", "ETH-PERP"]
        status, answer, _ = yield api(url, "POST", "/admin/index", TOKEN,
                                      {"symbol": "ETH-PERP", "price": "3001"})
        assert status == 200, answer
        status, body, _ = yield api(url, "GET", "/health", None)
        assert body["stale_index"] == ["BTC-PERP"]
    finally:
        yield server.stop()

"""DAY orders expire at the end of the venue's trading day: TradingDayEnd, or the order-entry
sessions' StartTime; the boundary is journaled (SetTradingDay) at start-up."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor

from fixserver.config import parse_config
from fixserver.orderentry.wiring import trading_day_offset_ns
from fixserver.server import FixServer
from tests.fixserver.inprocess_exchange import exchange_config

HOUR = 3_600 * 1_000_000_000


def _config(tmp_path, extra: str):
    text = exchange_config(tmp_path).replace("ShutdownTimeout=1", "ShutdownTimeout=1\n" + extra)
    return parse_config(text, base_dir=str(tmp_path))


def test_offset_from_trading_day_end_or_session_start(tmp_path) -> None:
    """TradingDayEnd wins; else a StartTime all order-entry sessions share; else midnight."""
    assert trading_day_offset_ns(_config(tmp_path, "TradingDayEnd=21:30:00")) == 21.5 * HOUR
    both = "StartTime=22:00:00\nEndTime=21:59:00"
    assert trading_day_offset_ns(_config(tmp_path, both)) == 22 * HOUR
    assert trading_day_offset_ns(_config(tmp_path, "")) == 0


@pytest_twisted.inlineCallbacks
def test_start_up_journals_the_boundary_and_a_restart_keeps_it(tmp_path):
    """The engine's boundary becomes the configured one through a journaled command, and is
    still there after a restart (replayed), with nothing journaled again."""
    config = _config(tmp_path, "TradingDayEnd=22:00:00")
    server = FixServer(config, reactor)
    server.start()
    server.application.pipeline.tick()  # match the inbox now; when_idle covers matched ticks
    yield server.application.pipeline.when_idle()
    assert server.application.pipeline.engine.day_offset_ns == 22 * HOUR
    yield server.stop()
    again = FixServer(config, reactor)
    again.start()
    try:
        pipeline = again.application.pipeline
        assert pipeline.engine.day_offset_ns == 22 * HOUR
        assert pipeline.sequencer.pending == 0, "nothing to journal when it already matches"
    finally:
        yield again.stop()

"""A failed journal commit is loud: /health 503 with the reason, journal metrics, a critical
log line, every session logged out with a reason, and an exit with status 3 after at most
ShutdownTimeout so that a supervisor restarts the process (deterministic: fake reactor)."""

from __future__ import annotations

import errno
import json
from typing import Any, Callable

import pytest
from prometheus_client import REGISTRY
from twisted.internet import defer
from twisted.logger import LogLevel, globalLogPublisher
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyRequest

from engine.commands import SetTradingDay
from fixserver.config import parse_config
from fixserver.orderentry.wiring import OrderEntryService
from fixserver.server import EXIT_PIPELINE_FAILED, PIPELINE_FAILED_TEXT, FixServer
from fixserver.timeutil import format_utc_timestamp
from tests.fixserver.fake_reactor import FakeReactor, FixClient

START = 1_700_000_000.0

CONFIG = """\
[DEFAULT]
BeginString=FIX.4.4
SenderCompID=EXCH
SocketAcceptPort=9878
HttpPort=9100
JournalPath={tmp}/journal
ShutdownTimeout=2
[FIRM]
Firm=ACME
Accounts=A1
[SESSION]
TargetCompID=ACME1
Firm=ACME
[SESSION]
TargetCompID=ACME2
Firm=ACME
"""


class InlineRunner:
    """Runs the pipeline's blocking calls at once, on the test's thread."""

    def run(self, f: Callable[..., Any], *args: Any) -> defer.Deferred:
        return defer.maybeDeferred(f, *args)

    def stop(self) -> None:
        pass


class FailingWriter:
    """The journal writer, until ``fail_with`` is set: then every commit raises it."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.fail_with: OSError | None = None

    def commit(self, items: Any) -> int:
        if self.fail_with is not None:
            raise self.fail_with
        return int(self.real.commit(items))

    def close(self) -> None:
        self.real.close()


def _sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


class Exchange:
    """Order entry on a fake reactor, its journal commits through a FailingWriter."""

    def __init__(self, tmp: Any) -> None:
        self.reactor = FakeReactor()
        self.reactor.advance(START)
        self.exits: list[int] = []
        self.writer: FailingWriter | None = None
        self.server = FixServer(
            parse_config(CONFIG.format(tmp=tmp), base_dir=str(tmp)), self.reactor,
            application_factory=self._order_entry,
            now_ns=lambda: int(self.reactor.seconds() * 1e9),
            exit_process=self.exits.append,
        )

    def _order_entry(self, server: FixServer) -> OrderEntryService:
        service = OrderEntryService(server)  # wires on_failure to server.pipeline_failed
        pipeline = service.pipeline
        for runner in (pipeline.journal_runner, pipeline.snapshot_runner):
            runner.stop()
        pipeline.journal_runner = pipeline.snapshot_runner = InlineRunner()
        self.writer = FailingWriter(pipeline.writer)
        pipeline.writer = self.writer  # type: ignore[assignment]
        return service

    def health(self) -> tuple[int, dict]:
        (site,) = [f for _, f, _, _ in self.reactor.tcpServers if isinstance(f, Site)]
        request = DummyRequest([b"health"])
        page = site.resource.getChildWithDefault(b"health", request)
        body = page.render(request)
        return request.responseCode or 200, json.loads(body)


@pytest.fixture
def exchange(tmp_path: Any) -> Exchange:
    ex = Exchange(tmp_path)
    ex.server.start()
    ex.reactor.advance(0)  # the start-up commands' tick, committed
    return ex


def test_a_failed_commit_fails_the_server_loudly_then_exits_non_zero(exchange: Exchange):
    """Disk full on a commit: health 503 with the reason, journal_failed 1 and one commit
    failure counted, a critical exchange.failed line, the FIX port closed, every session
    logged out with the reason; the exit (status 3) waits for the logouts."""
    ex = exchange
    assert ex.health()[0] == 200 and _sample("journal_failed") == 0
    failures_before = _sample("journal_commit_failures_total")
    clients = [FixClient(ex.server.host, ex.reactor, c) for c in ("ACME1", "ACME2")]
    for client in clients:
        client.logon()
    critical: list[dict] = []

    def observe(event: dict) -> None:
        if event.get("log_level") is LogLevel.critical:
            critical.append(event)

    globalLogPublisher.addObserver(observe)  # type: ignore[arg-type]
    try:
        assert ex.writer is not None
        ex.writer.fail_with = OSError(errno.ENOSPC, "No space left on device")
        now = format_utc_timestamp(int(ex.reactor.seconds() * 1e9))
        clients[0].send("D", (11, "o1"), (1, "A1"), (55, "BTC-PERP"), (54, "1"), (60, now),
                        (38, "1"), (40, "2"), (44, "60000"))
        ex.reactor.advance(0)  # the tick, its commit failing; the logouts on the next turn
        code, doc = ex.health()
        assert code == 503 and doc["status"] == "failing"
        assert "No space left on device" in doc["reason"]
        assert [s["logged_on"] for s in doc["sessions"]] == [True, True]
        assert _sample("journal_failed") == 1
        assert _sample("journal_commit_failures_total") == failures_before + 1
        (failed,) = [e for e in critical if e["log_format"].startswith("exchange.failed")]
        assert "No space left on device" in failed["reason"]
        assert failed["sessions"] == 2 and failed["code"] == EXIT_PIPELINE_FAILED
        assert not ex.server.fix_port.connected
        for client in clients:
            logouts = [m for m in client.received() if m.msg_type == b"5"]
            assert [m.get_str(58) for m in logouts] == [PIPELINE_FAILED_TEXT]
        assert ex.exits == []
        clients[0].send("5")  # one client answers; the other stays silent
        assert clients[0].transport.disconnecting
        clients[0].lose()
        ex.reactor.advance(1.9)
        assert ex.exits == []
        ex.reactor.advance(0.2)  # ShutdownTimeout: the silent one is cut off, then the exit
        assert ex.exits == [EXIT_PIPELINE_FAILED]
        assert any(e["log_format"].startswith("exchange.exit") for e in critical)
        assert clients[1].transport.disconnecting
    finally:
        globalLogPublisher.removeObserver(observe)  # type: ignore[arg-type]


def test_the_exit_comes_at_once_when_every_session_is_gone(exchange: Exchange):
    """With no session logged on, the process exits right after the failure."""
    ex = exchange
    assert ex.writer is not None
    ex.writer.fail_with = OSError(errno.EIO, "Input/output error")
    ex.server.application.pipeline.submit(  # type: ignore[attr-defined]
        ("", "A"), SetTradingDay(0, 0, 0))
    ex.reactor.advance(0)
    assert "Input/output error" in (ex.server.failure_reason or "")
    assert ex.exits == [EXIT_PIPELINE_FAILED]

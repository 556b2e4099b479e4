"""The server's Postgres writer keeps risk rows right across a restart from a snapshot."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
import pytest_twisted
from twisted.internet import reactor

from engine.commands import Deposit
from fixserver.config import parse_config
from fixserver.orderentry.ownership import origin
from fixserver.pg.rows import asset_amount
from fixserver.server import FixServer
from tests.fixserver.admin.risk_exchange import RISK_CONFIG
from tests.fixserver.inprocess_exchange import CONFIG, new_order, session_of
from tests.fixserver.pg_fixtures import migrated_dsn, pg_dsn

__all__ = ["migrated_dsn", "pg_dsn"]

TIMEOUT = 20.0
USDT = 1_000_000


def _start(tmp: Any, dsn: str) -> FixServer:
    extra = f"PostgresDSN={dsn}\nMarkHistoryEverySeconds=5\n" + RISK_CONFIG.format(stale=30)
    text = CONFIG.format(tmp=tmp, default_extra=extra, sessions_extra="")
    server = FixServer(parse_config(text, base_dir=str(tmp)), reactor)
    server.start()
    return server


def _service(server: FixServer) -> Any:
    return getattr(server.application, "other", server.application)


def _fetch(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


@pytest_twisted.inlineCallbacks
def test_restart_from_snapshot_keeps_liquidation_prices_and_ledger(tmp_path, migrated_dsn):
    """Funding, a trade, a clean shutdown (snapshot), a restart and a deposit: the deposit
    rewrites the open cross position with the engine's liquidation price (the writer's read
    model starts from the snapshot), and every account's ledger sums to its balance."""
    server = _start(tmp_path, migrated_dsn)
    service = _service(server)
    now = server.now_ns()
    service.on_message(session_of(server, "ACME1"),
                       new_order("S1", "A1", "2", "0.003", "60000"), now)
    service.on_message(session_of(server, "BETA1"),
                       new_order("B1", "B1", "1", "0.002", "60000"), now)
    service.pipeline.tick()
    yield service.pipeline.when_idle().addTimeout(TIMEOUT, reactor)
    yield service.pg_writer.flush().addTimeout(TIMEOUT, reactor)
    yield server.stop()  # snapshot on shutdown: the restart replays nothing

    restarted = _start(tmp_path, migrated_dsn)
    try:
        service = _service(restarted)
        pipeline = service.pipeline
        pipeline.submit(origin("", "A", "test"), Deposit(0, 0, "A1", "USDT", 250 * USDT))
        pipeline.tick()
        yield pipeline.when_idle().addTimeout(TIMEOUT, reactor)
        yield service.pg_writer.flush().addTimeout(TIMEOUT, reactor)
        deposit_seq = pipeline.sequencer.position()[0] - 1
        risk = pipeline.engine.risk  # the test reads the live engine to check the rows
        liq = risk.view("A1", "USDT")[1][0].liquidation_price
        assert liq > 0
        ticks_to_price = service.instruments[0].ticks_to_price
        assert _fetch(migrated_dsn, "SELECT side, size_lots, leverage, margin_mode, "
                                    "liquidation_price, last_seq FROM positions "
                                    "WHERE account = 'A1' AND symbol = 'BTC-PERP'") == [
            ("SHORT", -2, Decimal(20), "CROSS", Decimal(ticks_to_price(liq)), deposit_seq)]
        sums = _fetch(migrated_dsn, "SELECT account, sum(amount), min(b.balance), "
                                    "count(*) FILTER (WHERE cause = 'DEPOSIT') FROM balance_ledger "
                                    "JOIN balances b USING (account, asset) GROUP BY 1 "
                                    "ORDER BY 1")
        assert sums == [
            (acct, asset_amount(risk.accounts[(acct, "USDT")].balance, 6),
             asset_amount(risk.accounts[(acct, "USDT")].balance, 6), deposits)
            for acct, deposits in (("A1", 2), ("B1", 1))]  # the config's funding, and ours
    finally:
        yield restarted.stop()

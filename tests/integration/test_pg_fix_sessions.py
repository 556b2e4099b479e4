"""The fix_sessions rows follow a QuickFIX client's logon, messages and logout (real Postgres,
in-process exchange with PostgresDSN, loopback)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
import pytest_twisted
import quickfix as fix
from twisted.internet import reactor

from fixserver.config import parse_config
from fixserver.server import FixServer
from tests.fixserver.inprocess_exchange import exchange_config, session_of
from tests.fixserver.pg_fixtures import pg_dsn

from .conftest import wait_until
from .qf_client import QuickFixClient

__all__ = ["pg_dsn"]  # fixture used below
pytestmark = pytest.mark.integration
TIMEOUT = 30.0
COLUMNS = "state, next_sender_seq, next_target_seq, last_logon, last_logout"


@pytest_twisted.async_yield_fixture
async def exchange(tmp_path, pg_dsn):
    """An in-process exchange (order entry: it migrates and seeds the schema) on ``pg_dsn``."""
    servers: list[FixServer] = []

    def start() -> FixServer:
        text = exchange_config(tmp_path, pg_dsn)
        server = FixServer(parse_config(text, base_dir=str(tmp_path)), reactor)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


def row(dsn: str, client: str) -> tuple[Any, ...] | None:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT {COLUMNS} FROM fix_sessions WHERE target_comp_id = %s",
                            (client,)).fetchone()


def new_order(client: QuickFixClient) -> None:
    message = fix.Message()
    message.getHeader().setField(fix.MsgType("D"))
    for tag, value in ((11, "O1"), (1, "A1"), (55, "BTC-PERP"), (54, "1"),
                       (60, "20240101-00:00:00"), (38, "0.002"), (40, "2"), (44, "60000")):
        message.setField(fix.StringField(tag, value))
    fix.Session.sendToTarget(message, client._app.session_id)


@pytest_twisted.inlineCallbacks
def test_fix_sessions_rows_follow_logon_messages_and_logout(exchange, quickfix_client, pg_dsn):
    """Start-up writes the stores' seqs as DISCONNECTED; a logon shows LOGGED_ON with its time
    and seqs; an order moves both seqs; a logout shows DISCONNECTED with its time."""
    server = exchange()
    acme = session_of(server, "ACME1")
    start_row = yield wait_until(
        lambda: server.session_rows.pending == 0 and row(pg_dsn, "ACME1"),
        "the start-up rows", TIMEOUT)
    assert start_row == ("DISCONNECTED", 1, 1, None, None)

    # Heartbeats every 30 s: no message but ours moves the seqs during the test.
    client = quickfix_client(server.fix_port.getHost().port, sender="ACME1", heartbeat=30)
    client.start()
    yield wait_until(lambda: client.find("logon"), "the QuickFIX client's logon", TIMEOUT)
    logged_on = yield wait_until(
        lambda: (r := row(pg_dsn, "ACME1")) and r[0] == "LOGGED_ON" and r,
        "the row to say LOGGED_ON", TIMEOUT)
    assert logged_on[1:3] == (2, 2)  # Logon in, Logon out
    assert logged_on[3] is not None and logged_on[4] is None

    new_order(client)
    yield wait_until(lambda: client.find("from_app", lambda e: e.msg_type == "8"),
                     "the ExecutionReport of the order", TIMEOUT)
    after_order = yield wait_until(
        lambda: (r := row(pg_dsn, "ACME1")) and r[1:3] == (3, 3) and r,
        "the row's seqs to move past the order and its ExecutionReport (3, 3) "
        f"(store: {acme.store.next_sender_seq()}, {acme.store.next_target_seq()})", TIMEOUT)
    session = client.session
    # The row agrees with the client's own view (its next target = our next sender).
    assert (session.getExpectedTargetNum(), session.getExpectedSenderNum()) == (3, 3)
    assert after_order[0] == "LOGGED_ON" and after_order[3] == logged_on[3]

    client.logout("done")
    yield wait_until(lambda: client.find("logout"), "the QuickFIX client's logout", TIMEOUT)
    logged_out = yield wait_until(
        lambda: (r := row(pg_dsn, "ACME1")) and r[0] == "DISCONNECTED" and r,
        "the row to say DISCONNECTED", TIMEOUT)
    assert logged_out[1:3] == (4, 4)  # Logout in, Logout out
    assert logged_out[3] == logged_on[3]  # the logon time stays
    assert logged_out[4] is not None and logged_out[4] >= logged_on[3]
    assert row(pg_dsn, "BETA1") == ("DISCONNECTED", 1, 1, None, None)
    assert client.rejects() == [], f"QuickFIX rejected what the server sent: {client.rejects()}"

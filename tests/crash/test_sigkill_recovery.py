"""SIGKILL crash test: the exchange under load from several FIX sessions is killed at random
moments and restarted; nothing any client was told is lost or contradicted."""

from __future__ import annotations

import os
import random
import re
import select
import time
from collections.abc import Iterator

import pytest

from bench.fixload import ClientSession
from fixserver.codec import encode
from tests.crash.harness import (
    ServerProcess,
    TradingClient,
    compare,
    engine_exec_id,
    free_port,
    postgres_rows,
    replay_journal,
    write_config,
)
from tests.fixserver.pg_fixtures import pg_dsn  # noqa: F401  (the fixture)

SEED = int(os.environ.get("CRASH_SEED", "20261125"))
CYCLES = int(os.environ.get("CRASH_CYCLES", "5"))
CLIENTS = (("CRASH1", "F1", "A1"), ("CRASH2", "F2", "A2"), ("CRASH3", "F3", "A3"),
           ("CRASHCOD", "F4", "A4"))
#: this session has cancel-on-disconnect on: a SIGKILL is a disconnect, so after each restart
#: its orders are canceled (the choice was journaled at its logon) before it is back
COD_CLIENT = "CRASHCOD"
PG_TIMEOUT = float(os.environ.get("CRASH_PG_TIMEOUT", "20"))


@pytest.fixture
def exchange(tmp_path, pg_dsn: str) -> Iterator[tuple[ServerProcess, str]]:  # noqa: F811
    """A configured exchange (not started) and its Postgres DSN; stopped afterwards."""
    fix_port, http_port = free_port(), free_port()
    config = write_config(str(tmp_path), CLIENTS, fix_port=fix_port, http_port=http_port,
                          postgres_dsn=pg_dsn,
                          session_extra={COD_CLIENT: ["CancelOnDisconnect=Y"]})
    server = ServerProcess(config, fix_port, http_port, str(tmp_path / "server.log"))
    try:
        yield server, pg_dsn
    finally:
        if server.proc is not None:
            server.kill()


def drive(clients: list[TradingClient], seconds: float, rng: random.Random,
          trading: bool = True) -> None:
    """Read from every connected client for ``seconds``; every 3 ms each caught-up client
    sends a request with probability 0.7 (when ``trading``)."""
    end = time.monotonic() + seconds
    next_act = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= end:
            return
        if trading and now >= next_act:
            for c in clients:
                if c.connected and c.session.caught_up and rng.random() < 0.7:
                    c.act()
            next_act = now + 0.003
        links = {c.link: c for c in clients if c.connected}
        wait = max(0.0, min(end, next_act if trading else end) - time.monotonic())
        ready, _, _ = select.select(list(links), [], [], wait)
        for link in ready:
            links[link].on_readable()


def reconnect(clients: list[TradingClient], server: ServerProcess, timeout: float = 15.0) -> None:
    """Log every client on again (sequence numbers carry on) and wait until caught up."""
    for c in clients:
        c.connect(server.fix_port)
    deadline = time.monotonic() + timeout
    while not all(c.connected and c.session.caught_up for c in clients):
        gone = [c.comp_id for c in clients if not c.connected]
        assert not gone, f"{gone} disconnected during logon; server log:\n{server.log_tail()}"
        assert time.monotonic() < deadline, (
            f"not caught up after {timeout}s: "
            f"{[(c.comp_id, c.session.logged_on, c.session.resend_until) for c in clients]}")
        links = {c.link: c for c in clients}
        ready, _, _ = select.select(list(links), [], [], 0.05)
        for link in ready:
            links[link].on_readable()


def settle(clients: list[TradingClient], since: dict[str, int], timeout: float = 15.0) -> None:
    """Read until every request sent since ``since`` (index into ``sent``) is answered."""
    deadline = time.monotonic() + timeout
    rng = random.Random(0)
    while True:
        waiting = {c.comp_id: [cl for cl in c.sent[since[c.comp_id]:] if cl not in c.answered]
                   for c in clients}
        if not any(waiting.values()):
            return
        assert time.monotonic() < deadline, f"requests never answered: {waiting}"
        drive(clients, 0.05, rng, trading=False)


def check_violations(clients: list[TradingClient]) -> None:
    problems = [v for c in clients for v in (c.violations + c.session.violations)]
    assert not problems, "\n".join(problems[:20])


def wait_for_postgres(dsn: str, reports: dict[str, dict[int, str]]) -> dict:
    """Postgres rows of every engine ExecID in ``reports`` (polls until all are written)."""
    wanted = [e for e in reports if engine_exec_id(e)]
    deadline = time.monotonic() + PG_TIMEOUT
    while True:
        rows = postgres_rows(dsn, wanted)
        if len(rows) == len(wanted) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def all_reports(clients: list[TradingClient]) -> dict[str, dict[int, str]]:
    out: dict[str, dict[int, str]] = {}
    for c in clients:
        out.update(c.reports)
    return out


@pytest.mark.integration
def test_sigkill_restart_keeps_every_execution_report(exchange) -> None:
    """Across SIGKILL restarts every ExecutionReport a client got is in Postgres and in the
    replayed engine with the same content, every report the engine made reaches its client,
    sequence numbers carry on, resends repeat the originals, and the server's state hash
    equals an offline replay of its journal."""
    server, dsn = exchange
    journal = os.path.join(os.path.dirname(server.config_path), "journal")
    rng = random.Random(SEED)
    clients = [TradingClient(comp, account, SEED * 10 + i)
               for i, (comp, _, account) in enumerate(CLIENTS)]
    server.start()
    reconnect(clients, server)
    for cycle in range(CYCLES):
        drive(clients, rng.uniform(0.2, 1.5), rng)
        server.kill()
        for c in clients:
            c.drop()
        server.start()
        reconnect(clients, server)
        # Resends after the reconnect bring what the kill cut off; each client also asks for
        # its last 40 messages again, which must come back identical (from the durable store).
        for c in clients:
            c.ask_again(40)
        drive(clients, 0.3, rng)
        for c in clients:
            c.check_gap_fills()
        check_violations(clients)
        reports = all_reports(clients)
        replayed = replay_journal(journal)
        problems = compare(reports, replayed.rows)
        assert not problems, f"cycle {cycle}: reports vs the journal replay:\n" + \
            "\n".join(problems[:20])
        rows = wait_for_postgres(dsn, reports)
        problems = compare(reports, rows)
        assert not problems, f"cycle {cycle}: reports vs Postgres ({len(problems)}):\n" + \
            "\n".join(problems[:20])

    # The end: quiet, every request since the last restart answered, then a clean stop.
    since = {c.comp_id: len(c.sent) for c in clients}
    drive(clients, 0.5, rng)
    settle(clients, since)
    check_violations(clients)
    assert all(c.repeats for c in clients), "resent messages were never compared"
    status, state = server.http_get("/admin/state-hash")
    assert server.stop() == 0, server.log_tail()
    reports = all_reports(clients)
    assert sum(1 for e in reports if engine_exec_id(e)) > 50 * CYCLES, "too little traffic"
    recovered = [int(n) for n in re.findall(r"recovered commands=(\d+)", server.log_text())]
    assert len(recovered) == CYCLES + 1 and all(recovered[1:]), (
        f"every restart must replay the journal: commands replayed per start {recovered}")
    replayed = replay_journal(journal, hash_at=state["seq"] if status == 200 else None)
    problems = compare(reports, replayed.rows) + compare(reports, wait_for_postgres(dsn, reports))
    assert not problems, "\n".join(problems[:20])
    if status == 200:
        assert replayed.hashes.get(state["seq"]) == state["state_hash"], (
            f"live state hash at seq {state['seq']} {state['state_hash']} != replay "
            f"{replayed.hashes.get(state['seq'])}")
    else:
        pytest.fail(f"GET /admin/state-hash answered {status}: {state}")
    # Every report the engine made reached its client: those of ticks killed between the
    # journal's fsync and the send are redelivered at the next start-up
    # (fixserver.orderentry.redelivery). So each client's books are the engine's.
    received = set(reports)
    # The clean stop logs the sessions out: the COD session's orders are canceled then, after
    # the last state hash, while no client is there to receive the reports (they wait in its
    # store for its next logon).
    cod = next(c for c in clients if c.comp_id == COD_CLIENT)
    at_stop = {r.exec_id: r for r in replayed.rows.values() if r.seq > state["seq"]}
    assert all(r.reason == "CANCEL_ON_DISCONNECT" and r.account == cod.account
               for r in at_stop.values()), list(at_stop.values())[:5]
    assert {r.order_id for r in at_stop.values()} == set(cod.live), (
        "the COD session's live orders are exactly those canceled at the clean stop")
    undelivered = {r.exec_id for r in replayed.rows.values()
                   if r.account in {c.account for c in clients} and r.exec_id not in received
                   and r.exec_id not in at_stop}
    if os.environ.get("CRASH_DEBUG"):
        for e in sorted(undelivered, key=lambda x: replayed.rows[x].engine_exec_id):
            print("undelivered:", replayed.rows[e])
    assert not undelivered, (
        f"{len(undelivered)} engine reports never delivered, e.g. "
        f"{[replayed.rows[e] for e in sorted(undelivered)[:5]]}")
    for c in clients:
        engine_live = {o.id for o in replayed.engine.orders.values() if o.account == c.account}
        if c is cod:
            assert not engine_live, "cancel-on-disconnect at the clean stop left orders live"
            continue
        assert engine_live == set(c.live), (
            f"{c.comp_id}: live orders differ from the engine's: "
            f"{sorted(engine_live ^ set(c.live))}")
    # Cancel-on-disconnect across SIGKILL: after each restart the COD session's orders were
    # canceled with Text saying so, and its client got those reports.
    cod_cancels = [r for r in cod.reports.values()
                   if r.get(150) == "4" and "disconnect" in r.get(58, "")]
    restarts_with_cod = len(re.findall(r"orderentry\.cancel_on_disconnect_at_start",
                                       server.log_text()))
    assert restarts_with_cod == CYCLES, server.log_tail()
    assert cod_cancels, "no cancel-on-disconnect cancel reached the COD session's client"
    redelivered = [int(n) for n in re.findall(r"orderentry\.redelivered messages=(\d+)",
                                              server.log_text())]
    print(f"\ncrash test: {CYCLES} kills, commands replayed per restart {recovered[1:]}, "
          f"{len(reports)} reports, "
          f"{sum(c.repeats for c in clients)} PossDup repeats, "
          f"{sum(c.session.resend_requests for c in clients)} resend requests, "
          f"messages redelivered per restart {redelivered[1:]}, "
          f"{len(cod_cancels)} cancel-on-disconnect cancels after restarts")


# -- the test client's own checks: the crash test's verdict depends on them ------------------

T0 = 1_700_000_000_000_000_000


def exchange_msg(msg_type: bytes, seq: int, *body: tuple[int, object],
                 poss_dup: bool = False) -> bytes:
    """A message from the exchange (EXCH) to CLIENT."""
    header = [(35, msg_type), (34, seq), (49, b"EXCH"), (52, b"20231114-22:13:20.000"),
              (56, b"CLIENT")]
    if poss_dup:
        header += [(43, b"Y"), (122, b"20231114-22:13:20.000")]
    return encode([*header, *body])  # type: ignore[list-item]


def logged_on_client() -> ClientSession:
    client = ClientSession("CLIENT", "EXCH")
    client.logon(T0)
    client.data_to_send()
    client.receive(exchange_msg(b"A", 1, (98, 0), (108, 30)), T0)
    return client


def test_client_asks_for_a_resend_on_a_gap_and_takes_the_resent_messages() -> None:
    """A MsgSeqNum above the expected one is dropped and answered by ResendRequest 7=N 16=0;
    the resent messages (PossDupFlag=Y, in sequence) are taken as new."""
    client = logged_on_client()
    assert client.receive(exchange_msg(b"8", 3, (17, b"X2")), T0) == []
    assert b"35=2\x01" in client.data_to_send() and client.resend_until == 3
    got = client.receive(exchange_msg(b"8", 2, (17, b"X1"), poss_dup=True)
                         + exchange_msg(b"8", 3, (17, b"X2"), poss_dup=True), T0)
    assert [(m.get(17), repeat) for m, repeat in got] == [(b"X1", False), (b"X2", False)]
    assert client.caught_up and client.next_in == 4 and not client.violations


def test_client_flags_repeats_and_sequence_numbers_that_go_back() -> None:
    """A PossDup message below the expected MsgSeqNum is returned as a repeat; one without
    PossDupFlag is a violation (the exchange's sequence numbers went back)."""
    client = logged_on_client()
    client.receive(exchange_msg(b"8", 2, (17, b"X1")), T0)
    got = client.receive(exchange_msg(b"8", 2, (17, b"X1"), poss_dup=True), T0)
    assert [(m.get(17), repeat) for m, repeat in got] == [(b"X1", True)]
    assert not client.violations
    client.receive(exchange_msg(b"8", 2, (17, b"X1")), T0)
    assert client.violations and "went back" in client.violations[0]


def test_client_answers_test_requests_and_resend_requests() -> None:
    """TestRequest -> Heartbeat with its TestReqID; ResendRequest -> one SequenceReset-GapFill
    to the next outgoing MsgSeqNum (stale orders are never resent)."""
    client = logged_on_client()
    client.receive(exchange_msg(b"1", 2, (112, b"ping")), T0)
    assert b"35=0\x01" in client.data_to_send()
    client.receive(exchange_msg(b"2", 3, (7, 1), (16, 0)), T0)
    out = client.data_to_send()
    # we sent Logon (1) and Heartbeat (2): the gap fill says the next is 3
    assert b"35=4\x01" in out and b"\x01123=Y\x01" in out and b"\x0136=3\x01" in out
    assert client.next_in == 4 and not client.violations

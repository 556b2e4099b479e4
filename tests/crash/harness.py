"""Crash-test harness: the exchange as a subprocess, FIX clients that trade and remember every
ExecutionReport, and the checks against Postgres and an offline replay of the journal.

Pieces:

- :func:`write_config` / :class:`ServerProcess`: a config in a temporary directory (its own
  store, journal, ports and Postgres schema) and ``python -m fixserver.cli serve`` started,
  SIGKILLed, restarted and stopped;
- :class:`TradingClient`: one order-entry session (bench.fixload's ClientSession over a Link)
  sending crossing limit orders, cancels and replaces from a seeded ``random.Random``; it keeps
  every ExecutionReport by ExecID, checks that PossDup repeats are identical to the original,
  and follows its own live orders from the reports;
- :func:`content_of_report` / :func:`content_of_row`: the content compared between what a
  client saw, the Postgres ``executions`` table and the replayed engine's events;
- :func:`replay_journal`: an offline recovery of a *copy* of the journal directory (recovery
  repairs a torn tail, which must never touch the live server's files).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from bench.fixload import ClientSession, Link, body_fields
from engine import MatchingEngine, demo_instruments
from fixserver.codec import FixMessage
from fixserver.journal_file import JournalDirectory
from fixserver.pg.rows import ExecutionRow, RowBuilder

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: the admin API token of the servers the harness configures (GET /admin/state-hash)
ADMIN_TOKEN_NAME = "crash-test"
ADMIN_TOKEN = "crash-test-admin-token-0123456789"

#: ExecType (150) and OrdStatus (39) codes -> the names fixserver.pg.rows writes
EXEC_TYPES = {"0": "NEW", "4": "CANCELED", "5": "REPLACED", "F": "TRADE", "8": "REJECTED",
              "C": "EXPIRED", "L": "TRIGGERED", "D": "RESTATED"}
ORD_STATUSES = {"0": "NEW", "1": "PARTIALLY_FILLED", "2": "FILLED", "4": "CANCELED",
                "8": "REJECTED", "C": "EXPIRED"}
_ENDED = frozenset({"2", "4", "8", "C"})


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(
    directory: str,
    clients: Sequence[tuple[str, str, str]],  # (client CompID, firm, account)
    *,
    fix_port: int,
    http_port: int,
    postgres_dsn: str | None = None,
    heartbeat_s: int = 30,
    extra_default: Iterable[str] = (),
    session_extra: dict[str, list[str]] | None = None,
) -> str:
    """Write ``directory/exchange.cfg`` (store and journal under ``directory``); its path."""
    lines = [
        "[DEFAULT]", "ConnectionType=acceptor", "BeginString=FIX.4.4", "SenderCompID=EXCH",
        "SocketAcceptAddress=127.0.0.1", f"SocketAcceptPort={fix_port}",
        "HttpAddress=127.0.0.1", f"HttpPort={http_port}",
        f"AdminToken={ADMIN_TOKEN_NAME}:{ADMIN_TOKEN}",
        f"FileStorePath={os.path.join(directory, 'store')}",
        f"JournalPath={os.path.join(directory, 'journal')}",
        f"HeartBtInt={heartbeat_s}", "UseDataDictionary=Y", "ResetOnLogon=N",
        "ResetOnLogout=N", "ResetOnDisconnect=N",
        # a session period of a whole day starting now-ish would reset the sequence numbers
        # at its boundary; 00:00-00:00 is "always in session"
        "StartTime=00:00:00", "EndTime=00:00:00",
    ]
    if postgres_dsn:
        lines.append(f"PostgresDSN={postgres_dsn}")
    lines += list(extra_default)
    firms: dict[str, list[str]] = {}
    for _, firm, account in clients:
        firms.setdefault(firm, []).append(account)
    for firm, accounts in firms.items():
        lines += ["", "[FIRM]", f"Firm={firm}", f"Accounts={','.join(accounts)}"]
    for comp_id, firm, _ in clients:
        lines += ["", "[SESSION]", f"TargetCompID={comp_id}", f"Firm={firm}",
                  "SessionRole=order-entry", *(session_extra or {}).get(comp_id, [])]
    path = os.path.join(directory, "exchange.cfg")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


class ServerProcess:
    """``python -m fixserver.cli serve --config FILE`` as a child process."""

    def __init__(self, config_path: str, fix_port: int, http_port: int, log_path: str,
                 python: str = sys.executable) -> None:
        self.config_path = config_path
        self.fix_port = fix_port
        self.http_port = http_port
        self.log_path = log_path
        self.python = python
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 60.0) -> None:
        """Start and wait until the FIX port accepts connections."""
        assert self.proc is None, "already running"
        log = open(self.log_path, "ab")
        log.write(f"\n===== start {self.starts + 1} =====\n".encode())
        log.flush()
        env = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [self.python, "-m", "fixserver.cli", "serve", "--config", self.config_path],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode} at start; "
                                   f"log:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.fix_port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the server did not listen within {timeout}s; log:\n"
                                       f"{self.log_tail()}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL and reap."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (a clean shutdown) and wait; the exit status."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise
        finally:
            self.proc = None
        return code

    def http_get(self, path: str) -> tuple[int, Any]:
        """(status, decoded JSON or text) of ``GET path`` on the HTTP side (with the admin
        token: /admin paths need it)."""
        url = f"http://127.0.0.1:{self.http_port}{path}"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                body = r.read().decode()
                status = r.status
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    def log_text(self) -> str:
        """The whole server log (every start)."""
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def log_tail(self, n: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return b"".join(f.readlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return "(no log)"


# -- what is compared -----------------------------------------------------------------------


def _dec(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    return Decimal(str(value))


def content_of_report(fields: dict[int, str]) -> tuple[Any, ...]:
    """(ExecType, OrdStatus, CumQty, LeavesQty, LastQty, LastPx, OrderID, ClOrdID) of an ER."""
    order_id = fields.get(37)
    return (
        EXEC_TYPES.get(fields.get(150, ""), fields.get(150)),
        ORD_STATUSES.get(fields.get(39, ""), fields.get(39)),
        _dec(fields.get(14)), _dec(fields.get(151)), _dec(fields.get(32)), _dec(fields.get(31)),
        None if order_id in (None, "NONE") else int(order_id),
        fields.get(11),
    )


def content_of_row(row: Any, *, with_order_id: bool = True) -> tuple[Any, ...]:
    """The same tuple from an ExecutionRow or a Postgres ``executions`` row (same names)."""
    return (
        row.exec_type, row.ord_status, _dec(row.cum_qty), _dec(row.leaves_qty),
        _dec(row.last_qty), _dec(row.last_px), int(row.order_id) if with_order_id else None,
        row.cl_ord_id,
    )


def engine_exec_id(exec_id: str) -> bool:
    """ExecIDs from engine events (``N``, ``N-M``, ``N-T``); not ``R-``/``S-`` local ones."""
    return exec_id[:1].isdigit()


def compare(reports: dict[str, dict[int, str]], rows: dict[str, Any]) -> list[str]:
    """Differences between received reports and rows by ExecID (missing or different)."""
    problems = []
    for exec_id, fields in reports.items():
        if not engine_exec_id(exec_id):
            continue
        row = rows.get(exec_id)
        if row is None:
            problems.append(f"ExecID {exec_id}: missing ({fields})")
            continue
        got = content_of_report(fields)
        want = content_of_row(row, with_order_id=got[6] is not None)
        if got != want:
            problems.append(f"ExecID {exec_id}: the client saw {got}, the store has {want}")
    return problems


# -- offline replay ---------------------------------------------------------------------------


class Replay:
    """The engine and the execution rows rebuilt from a journal directory."""

    def __init__(self, engine: MatchingEngine, rows: dict[str, ExecutionRow],
                 next_seq: int, hashes: dict[int, str]) -> None:
        self.engine = engine
        self.rows = rows
        self.next_seq = next_seq
        #: state hash after the record ending at each seq (only when asked for)
        self.hashes = hashes


def replay_journal(path: str, *, hash_at: int | None = None) -> Replay:
    """Recover a copy of the journal in ``path`` from scratch (no snapshot is used, so every
    event is replayed); ``hash_at``: also the state hash once seq ``hash_at`` is applied."""
    with tempfile.TemporaryDirectory(prefix="journal-copy-") as tmp:
        copy = os.path.join(tmp, "journal")
        shutil.copytree(path, copy, ignore=shutil.ignore_patterns("snapshot-*", "*.tmp"))
        directory = JournalDirectory(copy, fsync=False)
        instruments = demo_instruments()
        from engine.recovery import Recovery

        recovery = Recovery(MatchingEngine(instruments))
        builder = RowBuilder(instruments)
        rows: dict[str, ExecutionRow] = {}
        hashes: dict[int, str] = {}
        for processed in recovery.replay(directory.read_records(1)):
            for row in builder.rows(processed.events):
                if type(row) is ExecutionRow:
                    rows[row.exec_id] = row
            if hash_at is not None and processed.command.seq == hash_at:
                hashes[hash_at] = recovery.engine.state_hash()
        return Replay(recovery.engine, rows, recovery.next_seq, hashes)


def postgres_rows(dsn: str, exec_ids: Iterable[str]) -> dict[str, Any]:
    """``executions`` rows by ExecID for ``exec_ids`` (those present)."""
    import psycopg
    from psycopg.rows import namedtuple_row

    ids = list(exec_ids)
    with psycopg.connect(dsn, row_factory=namedtuple_row) as conn:
        found = conn.execute(
            "SELECT exec_id, exec_type, ord_status, cum_qty, leaves_qty, last_qty, last_px,"
            " order_id, cl_ord_id FROM executions WHERE exec_id = ANY(%s)", (ids,)).fetchall()
    return {r.exec_id: r for r in found}


# -- a trading client --------------------------------------------------------------------------


class TradingClient:
    """One order-entry session that trades from a seeded RNG and remembers what it was told."""

    def __init__(self, comp_id: str, account: str, seed: int, *, symbol: str = "BTC-PERP",
                 max_live: int = 40) -> None:
        self.session = ClientSession(comp_id, "EXCH")
        self.comp_id = comp_id
        self.account = account
        self.symbol = symbol
        self.rng = random.Random(seed)
        self.max_live = max_live
        self.link: Link | None = None
        self.n = 0
        #: every ExecutionReport received, by ExecID: {tag: value} of its first copy
        self.reports: dict[str, dict[int, str]] = {}
        self._bodies_by_seq: dict[int, list[tuple[int, bytes]]] = {}
        #: live orders as the reports tell: OrderID -> [ClOrdID now, side, qty text]
        self.live: dict[int, list[str]] = {}
        self.answered: set[str] = set()  # ClOrdIDs of requests that got an answer
        self.sent: list[str] = []  # ClOrdIDs of every request sent
        self.repeats = 0
        self.cancel_rejects = 0
        self.risk_pushes = 0  # unsolicited CollateralReports (margin calls) and PositionReports
        self.violations: list[str] = []

    # -- connection -----------------------------------------------------------------------

    def connect(self, port: int) -> None:
        self.link = Link(self.session, "127.0.0.1", port)
        self.session.logon(time.time_ns())
        self.link.flush()

    def drop(self) -> None:
        if self.link is not None:
            self.link.close()
        self.link = None

    @property
    def connected(self) -> bool:
        return self.link is not None and not self.link.closed

    # -- receiving ------------------------------------------------------------------------

    def on_readable(self) -> None:
        assert self.link is not None
        for msg, repeat in self.link.read(time.time_ns()):
            self._on_message(msg, repeat)
        self.link.flush()

    def _on_message(self, msg: FixMessage, repeat: bool) -> None:
        seq = msg.get_int(34) or 0
        body = body_fields(msg)
        if repeat:
            self.repeats += 1
            original = self._bodies_by_seq.get(seq)
            if original != body:
                self.violations.append(
                    f"{self.comp_id}: the resend of MsgSeqNum {seq} differs from the original:"
                    f" {original} != {body}")
            return
        self._bodies_by_seq[seq] = body
        mt = msg.msg_type
        fields = {t: v.decode("latin-1") for t, v in body}
        if mt == b"8":
            exec_id = fields.get(17, "")
            if exec_id in self.reports:
                self.violations.append(f"{self.comp_id}: ExecID {exec_id} received twice "
                                       f"without PossDupFlag (MsgSeqNum {seq})")
                return
            self.reports[exec_id] = fields
            self.answered.add(fields.get(11, ""))
            self._follow(fields)
        elif mt == b"9":
            self.cancel_rejects += 1
            self.answered.add(fields.get(11, ""))
        elif mt in (b"BA", b"AP"):  # margin-call warnings and position pushes (risk)
            self.risk_pushes += 1
        else:
            self.violations.append(f"{self.comp_id}: unexpected 35={mt.decode()}: {fields}")

    def _follow(self, fields: dict[int, str]) -> None:
        order_id = fields.get(37, "NONE")
        if not order_id.isdigit():  # NONE, or a takeover/ADL report (no order of this client)
            return
        oid = int(order_id)
        if fields.get(39) in _ENDED or fields.get(151) in ("0", None):
            self.live.pop(oid, None)
        else:
            cl = fields.get(11, "") if fields.get(150) != "4" else self.live.get(oid, [""])[0]
            self.live[oid] = [cl, fields.get(54, "1"), fields.get(38, "0.001")]

    # -- sending --------------------------------------------------------------------------

    def _cl(self) -> str:
        self.n += 1
        cl = f"{self.comp_id}-{self.n}"
        self.sent.append(cl)
        return cl

    def act(self) -> None:
        """Send one request chosen by the RNG: mostly new orders, some cancels and replaces."""
        assert self.link is not None
        rng = self.rng
        now = time.time_ns()
        ts = self.session.sending_time(now)
        roll = rng.random()
        if self.live and (roll < 0.2 or len(self.live) >= self.max_live):
            oid = rng.choice(sorted(self.live))
            current, side, qty = self.live[oid]
            self.session.send(b"F", [(41, current), (11, self._cl()), (1, self.account),
                                     (55, self.symbol), (54, side), (60, ts), (38, qty)], now)
        elif self.live and roll < 0.35:
            oid = rng.choice(sorted(self.live))
            current, side, qty = self.live[oid]
            price = 59_990 + 5 * rng.randrange(5)
            new_qty = f"0.00{rng.randrange(1, 6)}"
            self.session.send(b"G", [(41, current), (11, self._cl()), (1, self.account),
                                     (55, self.symbol), (54, side), (60, ts), (38, new_qty),
                                     (40, b"2"), (44, price)], now)
        else:
            side = b"1" if rng.random() < 0.5 else b"2"
            price = 59_990 + 5 * rng.randrange(5)  # five levels around 60,000: many crosses
            qty = f"0.00{rng.randrange(1, 6)}"
            self.session.send(b"D", [(11, self._cl()), (1, self.account), (55, self.symbol),
                                     (54, side), (60, ts), (38, qty), (40, b"2"), (44, price),
                                     (59, b"1")], now)
        self.link.flush()

    def ask_again(self, count: int) -> None:
        """ResendRequest for the last ``count`` MsgSeqNums received: the exchange must resend
        the same application messages (compared in ``_on_message``), never gap-fill them."""
        assert self.link is not None
        end = self.session.next_in - 1
        if end >= 1:
            self.session.request_resend(max(1, end - count + 1), end, time.time_ns())
            self.link.flush()

    def check_gap_fills(self) -> None:
        """A gap fill over a number that carried an application message is a lost message."""
        for begin, new_seq in self.session.stale_gap_fills:
            covered = [seq for seq in range(begin, new_seq) if seq in self._bodies_by_seq]
            if covered:
                self.violations.append(f"{self.comp_id}: a gap fill {begin}->{new_seq} covers "
                                       f"application messages {covered[:5]}")
        self.session.stale_gap_fills.clear()

    @property
    def unanswered(self) -> list[str]:
        return [cl for cl in self.sent if cl not in self.answered]

"""Writing one batch of rows to Postgres in one transaction (blocking: run it off the reactor).

Theory of operation
-------------------
A batch is a run of rows in event order. Before it is sent it is *coalesced*: the rows of one
order merge into one (a later row's non-NULL values win; the oldest ``created_at`` and the
newest ``last_exec_id`` are kept), only the newest row of each position, balance and FIX
session is kept, and the earliest of each mark-history bucket. Applying the merged row to
a database that holds any earlier prefix of the stream gives the same result as applying
every row in turn, and ``ON CONFLICT DO UPDATE`` cannot take two rows with one key in a
statement anyway.

Every write is idempotent, so a batch that failed half-way (or committed just before the
connection died, unknown to us) is simply sent again:

- executions: ``ON CONFLICT (exec_id) DO NOTHING``;
- orders and positions: upserts guarded by ``WHERE stored.last_exec_id < new.last_exec_id``
  (positions: ``(last_exec_id, last_seq)``, so a margined position's settings or liquidation
  price, which change no exec id, still move forward) so an older version never overwrites a
  newer one; orders ``COALESCE`` so the fill-only rows of a Trade keep the stored type, time
  in force and quantity;
- balances: guarded by ``last_seq``; balance_ledger: ``ON CONFLICT (seq, entry) DO NOTHING``;
  mark_prices: the row with the lower ``seq`` wins its (symbol, bucket), whatever the order
  the rows arrive in;
- funding_payments, funding_rates, liquidations, position_transfers (migration 009): facts
  written once, ``ON CONFLICT (key) DO NOTHING`` (fixserver.pg.liquidation_rows);
- fix_sessions: guarded by ``updated_at``; a NULL last logon or logout keeps the stored time
  (fixserver.pg.session_writer writes these rows);
- pg_writer_progress (the writer's high-water mark, see fixserver.pg.catchup): the batch's
  ``next_seq`` is upserted in the batch's own transaction, guarded by ``next_seq <`` so a
  repeated or regenerated older batch never moves it back.

Two ways of sending, both measured by ``bench/bench_pg_writer.py``: ``copy`` streams the rows
with COPY into session-local temp staging tables and then runs one ``INSERT ... SELECT ...
ON CONFLICT`` per table; ``pipeline`` sends an ``executemany`` of single-row upserts in libpq
pipeline mode. ``copy`` is the default: it was faster in every run of the bench (20,000 rows
from a real engine, shared 2-core machine, medians: 17.5k vs 14.2k rows/s in 1,000-row
batches, 32.9k vs 27.2k in 5,000-row batches; a naive INSERT per row did 2.1-2.3k rows/s).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Callable

import psycopg

from fixserver.pg import liquidation_rows
from fixserver.pg.rows import (
    BalanceRow,
    ExecutionRow,
    LedgerRow,
    MarkRow,
    OrderRow,
    PositionRow,
    Row,
    SessionRow,
)

_CREATED_AT = OrderRow._fields.index("created_at")


def coalesce(rows: Sequence[Row]) -> tuple[list[OrderRow], list[ExecutionRow],
                                           list[PositionRow], list[SessionRow]]:
    """(orders, executions, positions, sessions) of a batch, merged per key (see above)."""
    t = coalesce_tables(rows)
    return t["orders"], t["executions"], t["positions"], t["fix_sessions"]


def coalesce_tables(rows: Sequence[Row]) -> dict[str, list[Any]]:
    """Table -> its rows of a batch, merged per key (see above), for every table in TABLES."""
    orders: dict[int, OrderRow] = {}
    executions: list[ExecutionRow] = []
    positions: dict[tuple[str, str], PositionRow] = {}
    sessions: dict[str, SessionRow] = {}
    balances: dict[tuple[str, str], BalanceRow] = {}
    ledger: list[LedgerRow] = []
    marks: dict[tuple[str, Any], MarkRow] = {}
    # written once, never updated (fixserver.pg.liquidation_rows): kept as they come
    facts: dict[str, list[Any]] = {table: [] for table in liquidation_rows.TABLES}
    fact_table = liquidation_rows.TABLE_OF
    for row in rows:
        if isinstance(row, ExecutionRow):
            executions.append(row)
        elif isinstance(row, OrderRow):
            old = orders.get(row.order_id)
            orders[row.order_id] = row if old is None else _merge_order(old, row)
        elif isinstance(row, PositionRow):
            key = (row.account, row.symbol)
            old_pos = positions.get(key)
            if old_pos is None or ((old_pos.last_exec_id, old_pos.last_seq)
                                   <= (row.last_exec_id, row.last_seq)):
                positions[key] = row
        elif isinstance(row, SessionRow):
            old_s = sessions.get(row.session_id)
            if old_s is None or old_s.updated_at <= row.updated_at:
                sessions[row.session_id] = row
        elif isinstance(row, LedgerRow):
            ledger.append(row)
        elif isinstance(row, BalanceRow):
            bkey = (row.account, row.asset)
            old_b = balances.get(bkey)
            if old_b is None or old_b.last_seq <= row.last_seq:
                balances[bkey] = row
        elif isinstance(row, MarkRow):
            mkey = (row.symbol, row.bucket)
            old_m = marks.get(mkey)
            if old_m is None or row.seq < old_m.seq:
                marks[mkey] = row
        else:
            table = fact_table.get(type(row))
            if table is None:
                raise TypeError(f"not a row: {row!r}")
            facts[table].append(row)
    return {"orders": list(orders.values()), "executions": executions,
            "positions": list(positions.values()), "fix_sessions": list(sessions.values()),
            "balances": list(balances.values()), "balance_ledger": ledger,
            "mark_prices": list(marks.values()), **facts}


def _merge_order(old: OrderRow, new: OrderRow) -> OrderRow:
    if new.last_exec_id < old.last_exec_id:
        old, new = new, old
    merged: list[Any] = [n if n is not None else o for o, n in zip(old, new)]
    merged[_CREATED_AT] = min(old.created_at, new.created_at)
    return OrderRow(*merged)


def _cols(row_type: Any) -> str:
    return ", ".join(row_type._fields)


def _guarded_update(row_type: Any, table: str, key: tuple[str, ...], guard: str,
                    coalesce_cols: bool, keep_stored: tuple[str, ...] = (),
                    where: str | None = None) -> str:
    """The ON CONFLICT clause: ``coalesce_cols`` (or a column in ``keep_stored``) keeps the
    stored value where the new row has NULL; it applies when the stored ``guard`` is lower
    (or when ``where`` holds)."""
    sets = []
    for col in row_type._fields:
        if col in key:
            continue
        if col == "created_at":
            sets.append(f"created_at = LEAST({table}.created_at, EXCLUDED.created_at)")
        elif coalesce_cols or col in keep_stored:
            sets.append(f"{col} = COALESCE(EXCLUDED.{col}, {table}.{col})")
        else:
            sets.append(f"{col} = EXCLUDED.{col}")
    where = where or f"{table}.{guard} < EXCLUDED.{guard}"
    return f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {', '.join(sets)} WHERE {where}"


# table -> (row type, ON CONFLICT clause)
TABLES: dict[str, tuple[Any, str]] = {
    "orders": (OrderRow, _guarded_update(OrderRow, "orders", ("order_id",), "last_exec_id",
                                         coalesce_cols=True)),
    "executions": (ExecutionRow, "ON CONFLICT (exec_id) DO NOTHING"),
    "positions": (PositionRow, _guarded_update(
        PositionRow, "positions", ("account", "symbol"), "last_exec_id", coalesce_cols=False,
        where="(positions.last_exec_id, positions.last_seq) "
              "< (EXCLUDED.last_exec_id, EXCLUDED.last_seq)")),
    # "<=": a later write in the same microsecond still lands. A row without a last logon or
    # logout (the server restarted since) keeps the stored times.
    "fix_sessions": (SessionRow, _guarded_update(
        SessionRow, "fix_sessions", ("session_id",), "updated_at", coalesce_cols=False,
        keep_stored=("last_logon", "last_logout"),
    ).replace("fix_sessions.updated_at < ", "fix_sessions.updated_at <= ")),
    "balances": (BalanceRow, _guarded_update(BalanceRow, "balances", ("account", "asset"),
                                             "last_seq", coalesce_cols=False)),
    "balance_ledger": (LedgerRow, "ON CONFLICT (seq, entry) DO NOTHING"),
    # the bucket's earliest mark wins, whichever row comes first (see rows.MarkRow)
    "mark_prices": (MarkRow, _guarded_update(MarkRow, "mark_prices", ("symbol", "bucket"),
                                             "seq", coalesce_cols=False,
                                             where="mark_prices.seq > EXCLUDED.seq")),
    # liquidation and funding facts: ON CONFLICT (their key) DO NOTHING
    **liquidation_rows.TABLES,
}
STRATEGIES = ("copy", "pipeline")

# Called with (operation, table, seconds) after each statement, e.g. to feed a histogram.
Observer = Callable[[str, str, float], None]


def _no_observer(operation: str, table: str, seconds: float) -> None:
    """Default: observe nothing."""


PROGRESS_UPSERT = (
    "INSERT INTO pg_writer_progress (id, next_seq, updated_at) VALUES (1, %s, now()) "
    "ON CONFLICT (id) DO UPDATE SET next_seq = EXCLUDED.next_seq, "
    "updated_at = EXCLUDED.updated_at WHERE pg_writer_progress.next_seq < EXCLUDED.next_seq"
)


def read_progress(conn: psycopg.Connection[Any]) -> int | None:
    """The stored high-water mark (next seq whose tick has no committed rows yet), or None."""
    row = conn.execute("SELECT next_seq FROM pg_writer_progress WHERE id = 1").fetchone()
    return None if row is None else int(row[0])


class BatchWriter:
    """A connection (made on first use, dropped on any error) that writes batches of rows."""

    def __init__(self, dsn: str, strategy: str = "copy", connect_timeout: int = 3,
                 observe: Observer = _no_observer) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
        self.dsn = dsn
        self.strategy = strategy
        self.connect_timeout = connect_timeout
        self.observe = observe
        self.conn: psycopg.Connection[Any] | None = None

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.dsn, connect_timeout=self.connect_timeout)
        if self.strategy == "copy":
            with conn.transaction():
                for table, (row_type, _) in TABLES.items():
                    # No constraints on staging: a fill-only order row has NULLs there.
                    conn.execute(
                        f"CREATE TEMP TABLE IF NOT EXISTS stage_{table} ON COMMIT DELETE ROWS "
                        f"AS SELECT {_cols(row_type)} FROM {table} WITH NO DATA"
                    )
        return conn

    def close(self) -> None:
        """Close the connection (the next write reconnects)."""
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already broken: nothing left to release
                pass

    def write(self, rows: Sequence[Row], next_seq: int | None = None) -> float:
        """Write and commit the rows (and, given ``next_seq``, the high-water mark in the same
        transaction); return the seconds taken. Any error closes the connection and
        propagates; the caller retries the same rows (every write is idempotent)."""
        start = time.perf_counter()
        try:
            if self.conn is None:
                self.conn = self._connect()
            conn = self.conn
            parts = coalesce_tables(rows)
            with conn.transaction():
                for table, table_rows in parts.items():
                    if table_rows:
                        self._send(conn, table, table_rows)
                if next_seq is not None:
                    t0 = time.perf_counter()
                    conn.execute(PROGRESS_UPSERT, (next_seq,))
                    self.observe("upsert", "pg_writer_progress", time.perf_counter() - t0)
        except BaseException:
            self.close()
            raise
        return time.perf_counter() - start

    def _send(self, conn: psycopg.Connection[Any], table: str, rows: Sequence[Any]) -> None:
        row_type, conflict = TABLES[table]
        cols = _cols(row_type)
        start = time.perf_counter()
        if self.strategy == "copy":
            with conn.cursor() as cur:
                with cur.copy(f"COPY stage_{table} ({cols}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                cur.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM stage_{table} "
                            f"{conflict}")
        else:
            marks = ", ".join(["%s"] * len(row_type._fields))
            with conn.pipeline(), conn.cursor() as cur:
                cur.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks}) {conflict}", rows)
        self.observe("upsert", table, time.perf_counter() - start)

"""Past trades from Postgres, to start the feed's tickers, candles and recent trades with.

Theory of operation
-------------------
The journal cannot rebuild 24 h of statistics: snapshots bound its tail. Postgres can: the
writer stores both sides of every trade in ``executions`` (see :mod:`fixserver.pg.rows`),
so the taker's row (ExecID ``"<exec_id>-T"``, side = the aggressor's) is one row per trade.
At start-up, before the reactor runs, :func:`load_history` reads the trades since
:func:`history_start` (the oldest minute of the 24 h ticker window, which also covers the
current candle of every kline interval, 1d included) as aggregates, never row by row:

- one row per symbol and UTC minute (:data:`BUCKETS_SQL`): first and last price (by exec
  id), high, low, volume, quote volume, trade count: at most 1,440 rows per symbol, however
  many trades the day had. Ticker and candles depend on nothing finer (every kline interval
  is whole minutes, the ticker's window moves in whole minutes), so
  :meth:`feeds.core.FeedCore.seed_history` rebuilds them exactly;
- the latest :data:`~feeds.core.RECENT_TRADES` trades per symbol (:data:`RECENT_SQL`), for
  the recent-trades list and the tickers' last price; only each symbol's last minutes that
  hold that many (the buckets tell which) are sorted.

Both reads take the trades below a seq, in one snapshot of the database. That seq is
:func:`tail_start`: the first trade of the journal tail the recovery replayed (or, without
one, the recovered journal's next seq). The tail's trades are seeded from the replay
instead (:func:`tail_trades`, after the aggregates): after a crash Postgres may not hold
them yet, and a trade from both would be counted twice. Every trade below that seq was
matched before the tail's snapshot, so the replay holds none of them; every one at or
above it is in the replay.

Postgres keeps microseconds, so a stored trade's ``ts`` is floored to the microsecond. That
moves no trade across a minute or candle boundary (those are whole seconds), so tickers and
candles come out exactly as they were; only the recent trades' ``ts`` lose the nanoseconds.

This is a blocking read with a short connect timeout (start-up, off the reactor's clock).
If Postgres cannot be read the caller logs a warning and the feed starts from the journal
tail's trades alone.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any, NamedTuple

from engine.enums import Side
from engine.instruments import Instrument
from feeds.core import RECENT_TRADES, SeedBucket, SeedTrade
from feeds.kline import INTERVALS
from feeds.ticker import MINUTE_NS, WINDOW_MINUTES

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_US = datetime.timedelta(microseconds=1)

#: seconds to wait for Postgres at start-up before starting with empty statistics
CONNECT_TIMEOUT_S = 3
#: milliseconds the read may take before Postgres cancels it
STATEMENT_TIMEOUT_MS = 10_000

_TRADES = """
    FROM executions
    WHERE exec_type = 'TRADE' AND exec_id LIKE '%%-T'
      AND exec_time >= %(since)s AND seq < %(before)s"""

#: per symbol and UTC minute (``exec_time`` floored, as an integer since the epoch), in one
#: pass: open and close are the prices of the minute's first and last trade in exec-id
#: order (the least and greatest ``[exec id, price]`` arrays: arrays compare element-wise)
BUCKETS_SQL = f"""
SELECT symbol, div(extract(epoch FROM exec_time), 60)::bigint AS minute,
       (min(ARRAY[engine_exec_id::numeric, last_px]))[2], max(last_px), min(last_px),
       (max(ARRAY[engine_exec_id::numeric, last_px]))[2], sum(last_qty),
       sum(last_px * last_qty), count(*), max(exec_time)
    {_TRADES}
GROUP BY 1, 2
ORDER BY 2, 1
"""

#: the latest ``%(keep)s`` trades per symbol, in trade order; only those from each symbol's
#: ``%(froms)s`` on (which the buckets say holds enough of them) are sorted
RECENT_SQL = """
SELECT symbol, last_px, last_qty, exec_time, engine_exec_id, side, seq FROM (
    SELECT e.symbol, e.last_px, e.last_qty, e.exec_time, e.engine_exec_id, e.side, e.seq,
           row_number() OVER (PARTITION BY e.symbol ORDER BY e.engine_exec_id DESC) AS n
    FROM executions e
    JOIN unnest(%(symbols)s::text[], %(froms)s::timestamptz[]) AS f(symbol, since)
      ON e.symbol = f.symbol AND e.exec_time >= f.since
    WHERE e.exec_type = 'TRADE' AND e.exec_id LIKE '%%-T'
      AND e.exec_time >= %(recent_since)s AND e.seq < %(before)s
) latest
WHERE n <= %(keep)s
ORDER BY engine_exec_id
"""


class History(NamedTuple):
    """What Postgres holds of the feed's past: per-minute aggregates and the latest trades."""

    buckets: list[SeedBucket]
    recent: list[SeedTrade]


def history_start(last_ts: int) -> int:
    """The oldest ts (ns) the feed's state at ``last_ts`` depends on.

    The ticker's window starts at the 1,439th minute before ``last_ts``'s minute; each kline
    interval's current candle starts at ``last_ts`` floored to the interval.
    """
    window_start = (last_ts // MINUTE_NS - WINDOW_MINUTES + 1) * MINUTE_NS
    candle_starts = (last_ts - last_ts % ns for ns in INTERVALS.values())
    return max(0, min(window_start, *candle_starts))


def datetime_to_ns(value: datetime.datetime) -> int:
    """An aware datetime -> integer ns since the epoch (microsecond precision)."""
    return ((value - _EPOCH) // _US) * 1000


def _units(value: Decimal, unit: Decimal, what: str) -> int:
    units = Decimal(value) / unit
    if units != units.to_integral_value():
        raise ValueError(f"{what} {value} is not a multiple of {unit}")
    return int(units)


def seed_trades_of(rows: Iterable[tuple], instruments: Iterable[Instrument]) -> list[SeedTrade]:
    """``RECENT_SQL`` rows -> seed trades (rows of unknown symbols are left out)."""
    by_symbol = {i.symbol: i for i in instruments}
    out = []
    for symbol, last_px, last_qty, exec_time, exec_id, side, seq in rows:
        instrument = by_symbol.get(symbol)
        if instrument is None:
            continue
        out.append(SeedTrade(
            symbol, _units(last_px, Decimal(instrument.tick_size), "price"),
            _units(last_qty, Decimal(instrument.lot_size), "quantity"),
            datetime_to_ns(exec_time), int(exec_id), Side[side], int(seq),
        ))
    return out


def seed_buckets_of(rows: Iterable[tuple], instruments: Iterable[Instrument]
                    ) -> list[SeedBucket]:
    """``BUCKETS_SQL`` rows -> seed buckets (rows of unknown symbols are left out)."""
    by_symbol = {i.symbol: i for i in instruments}
    out = []
    for symbol, minute, open_, high, low, close, volume, quote, count, last_time in rows:
        instrument = by_symbol.get(symbol)
        if instrument is None:
            continue
        tick, lot = Decimal(instrument.tick_size), Decimal(instrument.lot_size)
        out.append(SeedBucket(
            symbol, int(minute), _units(open_, tick, "price"), _units(high, tick, "price"),
            _units(low, tick, "price"), _units(close, tick, "price"),
            _units(volume, lot, "quantity"), _units(quote, tick * lot, "quote volume"),
            int(count), datetime_to_ns(last_time),
        ))
    return out


def load_history(dsn: str, instruments: Iterable[Instrument], last_ts: int,
                 before_seq: int) -> History:
    """The aggregates of the trades the feed's state at ``last_ts`` is built from, those with
    a seq below ``before_seq`` (see :func:`tail_start`), read from Postgres (blocking).

    Raises what psycopg raises when Postgres is unreachable or the query fails.
    """
    import psycopg

    instruments = list(instruments)
    known = {i.symbol for i in instruments}
    since = _EPOCH + (history_start(last_ts) // 1000) * _US
    params: dict[str, Any] = {"since": since, "before": before_seq, "keep": RECENT_TRADES}
    conn: Any
    with psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        # one snapshot for both reads: a recent trade is always one a bucket counts
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            conn.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
            buckets = [r for r in conn.execute(BUCKETS_SQL, params).fetchall()
                       if r[0] in known]
            froms = recent_minutes(buckets, RECENT_TRADES)
            recent: list[tuple] = []
            if froms:
                starts = [_EPOCH + datetime.timedelta(minutes=m) for m in froms.values()]
                params.update(symbols=list(froms), froms=starts, recent_since=min(starts))
                recent = conn.execute(RECENT_SQL, params).fetchall()
    return History(seed_buckets_of(buckets, instruments), seed_trades_of(recent, instruments))


def recent_minutes(bucket_rows: Iterable[tuple], keep: int) -> dict[str, int]:
    """Per symbol, the newest minute from which ``BUCKETS_SQL`` rows (in time order) count at
    least ``keep`` trades (the oldest if they count fewer): where its recent trades start."""
    rows_of: dict[str, list[tuple]] = {}
    for row in bucket_rows:
        rows_of.setdefault(row[0], []).append(row)
    out = {}
    for symbol, rows in rows_of.items():
        counted = 0
        for row in reversed(rows):
            counted += int(row[8])
            out[symbol] = int(row[1])
            if counted >= keep:
                break
    return out


def tail_start(replayed: Iterable[Any], next_seq: int) -> int:
    """The seq from which the journal tail's ``Trade`` events hold every trade: the first
    one's seq (``next_seq`` if the tail traded nothing). The trades below it are read from
    Postgres, those from it on taken from the tail."""
    return min((e.seq for e in replayed), default=next_seq)


def tail_trades(replayed: Iterable[Any], since_ns: int) -> Iterator[SeedTrade]:
    """The journal tail's ``Trade`` events as seed trades (lazily, in replay order), those
    older than ``since_ns`` left out."""
    for e in replayed:
        if e.ts >= since_ns:
            yield SeedTrade(e.symbol, e.price, e.qty, e.ts, e.exec_id, e.aggressor_side, e.seq)

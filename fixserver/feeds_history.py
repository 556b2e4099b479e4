"""Past trades from Postgres, to start the feed's tickers, candles and recent trades with.

Theory of operation
-------------------
The journal cannot rebuild 24 h of statistics: snapshots bound its tail. Postgres can: the
writer stores both sides of every trade in ``executions`` (see :mod:`fixserver.pg.rows`),
so the taker's row (ExecID ``"<exec_id>-T"``, side = the aggressor's) is one row per trade.
At start-up, before the reactor runs, :func:`load_trades` reads the trades since
:func:`history_start` (the oldest minute of the 24 h ticker window, which also covers the
current candle of every kline interval, 1d included) up to the recovered journal's last
command, in trade order, and :meth:`feeds.core.FeedCore.seed_trades` rebuilds the state.

Postgres keeps microseconds, so a seeded trade's ``ts`` is floored to the microsecond. That
moves no trade across a minute or candle boundary (those are whole seconds), so tickers and
candles come out exactly as they were; only the recent trades' ``ts`` lose the nanoseconds.

This is a blocking read with a short connect timeout (start-up, off the reactor's clock).
If Postgres cannot be read the caller logs a warning and the feed starts empty, as before.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from engine.enums import Side
from engine.instruments import Instrument
from feeds.core import SeedTrade
from feeds.kline import INTERVALS
from feeds.ticker import MINUTE_NS, WINDOW_MINUTES

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_US = datetime.timedelta(microseconds=1)

#: seconds to wait for Postgres at start-up before starting with empty statistics
CONNECT_TIMEOUT_S = 3
#: milliseconds the read may take before Postgres cancels it
STATEMENT_TIMEOUT_MS = 10_000

# One row per trade: the taker's execution (its side is the aggressor's). Trade order is the
# engine exec id's; ``seq < next_seq`` keeps to trades the recovered journal knows.
TRADES_SQL = """
SELECT symbol, last_px, last_qty, exec_time, engine_exec_id, side, seq
FROM executions
WHERE exec_type = 'TRADE' AND exec_id LIKE '%%-T' AND exec_time >= %s AND seq < %s
ORDER BY engine_exec_id
"""


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


def _units(value: Decimal, unit: str, what: str) -> int:
    units = Decimal(value) / Decimal(unit)
    if units != units.to_integral_value():
        raise ValueError(f"{what} {value} is not a multiple of {unit}")
    return int(units)


def seed_trades_of(rows: Iterable[tuple], instruments: Iterable[Instrument]) -> list[SeedTrade]:
    """``TRADES_SQL`` rows -> seed trades (rows of unknown symbols are left out)."""
    by_symbol = {i.symbol: i for i in instruments}
    out = []
    for symbol, last_px, last_qty, exec_time, exec_id, side, seq in rows:
        instrument = by_symbol.get(symbol)
        if instrument is None:
            continue
        out.append(SeedTrade(
            symbol, _units(last_px, instrument.tick_size, "price"),
            _units(last_qty, instrument.lot_size, "quantity"), datetime_to_ns(exec_time),
            int(exec_id), Side[side], int(seq),
        ))
    return out


def load_trades(dsn: str, instruments: Iterable[Instrument], last_ts: int,
                next_seq: int) -> list[SeedTrade]:
    """The trades the feed's state at ``last_ts`` is built from, read from Postgres (blocking).

    Raises what psycopg raises when Postgres is unreachable or the query fails.
    """
    import psycopg

    since = _EPOCH + (history_start(last_ts) // 1000) * _US
    conn: Any
    with psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        rows = conn.execute(TRADES_SQL, (since, next_seq)).fetchall()
    return seed_trades_of(rows, instruments)


def merge_replayed(stored: list[SeedTrade], replayed: Iterable[Any], since_ns: int
                   ) -> list[SeedTrade]:
    """Postgres trades plus the journal tail's ``Trade`` events Postgres does not hold yet.

    After a crash the replayed tail's rows are only queued again at start-up, so the read
    above can miss the newest trades; they come from the replay instead (same exec ids),
    in exec-id order, those older than ``since_ns`` left out.
    """
    known = {t.trade_id for t in stored}
    extra = [
        SeedTrade(e.symbol, e.price, e.qty, e.ts, e.exec_id, e.aggressor_side, e.seq)
        for e in replayed
        if e.exec_id not in known and e.ts >= since_ns
    ]
    if not extra:
        return stored
    return sorted([*stored, *extra], key=lambda t: t.trade_id)

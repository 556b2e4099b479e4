"""OHLCV candles (klines) aligned to interval boundaries by trade timestamps.

A candle of interval ``I`` (ns) covers ``[start, start + I)`` with ``start = ts - ts % I``:
aligned to the Unix epoch, hence to UTC minutes, hours and midnight (4h candles start at
00:00, 04:00, ... UTC). Time is the engine's event ts, never a wall clock. A candle is
*closed* once an event at or after its end is seen (a trade or any other event passed to
:meth:`KlineSeries.advance`); intervals with no trade produce no candle.

A series keeps only its current candle (and, until the next take, the candles changed since
the last one). Every interval is a whole number of minutes, so a minute's trades always fall
in one candle and a candle can be rebuilt from per-minute aggregates
(:meth:`KlineSeries.add_bucket`) exactly as from the trades.
"""

from __future__ import annotations

_S = 1_000_000_000

INTERVALS: dict[str, int] = {
    "1m": 60 * _S,
    "5m": 5 * 60 * _S,
    "15m": 15 * 60 * _S,
    "1h": 3600 * _S,
    "4h": 4 * 3600 * _S,
    "1d": 86400 * _S,
}


class Candle:
    """One interval's OHLCV (prices in ticks, volume in lots, quote in ticks * lots)."""

    __slots__ = (
        "close",
        "closed",
        "count",
        "end",
        "high",
        "low",
        "open",
        "quote",
        "start",
        "volume",
    )

    def __init__(self, start: int, end: int, price: int) -> None:
        self.start = start
        self.end = end
        self.open = self.high = self.low = self.close = price
        self.volume = 0
        self.quote = 0
        self.count = 0
        self.closed = False

    def as_tuple(self) -> tuple:
        """All fields, for comparisons in tests and logs."""
        return (self.start, self.end, self.open, self.high, self.low, self.close, self.volume,
                self.quote, self.count, self.closed)


class KlineSeries:
    """The current candle of one symbol and interval, and those changed since the last take."""

    __slots__ = ("_changed", "current", "interval")

    def __init__(self, interval_ns: int) -> None:
        self.interval = interval_ns
        self.current: Candle | None = None
        self._changed: list[Candle] = []

    def advance(self, ts: int) -> None:
        """Close the current candle if ``ts`` is at or past its end."""
        c = self.current
        if c is not None and ts >= c.end:
            c.closed = True
            self.current = None
            if not self._changed or self._changed[-1] is not c:
                self._changed.append(c)

    def on_trade(self, ts: int, price: int, qty: int) -> None:
        """Add a trade to its interval's candle (opening it, closing the previous one)."""
        self.advance(ts)
        c = self.current
        if c is None:
            start = ts - ts % self.interval
            c = self.current = Candle(start, start + self.interval, price)
        elif price > c.high:
            c.high = price
        elif price < c.low:
            c.low = price
        c.close = price
        c.volume += qty
        c.quote += price * qty
        c.count += 1
        if not self._changed or self._changed[-1] is not c:
            self._changed.append(c)

    def add_bucket(self, ts: int, open_: int, high: int, low: int, close: int, volume: int,
                   quote: int, count: int) -> None:
        """Add the aggregate of past trades that all fall in ``ts``'s candle (one minute's), in
        time order: the same candle as adding each trade."""
        self.advance(ts)
        c = self.current
        if c is None:
            start = ts - ts % self.interval
            c = self.current = Candle(start, start + self.interval, open_)
            c.high, c.low = high, low
        else:
            if high > c.high:
                c.high = high
            if low < c.low:
                c.low = low
        c.close = close
        c.volume += volume
        c.quote += quote
        c.count += count
        if not self._changed or self._changed[-1] is not c:
            self._changed.append(c)

    def take_changed(self) -> list[Candle]:
        """Candles changed since the last call, oldest first (closed ones marked closed)."""
        changed = self._changed
        self._changed = []
        return changed

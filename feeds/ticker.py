"""A rolling 24-hour ticker from trade timestamps, in per-minute buckets.

Theory of operation
-------------------
Time is the engine's: ``ts`` (integer ns) of the events seen, never a wall clock, so the same
event stream always gives the same ticker. Trades go into one bucket per UTC minute
(``ts // 60 s``) holding open, high, low, volume, quote volume and trade count. The window
at time ``now`` (the latest event ts seen, which the sequencer keeps non-decreasing) is the
bucket of ``now``'s minute and the 1,439 before it: 24 hours at one-minute resolution, so a
trade leaves the window between 24 h and 24 h 1 min after it happened.

``open`` is the first trade price of the oldest bucket in the window, ``high``/``low`` the
extremes over the window, ``volume`` the summed quantity (lots) and ``quote_volume`` the
summed price * qty (ticks * lots). High and low are kept incrementally as trades arrive and
recomputed from the (at most 1,440) buckets only when an evicted bucket held one of them.
``last`` survives an empty window; the window values are None then.

Memory is bounded by time, not by trades: whatever the trade rate, a symbol keeps at most
1,440 buckets (one per minute of the window that saw a trade), evicted as ``now`` moves on.
The window's values depend only on each minute's aggregate (its first trade's price, its
extremes, its sums), so a restart rebuilds them exactly from per-minute aggregates
(:meth:`RollingTicker.add_bucket`) rather than from every trade of the day.
"""

from __future__ import annotations

from collections import deque

MINUTE_NS = 60 * 1_000_000_000
WINDOW_MINUTES = 24 * 60


class _Bucket:
    __slots__ = ("count", "high", "low", "minute", "open", "quote", "volume")

    def __init__(self, minute: int, price: int) -> None:
        self.minute = minute
        self.open = price
        self.high = price
        self.low = price
        self.volume = 0
        self.quote = 0
        self.count = 0


class RollingTicker:
    """24-hour rolling statistics of one symbol (integers: ticks, lots)."""

    __slots__ = (
        "_buckets",
        "_window",
        "count",
        "high",
        "last_price",
        "last_qty",
        "low",
        "now",
        "quote_volume",
        "symbol",
        "volume",
    )

    def __init__(self, symbol: str, window_minutes: int = WINDOW_MINUTES) -> None:
        self.symbol = symbol
        self.now = 0
        self.last_price = 0
        self.last_qty = 0
        self.high = 0
        self.low = 0
        self.volume = 0
        self.quote_volume = 0
        self.count = 0
        self._buckets: deque[_Bucket] = deque()
        self._window = window_minutes

    @property
    def open(self) -> int:
        """Open price of the window (0 if the window holds no trade)."""
        return self._buckets[0].open if self._buckets else 0

    def advance(self, ts: int) -> bool:
        """Move the window's end to ``ts`` (ignored if earlier); True if a bucket left it."""
        if ts <= self.now:
            return False
        self.now = ts
        buckets = self._buckets
        oldest_kept = ts // MINUTE_NS - self._window + 1
        if not buckets or buckets[0].minute >= oldest_kept:
            return False
        rescan = False
        while buckets and buckets[0].minute < oldest_kept:
            b = buckets.popleft()
            self.volume -= b.volume
            self.quote_volume -= b.quote
            self.count -= b.count
            rescan = rescan or b.high == self.high or b.low == self.low
        if rescan:
            self.high = max((b.high for b in buckets), default=0)
            self.low = min((b.low for b in buckets), default=0)
        return True

    @property
    def bucket_count(self) -> int:
        """Buckets kept (at most the window's 1,440 minutes after :meth:`advance`)."""
        return len(self._buckets)

    def add_bucket(self, minute: int, last_ts: int, open_: int, high: int, low: int,
                   volume: int, quote: int, count: int) -> None:
        """Add the aggregate of ``count`` past trades of one minute (``ts // MINUTE_NS``), the
        last at ``last_ts``: the same window as adding each trade, last price untouched.

        Minutes come in time order (a minute equal to the newest bucket's is merged into it;
        like a trade's ts, an older one is clamped to the window's end).
        """
        self.advance(last_ts)
        minute = max(minute, self.now // MINUTE_NS)
        buckets = self._buckets
        if buckets and buckets[-1].minute == minute:
            b = buckets[-1]
            if high > b.high:
                b.high = high
            if low < b.low:
                b.low = low
        else:
            b = _Bucket(minute, open_)
            b.high, b.low = high, low
            buckets.append(b)
        b.volume += volume
        b.quote += quote
        b.count += count
        first_in_window = self.count == 0
        if first_in_window or high > self.high:
            self.high = high
        if first_in_window or low < self.low:
            self.low = low
        self.volume += volume
        self.quote_volume += quote
        self.count += count

    def on_trade(self, ts: int, price: int, qty: int) -> None:
        """Add a trade (its ts is clamped to the window's end if it is older)."""
        self.advance(ts)
        minute = self.now // MINUTE_NS
        buckets = self._buckets
        if buckets and buckets[-1].minute == minute:
            b = buckets[-1]
            if price > b.high:
                b.high = price
            if price < b.low:
                b.low = price
        else:
            b = _Bucket(minute, price)
            buckets.append(b)
        b.volume += qty
        b.quote += price * qty
        b.count += 1
        first_in_window = self.count == 0
        if first_in_window or price > self.high:
            self.high = price
        if first_in_window or price < self.low:
            self.low = price
        self.volume += qty
        self.quote_volume += price * qty
        self.count += 1
        self.last_price = price
        self.last_qty = qty

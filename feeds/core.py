"""The pure feed core: engine events in, one batch of channel messages out per flush.

Theory of operation
-------------------
:meth:`FeedCore.apply` takes engine events in the order the engine emitted them (for real:
as the sequencer releases them once their journal is durable). It does the cheap part at
once (record level changes, queue trades, update tickers, candles, trading statuses, index
and mark prices, funding, liquidations)
and leaves rendering to :meth:`FeedCore.flush`, called once per batch interval, which returns
a list of :class:`FeedMessage` (at most one per channel per batch, except a liquidations
channel: one per liquidation step, see :mod:`feeds.liquidations`). Each message's payload is
built once; :meth:`FeedMessage.encoded` encodes it at most once per wire format and every
subscriber (and every other sink: Redis, FIX market data) shares those bytes.

Time is the engine's: the latest event ``ts`` seen. Nothing here reads a clock, does I/O or
knows about subscribers, so the same event stream and the same flush points always give
the same messages.

What it keeps of past trades is bounded by time, not by how many there were
(:meth:`FeedCore.kept`): per symbol the ticker's per-minute buckets of the 24 h window
(at most 1,440), the latest :data:`RECENT_TRADES` trades, one current candle per kline
interval, and the trades queued until the next flush. A restart rebuilds that state from
per-minute aggregates and the journal tail's trades (:meth:`FeedCore.seed_history`),
exactly as if the trades had been applied.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, NamedTuple

from engine.enums import Side
from engine.events import (
    FundingApplied,
    IndexPriceUpdated,
    InstrumentConfigured,
    InstrumentStatusChanged,
    LevelChanged,
    Liquidated,
    MarkPriceUpdated,
    Trade,
)
from engine.instruments import Instrument
from feeds.channels import (
    KLINE,
    LIQUIDATIONS,
    MARK_PRICE,
    ORDERBOOK,
    STATUS,
    TICKER,
    TRADES,
    Channel,
)
from feeds.diffs import BOOK_DEPTHS, FULL_DEPTH, BookFeed, BookUpdate, checksum_of
from feeds.encoding import WireFormat, encode
from feeds.kline import INTERVALS, Candle, KlineSeries
from feeds.l2book import Level
from feeds.liquidations import LiquidationFeed
from feeds.mark import MarkFeed
from feeds.numbers import UnitFormatter
from feeds.status import StatusFeed
from feeds.ticker import MINUTE_NS, RollingTicker

_SIDE_NAMES = {Side.BUY: "buy", Side.SELL: "sell"}

#: trades kept per symbol for :meth:`FeedCore.recent_trades` (the Redis sink's list length)
RECENT_TRADES = 200


class SeedTrade(NamedTuple):
    """A past trade to rebuild tickers, candles and recent trades from (integers: ticks, lots)."""

    symbol: str
    price: int
    qty: int
    ts: int  # engine ns (from Postgres: floored to the microsecond, as it stores them)
    trade_id: int  # the engine exec id (the trade message's "id")
    aggressor_side: Side
    seq: int  # the command that traded (the trade message's "u")


class SeedBucket(NamedTuple):
    """One symbol's past trades of one UTC minute, aggregated (integers: ticks, lots)."""

    symbol: str
    minute: int  # the trades' ts // MINUTE_NS
    open: int  # first trade's price (in trade order)
    high: int
    low: int
    close: int  # last trade's price
    volume: int  # summed qty (lots)
    quote: int  # summed price * qty (ticks * lots)
    trades: int  # how many trades
    last_ts: int  # the last trade's ts (engine ns; from Postgres: floored to the microsecond)


class KeptHistory(NamedTuple):
    """The objects a symbol's feed keeps of past trades: bounded by time, not trade count."""

    ticker_buckets: int  # at most WINDOW_MINUTES (one per minute of the 24 h window)
    recent_trades: int  # at most RECENT_TRADES
    candles: int  # current candles: at most one per kline interval
    queued_trades: int  # trades applied since the last flush (0 after it)


class FeedMessage:
    """One channel's message of one batch (or a snapshot); encoded lazily, once per format."""

    __slots__ = ("_encoded", "channel", "kind", "payload", "trade_ts")

    def __init__(self, channel: str, kind: str, payload: dict, trade_ts: int = 0) -> None:
        self.channel = channel
        self.kind = kind
        self.payload = payload
        self.trade_ts = trade_ts  # ts of the oldest trade it reports (0 if none): for latency
        self._encoded: dict[WireFormat, bytes] = {}

    def encoded(self, fmt: WireFormat) -> bytes:
        """The payload in ``fmt``; encoded on first use, the same bytes object afterwards."""
        data = self._encoded.get(fmt)
        if data is None:
            data = self._encoded[fmt] = encode(self.payload, fmt)
        return data

    def __repr__(self) -> str:
        return f"FeedMessage({self.channel!r}, {self.payload!r})"


class BookSnapshot(NamedTuple):
    """A symbol's published L2 book (integer ticks, lots) at ``update_id`` (a command seq)."""

    symbol: str
    depth: int  # 0 = full
    update_id: int
    bids: list[Level]  # (price, qty, count), best first
    asks: list[Level]


class _SymbolFeed:
    """Everything the core keeps for one symbol."""

    def __init__(self, instrument: Instrument) -> None:
        symbol = self.symbol = instrument.symbol
        self.price = UnitFormatter(instrument.tick_size)
        self.qty = UnitFormatter(instrument.lot_size)
        notional_unit = Decimal(instrument.tick_size) * Decimal(instrument.lot_size)
        self.quote = UnitFormatter(str(notional_unit * instrument.multiplier))
        self.book = BookFeed(symbol)
        self.trades: list[Trade] = []  # queued for the next flush
        # (id, seq, ts, price, qty, aggressor side) of the latest trades, published or not
        self.recent: deque[tuple[int, int, int, int, int, Side]] = deque(maxlen=RECENT_TRADES)
        self.ticker = RollingTicker(symbol)
        self.ticker_dirty = False
        self.top: tuple = (None, None)
        self.klines = {name: KlineSeries(ns) for name, ns in INTERVALS.items()}
        self.book_channels = {d: Channel(ORDERBOOK, symbol, d).name for d in BOOK_DEPTHS}
        self.trades_channel = Channel(TRADES, symbol, None).name
        self.ticker_channel = Channel(TICKER, symbol, None).name
        self.kline_channels = {name: Channel(KLINE, symbol, name).name for name in INTERVALS}
        self.status = StatusFeed(symbol, Channel(STATUS, symbol, None).name, instrument.status)
        self.marks = MarkFeed(symbol, Channel(MARK_PRICE, symbol, None).name, self.price)
        #: the published markPrice message: every subscriber's snapshot shares its bytes
        self.mark_message: FeedMessage | None = None
        self.liquidations = LiquidationFeed(
            symbol, Channel(LIQUIDATIONS, symbol, None).name, self.price, self.qty)
        #: the liquidations snapshot message, until the next published step (shared bytes)
        self.liquidations_message: FeedMessage | None = None

    def wire_levels(self, levels: list[Level]) -> list[list]:
        price, qty = self.price, self.qty
        return [[price(p), qty(q), c] for p, q, c in levels]


class FeedCore:
    """Market-data state of every instrument, built from engine events (pure)."""

    def __init__(self, instruments: Iterable[Instrument]) -> None:
        self._feeds = {i.symbol: _SymbolFeed(i) for i in instruments}
        #: the listed symbols; grows in place when an instrument is listed while running
        #: (the WebSocket sessions and the Redis sink hold this very set)
        self.symbols: set[str] = set(self._feeds)
        self.now = 0  # latest event ts seen (engine time, ns)
        self._snapshots: dict[str, tuple[int, FeedMessage]] = {}

    # -- input ---------------------------------------------------------------------------

    def seed_book(self, symbol: str, bids: list[Level], asks: list[Level], update_id: int) -> None:
        """Start a symbol's book from a known L2 state (the engine's, after a restart)."""
        self._feeds[symbol].book.seed(bids, asks, update_id)

    def list_instrument(self, instrument: Instrument) -> None:
        """A symbol listed while running: its channels exist from now on (its book starts
        empty: nothing rested on it before it was listed)."""
        if instrument.symbol not in self._feeds:
            self._feeds[instrument.symbol] = _SymbolFeed(instrument)
            self.symbols.add(instrument.symbol)

    def apply(self, events: Iterable[Any]) -> None:
        """Take engine events in engine order (unknown symbols and kinds are ignored)."""
        feeds = self._feeds
        for ev in events:
            t = type(ev)
            if t is InstrumentConfigured:
                self.list_instrument(ev.instrument)
                continue
            if t is LevelChanged:
                f = feeds.get(ev.symbol)
                if f is not None:
                    f.book.on_level(ev.seq, ev.side, ev.price, ev.qty, ev.count)
                continue
            ts = getattr(ev, "ts", None)
            if ts is not None and ts > self.now:
                self.now = ts
            if t is Trade:
                f = feeds.get(ev.symbol)
                if f is not None:
                    f.trades.append(ev)
                    f.recent.append(
                        (ev.exec_id, ev.seq, ev.ts, ev.price, ev.qty, ev.aggressor_side))
                    f.ticker.on_trade(ev.ts, ev.price, ev.qty)
                    f.ticker_dirty = True
                    for series in f.klines.values():
                        series.on_trade(ev.ts, ev.price, ev.qty)
            elif t is InstrumentStatusChanged:
                f = feeds.get(ev.symbol)
                if f is not None:
                    f.status.on_change(ev.seq, ev.ts, ev.status)
            elif t is MarkPriceUpdated:
                f = feeds.get(ev.symbol)
                if f is not None and f.marks.on_mark(ev.seq, ev.ts, ev.index, ev.mark,
                                                     ev.funding_rate_e8, ev.next_funding_ts):
                    f.ticker_dirty = True
            elif t is Liquidated:
                f = feeds.get(ev.symbol)
                if f is not None:
                    f.liquidations.on_liquidated(ev.seq, ev.ts, ev.side, ev.qty, ev.filled,
                                                 ev.notional, ev.bankruptcy_price, ev.order_id)
            elif t is FundingApplied:
                f = feeds.get(ev.symbol)
                if f is not None:
                    f.marks.on_funding(ev.seq, ev.ts, ev.rate_e8, ev.next_funding_ts)
            elif t is IndexPriceUpdated:
                f = feeds.get(ev.symbol)
                if f is not None and f.marks.on_index(ev.price):
                    f.ticker_dirty = True

    def seed_mark(self, symbol: str, index: int, mark: int, funding_rate_e8: int = 0,
                  next_funding_ts: int = 0) -> None:
        """Start a symbol's index and mark (ticks, 0: none) and its predicted funding rate and
        next funding instant (ns, 0: no funding) from a recovered engine; published as
        state, not news (update id and time 0: which command set them is not known)."""
        f = self._feeds[symbol]
        f.marks.seed(index, mark, funding_rate_e8, next_funding_ts)
        f.mark_message = None

    def seed_trades(self, trades: Iterable[SeedTrade]) -> int:
        """Rebuild tickers, candles and recent trades from past trades, publishing nothing;
        returns how many were taken (those of known symbols).

        ``trades`` are in trade order (engine exec id), and older than any event applied
        later. The state left is the one :meth:`apply` of the same trades followed by a
        :meth:`flush` leaves, minus the messages: no trade, candle or ticker is queued, so
        the next flush publishes only what happens after the seed (a restart's recovered
        history is not news). Trades of unknown symbols are ignored. ``trades`` may be an
        iterator: nothing keeps more of it than the recent trades.
        """
        return self.seed_history((), (), trades)

    def seed_history(self, buckets: Iterable[SeedBucket], recent: Iterable[SeedTrade],
                     trades: Iterable[SeedTrade] = ()) -> int:
        """:meth:`seed_trades` of past trades given as per-minute aggregates of the older ones
        and then the newer ones one by one; returns how many trades that is.

        ``buckets`` are each symbol's minutes in time order; ``recent`` the last trades
        among those the buckets aggregate (in trade order, at least :data:`RECENT_TRADES`
        per symbol, or all): they only fill the recent list and the tickers' last price and
        are not counted again. ``trades`` are newer than every bucket's (a trade of a
        bucket's minute joins it). The state left is exactly the one :meth:`seed_trades` of
        all the trades leaves: the ticker's window and the candles depend on nothing finer
        than a minute's aggregate (see :mod:`feeds.ticker`, :mod:`feeds.kline`).
        """
        feeds = self._feeds
        touched: set[str] = set()
        taken = 0
        for b in buckets:
            f = feeds.get(b.symbol)
            if f is None:
                continue
            if b.last_ts > self.now:
                self.now = b.last_ts
            taken += b.trades
            touched.add(b.symbol)
            f.ticker.add_bucket(b.minute, b.last_ts, b.open, b.high, b.low, b.volume, b.quote,
                                b.trades)
            start = b.minute * MINUTE_NS
            for series in f.klines.values():
                series.add_bucket(start, b.open, b.high, b.low, b.close, b.volume, b.quote,
                                  b.trades)
        for t in recent:
            f = feeds.get(t.symbol)
            if f is None:
                continue
            f.recent.append((t.trade_id, t.seq, t.ts, t.price, t.qty, t.aggressor_side))
            f.ticker.last_price = t.price
            f.ticker.last_qty = t.qty
        for t in trades:
            f = feeds.get(t.symbol)
            if f is None:
                continue
            if t.ts > self.now:
                self.now = t.ts
            taken += 1
            touched.add(t.symbol)
            f.recent.append((t.trade_id, t.seq, t.ts, t.price, t.qty, t.aggressor_side))
            f.ticker.on_trade(t.ts, t.price, t.qty)
            for series in f.klines.values():
                series.on_trade(t.ts, t.price, t.qty)
        # Move the touched windows to now; seeded candles are state, not updates to send.
        now = self.now
        for symbol in touched:
            f = feeds[symbol]
            f.ticker.advance(now)
            for series in f.klines.values():
                series.advance(now)
                series.take_changed()
        return taken

    def kept(self, symbol: str) -> KeptHistory:
        """What ``symbol``'s feed keeps of past trades (bounded by time, not by trade count)."""
        f = self._feeds[symbol]
        return KeptHistory(
            f.ticker.bucket_count, len(f.recent),
            sum(s.current is not None for s in f.klines.values()), len(f.trades))

    # -- output --------------------------------------------------------------------------

    def flush(self) -> list[FeedMessage]:
        """Publish everything since the last flush: at most one message per channel."""
        out: list[FeedMessage] = []
        now = self.now
        for f in self._feeds.values():
            status = f.status.take_update()
            if status is not None:  # first: the news that frames the symbol's other messages
                out.append(FeedMessage(f.status.channel, STATUS, status))
            if f.book.has_pending:
                for upd in f.book.flush():
                    out.append(self._book_update(f, upd))
            if f.trades:
                out.append(self._trades(f))
            mark = f.marks.take_update()
            if mark is not None:
                f.mark_message = FeedMessage(f.marks.channel, MARK_PRICE, mark)
                out.append(f.mark_message)
            if f.liquidations.pending:
                channel = f.liquidations.channel
                for step in f.liquidations.take_updates():
                    out.append(FeedMessage(channel, LIQUIDATIONS, step))
                f.liquidations_message = None
            for name, series in f.klines.items():
                series.advance(now)
                changed = series.take_changed()
                if changed:
                    out.append(self._kline(f, name, changed))
            if f.ticker.advance(now):
                f.ticker_dirty = True
            top = (f.book.book.best(Side.BUY), f.book.book.best(Side.SELL))
            if top != f.top:
                f.top = top
                f.ticker_dirty = True
            if f.ticker_dirty:
                f.ticker_dirty = False
                out.append(FeedMessage(f.ticker_channel, TICKER, self._ticker_payload(f)))
        return out

    def book_snapshot(self, symbol: str, depth: int = FULL_DEPTH) -> BookSnapshot:
        """The published book of ``symbol`` (as of the last flush) with its update id.

        For depth 5 or 20 the update id is the ``u`` of the last update sent on that depth's
        channel (the top N is unchanged since); for full depth it is the book's last seq.
        Raises KeyError for an unknown symbol or depth.
        """
        update_id, bids, asks = self._feeds[symbol].book.snapshot(depth)
        return BookSnapshot(symbol, depth, update_id, bids, asks)

    def snapshot_message(self, channel: Channel) -> FeedMessage | None:
        """What a new subscriber of ``channel`` gets first (None for trades, or no candle yet;
        for liquidations the latest published steps, possibly none)."""
        f = self._feeds[channel.symbol]
        if channel.kind == ORDERBOOK:
            snap = self.book_snapshot(channel.symbol, channel.param)  # type: ignore[arg-type]
            name = f.book_channels[snap.depth]
            cached = self._snapshots.get(name)
            if cached is not None and cached[0] == snap.update_id:
                return cached[1]
            msg = FeedMessage(name, ORDERBOOK, {
                "channel": name, "type": "snapshot", "symbol": f.symbol, "u": snap.update_id,
                "ts": self.now, "bids": f.wire_levels(snap.bids), "asks": f.wire_levels(snap.asks),
                "checksum": checksum_of(snap.bids, snap.asks, f.price, f.qty),
            })
            self._snapshots[name] = (snap.update_id, msg)
            return msg
        if channel.kind == TICKER:
            return FeedMessage(f.ticker_channel, TICKER, self._ticker_payload(f))
        if channel.kind == STATUS:
            return FeedMessage(f.status.channel, STATUS, f.status.snapshot())
        if channel.kind == MARK_PRICE:
            if f.mark_message is None:  # nothing published since start (or the seed)
                f.mark_message = FeedMessage(f.marks.channel, MARK_PRICE, f.marks.snapshot())
            return f.mark_message
        if channel.kind == LIQUIDATIONS:
            if f.liquidations_message is None:
                f.liquidations_message = FeedMessage(f.liquidations.channel, LIQUIDATIONS,
                                                     f.liquidations.snapshot())
            return f.liquidations_message
        if channel.kind == KLINE:
            current = f.klines[channel.param].current  # type: ignore[index]
            if current is None:
                return None
            return self._kline(f, channel.param, [current])  # type: ignore[arg-type]
        return None

    def recent_trades(self, symbol: str) -> list[dict]:
        """The latest trades of ``symbol`` (at most RECENT_TRADES), oldest first, as the
        trades channel renders them; includes trades not yet flushed."""
        f = self._feeds[symbol]
        price, qty = f.price, f.qty
        return [
            {"id": i, "u": seq, "ts": ts, "price": price(p), "qty": qty(q), "side": _SIDE_NAMES[s]}
            for i, seq, ts, p, q, s in f.recent
        ]

    # -- rendering -----------------------------------------------------------------------

    def _book_update(self, f: _SymbolFeed, upd: BookUpdate) -> FeedMessage:
        name = f.book_channels[upd.depth]
        return FeedMessage(name, ORDERBOOK, {
            "channel": name, "type": "update", "symbol": f.symbol,
            "U": upd.first_id, "u": upd.last_id, "pu": upd.prev_id, "ts": self.now,
            "bids": f.wire_levels(upd.bids), "asks": f.wire_levels(upd.asks),
            "checksum": checksum_of(upd.top_bids, upd.top_asks, f.price, f.qty),
        })

    def _trades(self, f: _SymbolFeed) -> FeedMessage:
        trades, f.trades = f.trades, []
        price, qty = f.price, f.qty
        data = [
            {"id": t.exec_id, "u": t.seq, "ts": t.ts, "price": price(t.price), "qty": qty(t.qty),
             "side": _SIDE_NAMES[t.aggressor_side]}
            for t in trades
        ]
        name = f.trades_channel
        return FeedMessage(name, TRADES, {
            "channel": name, "type": "trades", "symbol": f.symbol, "data": data,
        }, trade_ts=trades[0].ts)

    def _kline(self, f: _SymbolFeed, interval: str, candles: list[Candle]) -> FeedMessage:
        price, qty, quote = f.price, f.qty, f.quote
        data = [
            {"start": c.start, "end": c.end, "open": price(c.open), "high": price(c.high),
             "low": price(c.low), "close": price(c.close), "volume": qty(c.volume),
             "quote_volume": quote(c.quote), "trades": c.count, "closed": c.closed}
            for c in candles
        ]
        name = f.kline_channels[interval]
        return FeedMessage(name, KLINE, {
            "channel": name, "type": "kline", "symbol": f.symbol, "interval": interval,
            "data": data,
        })

    def _ticker_payload(self, f: _SymbolFeed) -> dict:
        t = f.ticker
        price, qty = f.price, f.qty
        bid, ask = f.book.book.best(Side.BUY), f.book.book.best(Side.SELL)
        has_window = t.count > 0
        mark, index = f.marks.ticker_fields()
        return {
            "channel": f.ticker_channel, "type": "ticker", "symbol": f.symbol, "ts": self.now,
            "last": price(t.last_price) if t.last_price else None,
            "last_qty": qty(t.last_qty) if t.last_price else None,
            "bid": price(bid[0]) if bid else None, "bid_qty": qty(bid[1]) if bid else None,
            "ask": price(ask[0]) if ask else None, "ask_qty": qty(ask[1]) if ask else None,
            "open": price(t.open) if has_window else None,
            "high": price(t.high) if has_window else None,
            "low": price(t.low) if has_window else None,
            "volume": qty(t.volume), "quote_volume": f.quote(t.quote_volume), "trades": t.count,
            "mark": mark, "index": index,
        }

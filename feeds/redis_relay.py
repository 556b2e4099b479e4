"""The follower's feed state, rebuilt from Redis: a stand-in for FeedCore behind a FeedHub.

Theory of operation
-------------------
A feed process that is not the exchange has no engine events; it has what the sink wrote to
Redis (:mod:`feeds.redis_keys`). :class:`RelayCore` is loaded from a consistent read of that
state (:class:`StoredState`, at batch ``seq`` of sink run ``epoch``) and then takes each
published envelope in turn (:meth:`RelayCore.accept`). It gives a :class:`~feeds.hub.FeedHub`
what the hub asks of a FeedCore (``symbols``, ``flush``, ``snapshot_message``,
``book_snapshot``), so the hub and the Autobahn server run unchanged on top of it.

Race-free bootstrap (the caller subscribes to the channel *before* reading the state, so
nothing falls between): envelopes with ``seq`` at or below the state's are already in it and
are skipped; the next one must be ``seq + 1``. Anything else (a gap, another epoch, a SYNC
notice, an order-book update whose ``pu`` is not the id held, a checksum that disagrees) raises
:class:`ResyncNeeded` and the caller reads the state again. After a reload every channel that
has subscribers gets a fresh snapshot message, so clients continue on the new state.

Relayed messages keep the bytes the exchange encoded (:class:`RelayedMessage`); only the other
wire format, if some subscriber uses it, is encoded here, once per message. Nothing here does
I/O or reads a clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from decimal import Decimal
from typing import Any, NamedTuple

from sortedcontainers import SortedDict

from feeds.channels import (
    DEPTH_NAMES,
    KLINE,
    LIQUIDATIONS,
    MARK_PRICE,
    ORDERBOOK,
    STATUS,
    TICKER,
    TRADES,
    Channel,
)
from feeds.checksum import CHECKSUM_LEVELS, book_checksum
from feeds.core import FeedMessage
from feeds.diffs import BOOK_DEPTHS, FULL_DEPTH
from feeds.encoding import WireFormat, decode
from feeds.kline import INTERVALS
from feeds.liquidations import RECENT_LIQUIDATIONS, entry_of, snapshot_payload
from feeds.redis_keys import (
    SYNC,
    TS,
    U_DEPTH,
    U_FULL,
    VERSION,
    Envelope,
    Meta,
    StoredLevel,
    is_zero_qty,
    parse_book_hash,
)


class ResyncNeeded(Exception):
    """The relay can no longer follow the channel; read the state again. ``reason`` says why."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class RelayedMessage(FeedMessage):
    """A FeedMessage that arrived already encoded in one format (those bytes are reused)."""

    __slots__ = ("_data", "_format")

    def __init__(self, channel: str, kind: str, payload: dict, trade_ts: int,
                 fmt: WireFormat, data: bytes) -> None:
        super().__init__(channel, kind, payload, trade_ts)
        self._format = fmt
        self._data = data

    def encoded(self, fmt: WireFormat) -> bytes:
        """The original bytes in their own format; other formats encoded once, on first use."""
        if fmt is self._format:
            return self._data
        return super().encoded(fmt)


class StoredBook(NamedTuple):
    """A book hash as read: update ids per depth, ts, levels (unsorted)."""

    ids: dict[int, int]  # depth -> update id
    ts: int
    bids: list[StoredLevel]
    asks: list[StoredLevel]


class StoredState(NamedTuple):
    """Everything a follower needs, read in one MULTI: the state after batch ``meta.seq``."""

    meta: Meta
    books: dict[str, StoredBook]
    tickers: dict[str, bytes]
    klines: dict[str, dict[str, bytes]]
    #: symbol -> its stored markPrice message (read-only: the default is shared)
    marks: dict[str, bytes] = {}
    #: symbol -> its stored liquidations snapshot message (read-only, shared default)
    liquidations: dict[str, bytes] = {}


def parse_book(fields: dict[bytes, bytes]) -> StoredBook:
    """A book hash parsed (a missing hash is an empty book at update id 0)."""
    ids, bids, asks = parse_book_hash(fields)
    by_depth = {FULL_DEPTH: ids.get(U_FULL, 0)}
    for depth, field in U_DEPTH.items():
        by_depth[depth] = ids.get(field, 0)
    return StoredBook(by_depth, ids.get(TS, 0), bids, asks)


class _Book:
    """One symbol's full book as wire strings, best first, with each channel's update id."""

    __slots__ = ("asks", "bids", "ids")

    def __init__(self, stored: StoredBook) -> None:
        self.bids: SortedDict = SortedDict()  # -price -> (price, qty, count)
        self.asks: SortedDict = SortedDict()  # price -> (price, qty, count)
        self.ids = dict(stored.ids)
        self.apply(stored.bids, stored.asks)

    def apply(self, bids: list, asks: list) -> None:
        for side, levels, sign in ((self.bids, bids, -1), (self.asks, asks, 1)):
            for price, qty, count in levels:
                key = Decimal(price) * sign
                if is_zero_qty(qty):
                    side.pop(key, None)
                else:
                    side[key] = [price, qty, count]

    def levels(self, bids: bool, depth: int = FULL_DEPTH) -> list[list]:
        side = self.bids if bids else self.asks
        values = side.values()
        if depth == FULL_DEPTH or depth >= len(values):
            return list(values)
        return list(values[:depth])

    def checksum(self, depth: int = FULL_DEPTH) -> int:
        n = CHECKSUM_LEVELS if depth == FULL_DEPTH else min(depth, CHECKSUM_LEVELS)
        return book_checksum(self.levels(True, n), self.levels(False, n))


class RelayCore:
    """Feed state of a follower; the FeedCore-shaped source of its FeedHub (pure)."""

    def __init__(self, verify_checksums: bool = True) -> None:
        self.verify_checksums = verify_checksums
        self.symbols: frozenset[str] = frozenset()
        self.epoch: int | None = None
        self.seq = 0
        self.format = WireFormat.MSGPACK
        self.now = 0  # latest ts seen in the relayed messages
        self._books: dict[str, _Book] = {}
        self._tickers: dict[str, FeedMessage] = {}
        self._klines: dict[tuple[str, str], FeedMessage] = {}
        self._statuses: dict[str, FeedMessage] = {}
        self._marks: dict[str, FeedMessage] = {}
        #: symbol -> the latest liquidation steps (snapshot entries), and the snapshot
        #: message built from them until the next step (shared bytes)
        self._liquidations: dict[str, deque[dict]] = {}
        self._liquidation_snapshots: dict[str, FeedMessage] = {}
        self._out: list[FeedMessage] = []
        self._snapshots: dict[str, tuple[int, FeedMessage]] = {}

    @property
    def loaded(self) -> bool:
        """True once a state has been loaded."""
        return self.epoch is not None

    # -- input ---------------------------------------------------------------------------

    def load(self, state: StoredState, resend: Callable[[str], bool] = lambda name: False) -> None:
        """Replace everything with ``state``; queue snapshots for channels ``resend`` names."""
        meta = state.meta
        if meta.version != VERSION:
            raise ValueError(f"Redis holds feed state version {meta.version}, not {VERSION}")
        self.symbols = frozenset(meta.symbols)
        self.epoch, self.seq, self.format = meta.epoch, meta.seq, meta.format
        self._books = {s: _Book(state.books[s]) for s in meta.symbols}
        self.now = max((b.ts for b in state.books.values()), default=0)
        self._tickers = {}
        self._klines = {}
        self._statuses = {}
        self._marks = {}
        self._liquidations = {}
        self._liquidation_snapshots = {}
        self._snapshots = {}
        self._out = []
        for symbol, data in state.tickers.items():
            self._tickers[symbol] = self._relayed(Channel(TICKER, symbol, None).name, TICKER, data)
        for symbol, by_interval in state.klines.items():
            for interval, data in by_interval.items():
                name = Channel(KLINE, symbol, interval).name
                self._klines[(symbol, interval)] = self._relayed(name, KLINE, data)
        for symbol, data in state.marks.items():
            if symbol in self.symbols:
                name = Channel(MARK_PRICE, symbol, None).name
                self._marks[symbol] = self._relayed(name, MARK_PRICE, data)
        for symbol, data in state.liquidations.items():
            if symbol in self.symbols:
                name = Channel(LIQUIDATIONS, symbol, None).name
                stored = self._relayed(name, LIQUIDATIONS, data)
                self._liquidations[symbol] = deque(stored.payload["data"],
                                                   maxlen=RECENT_LIQUIDATIONS)
                self._liquidation_snapshots[symbol] = stored  # the sink's own bytes
        for symbol, data in meta.statuses:
            if symbol in self.symbols:
                name = Channel(STATUS, symbol, None).name
                self._statuses[symbol] = self._relayed(name, STATUS, data)
        for symbol in sorted(self.symbols):
            for channel in self._channels(symbol):
                if resend(channel.name):
                    msg = self.snapshot_message(channel)
                    if msg is not None:
                        self._out.append(msg)

    def accept(self, env: Envelope) -> bool:
        """Apply one envelope; False if the state already had it. Raises ResyncNeeded."""
        if env.version != VERSION:
            raise ResyncNeeded("version", f"envelope version {env.version}")
        if env.epoch != self.epoch:
            raise ResyncNeeded("epoch", f"{env.epoch} != {self.epoch}")
        if env.seq <= self.seq:
            return False
        if env.kind == SYNC:
            raise ResyncNeeded("sync", f"seq {env.seq}")
        if env.seq != self.seq + 1:
            raise ResyncNeeded("gap", f"seq {env.seq} after {self.seq}")
        out: list[FeedMessage] = []
        for channel, kind, data in env.messages:
            msg = self._relayed(channel, kind, data, env.format)
            if kind == ORDERBOOK and not self._apply_book(msg):
                continue
            if kind == TICKER:
                self._tickers[msg.payload["symbol"]] = msg
            elif kind == KLINE:
                self._klines[(msg.payload["symbol"], msg.payload["interval"])] = msg
            elif kind == STATUS:
                self._statuses[msg.payload["symbol"]] = msg
            elif kind == MARK_PRICE:
                self._marks[msg.payload["symbol"]] = msg
            elif kind == LIQUIDATIONS:
                symbol = msg.payload["symbol"]
                steps = self._liquidations.get(symbol)
                if steps is None:  # none stored (a sink older than the channel): start here
                    steps = self._liquidations[symbol] = deque(maxlen=RECENT_LIQUIDATIONS)
                steps.append(entry_of(msg.payload))
                self._liquidation_snapshots.pop(symbol, None)
            ts = msg.payload.get("ts")
            if ts is not None and ts > self.now:
                self.now = ts
            out.append(msg)
        self.seq = env.seq
        self._out.extend(out)
        return True

    def _apply_book(self, msg: FeedMessage) -> bool:
        p = msg.payload
        book = self._books.get(p["symbol"])
        if book is None:
            raise ResyncNeeded("symbol", f"unknown symbol {p['symbol']!r}")
        depth = DEPTH_NAMES[msg.channel.rsplit("@", 1)[1]]
        held = book.ids[depth]
        if p["u"] <= held:
            return False  # the state read already includes it
        if p["pu"] != held:
            raise ResyncNeeded("pu", f"{msg.channel} pu={p['pu']} after u={held}")
        book.ids[depth] = p["u"]
        if depth == FULL_DEPTH:
            book.apply(p["bids"], p["asks"])
        if self.verify_checksums and book.checksum(depth) != p["checksum"]:
            raise ResyncNeeded("checksum", f"{msg.channel} at u={p['u']}")
        return True

    def _relayed(self, channel: str, kind: str, data: bytes,
                 fmt: WireFormat | None = None) -> RelayedMessage:
        fmt = fmt if fmt is not None else self.format
        payload = decode(data, fmt.is_binary)
        trade_ts = payload["data"][0]["ts"] if kind == TRADES and payload["data"] else 0
        return RelayedMessage(channel, kind, payload, trade_ts, fmt, data)

    # -- output (what FeedHub asks of a FeedCore) ------------------------------------------

    def flush(self) -> list[FeedMessage]:
        """The messages accepted (and snapshots queued) since the last flush."""
        out, self._out = self._out, []
        return out

    def apply(self, events: Any) -> None:
        """FeedCore's input; a follower gets no engine events."""
        raise TypeError("a Redis follower takes envelopes (accept), not engine events")

    def book_snapshot(self, symbol: str, depth: int = FULL_DEPTH) -> tuple[int, list, list]:
        """(update id, bids, asks) of a channel's book, wire strings, best first."""
        book = self._books[symbol]
        return book.ids[depth], book.levels(True, depth), book.levels(False, depth)

    def snapshot_message(self, channel: Channel) -> FeedMessage | None:
        """What a new subscriber of ``channel`` gets first (None for trades, no candle, or
        no status, mark or liquidations stored: a sink older than that channel)."""
        symbol = channel.symbol
        if channel.kind == ORDERBOOK:
            depth: int = channel.param  # type: ignore[assignment]
            book = self._books[symbol]
            u = book.ids[depth]
            name = channel.name
            cached = self._snapshots.get(name)
            if cached is not None and cached[0] == u:
                return cached[1]
            msg = FeedMessage(name, ORDERBOOK, {
                "channel": name, "type": "snapshot", "symbol": symbol, "u": u, "ts": self.now,
                "bids": book.levels(True, depth), "asks": book.levels(False, depth),
                "checksum": book.checksum(depth),
            })
            self._snapshots[name] = (u, msg)
            return msg
        if channel.kind == TICKER:
            return self._tickers.get(symbol)
        if channel.kind == STATUS:
            return self._statuses.get(symbol)
        if channel.kind == MARK_PRICE:
            return self._marks.get(symbol)
        if channel.kind == LIQUIDATIONS:
            snap = self._liquidation_snapshots.get(symbol)
            steps = self._liquidations.get(symbol)
            if snap is None and steps is not None:
                name = channel.name
                snap = FeedMessage(name, LIQUIDATIONS, snapshot_payload(name, symbol, steps))
                self._liquidation_snapshots[symbol] = snap
            return snap
        if channel.kind == KLINE:
            last = self._klines.get((symbol, channel.param))  # type: ignore[arg-type]
            if last is None or len(last.payload["data"]) <= 1:
                return last
            payload = dict(last.payload)
            payload["data"] = payload["data"][-1:]  # the current candle only
            return FeedMessage(last.channel, KLINE, payload)
        return None

    @staticmethod
    def _channels(symbol: str) -> list[Channel]:
        chans = [Channel(ORDERBOOK, symbol, d) for d in BOOK_DEPTHS]
        chans.append(Channel(TICKER, symbol, None))
        chans.append(Channel(STATUS, symbol, None))
        chans.append(Channel(MARK_PRICE, symbol, None))
        chans.append(Channel(LIQUIDATIONS, symbol, None))
        chans.extend(Channel(KLINE, symbol, i) for i in INTERVALS)
        return chans

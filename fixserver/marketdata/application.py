"""MarketDataApplication: FIX market data (V -> W/X/Y), the security list (x -> y) and
instrument trading status (e -> f, :mod:`fixserver.marketdata.status`).

Theory of operation
-------------------
The FIX market data is one more consumer of the feed hub's batches (a ``FeedSink``), beside
the WebSocket subscribers and Redis: the same L2 books, the same batches and the same
exchange-wide update ids (engine command seqs), so a FIX client, a WebSocket client and the
Redis snapshot agree on what book state an id names.

A MarketDataRequest for snapshot plus updates is answered at once with one W per symbol,
taken from the hub's *published* book (the state the last batch described), and registers a
*stream* per symbol. Every later batch then carries exactly the changes since that snapshot,
so the client's book after each X equals the exchange's book at the X's update id.

Streams are grouped by *shape*: (depth, entry types). For each batch the application keeps,
per book channel (symbol, depth) that has subscribers, the prices its subscribers hold, to
tell a new level (MDUpdateAction 0) from a changed one (1) and a deleted one (2) once for all
of them; then it builds and encodes each shape's NoMDEntries group once
(:func:`~fixserver.marketdata.messages.packed_group`) and sends it to every stream of that
shape, after the stream's own MDReqID (the only per-subscriber field).

Sending from a batch happens outside a socket pump, so ``flush`` is called for each session
written to. Subscriptions end with an unsubscribe (263=2), at logout (:meth:`on_logout`), or
when a batch finds the session no longer logged on.

Trading status is not batched: the application holds each instrument's *released* status
(:meth:`on_released`), reports it in the SecurityList and in the SecurityStatus answering a
SecurityStatusRequest, and pushes a SecurityStatus to the status subscribers of a symbol from
the released tick that changes it (flushing those sessions, as a batch does).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from engine.commands import ConfigureInstrument, SetInstrumentStatus
from engine.enums import InstrumentStatus
from engine.events import InstrumentConfigured, InstrumentStatusChanged
from engine.instruments import Instrument
from feeds.channels import ORDERBOOK, TRADES, Channel
from fixserver.admin_messages import business_reject_fields
from fixserver.codec import FixMessage
from fixserver.marketdata import messages as m
from fixserver.marketdata.requests import (
    BID,
    DUPLICATE_MD_REQ_ID,
    INSUFFICIENT_BANDWIDTH,
    INSUFFICIENT_PERMISSIONS,
    MARKET_DEPTHS,
    OFFER,
    SNAPSHOT_AND_UPDATES,
    TRADE,
    VALID_REQUEST,
    MarketDataRequest,
    Refused,
    Unsubscribe,
    parse_market_data_request,
    parse_security_list_request,
)
from fixserver.marketdata.status import (
    NOT_AUTHORIZED,
    OTHER,
    UNKNOWN_ID,
    StatusRefused,
    StatusRequest,
    StatusSubscriptions,
    StatusUnsubscribe,
    parse_security_status_request,
    security_status_fields,
    status_reject_fields,
)
from fixserver.settings import SessionRole

Shape = tuple[Any, frozenset]  # (depth, or None for trades only; entry types)


class _Stream:
    """One symbol of one MarketDataRequest of one session."""

    __slots__ = ("md_req_id", "req_id", "session", "shape", "symbol")

    def __init__(self, session: Any, md_req_id: str, symbol: str, shape: Shape) -> None:
        self.session = session
        self.md_req_id = md_req_id
        self.req_id = md_req_id.encode("latin-1")
        self.symbol = symbol
        self.shape = shape


class _BookChannel:
    """A feed book channel (symbol, depth) as its FIX subscribers hold it: prices per side."""

    __slots__ = ("bids", "last_id", "offers", "symbol", "zero")

    def __init__(self, fmt: m.InstrumentFormat, update_id: int, bids: Iterable[bytes],
                 offers: Iterable[bytes]) -> None:
        self.symbol = fmt.symbol
        self.zero = fmt.qty(0)  # how the feed spells a removed level's quantity
        self.last_id = update_id
        self.bids = set(bids)
        self.offers = set(offers)

    def apply(self, payload: dict) -> tuple[list, list] | None:
        """X entries (bids, offers) of one feed update; None if it does not chain on."""
        if payload["pu"] != self.last_id:
            return None
        self.last_id = payload["u"]
        seq = b"%d" % self.last_id
        return (self._side(payload["bids"], self.bids, m.BID, seq),
                self._side(payload["asks"], self.offers, m.OFFER, seq))

    def _side(self, levels: list, held: set, entry_type: bytes, seq: bytes) -> list:
        entries = []
        symbol, zero = self.symbol, self.zero
        for price, qty, count in levels:
            px = price.encode()
            if qty == zero:
                if px not in held:
                    continue  # came and went within the batch: the client never saw it
                held.discard(px)
                entries.append(m.level_entry(m.DELETE, entry_type, symbol, px, b"", b"", seq))
                continue
            if px in held:
                action = m.CHANGE
            else:
                held.add(px)
                action = m.NEW
            entries.append(m.level_entry(action, entry_type, symbol, px, qty.encode(),
                                         b"%d" % count, seq))
        return entries


class MarketDataApplication:
    """See the module docstring. ``hub`` is a ``feeds.hub.FeedHub`` (or anything with
    ``book_snapshot(symbol, depth)``); register the application as its sink."""

    def __init__(
        self,
        instruments: Iterable[Instrument],
        hub: Any,
        *,
        now_ns: Callable[[], int],
        flush: Callable[[Any], None] = lambda session: None,
        max_streams_per_session: int = 100,
    ) -> None:
        self.instruments = {i.symbol: i for i in instruments}
        self.hub = hub
        self.now_ns = now_ns
        self.flush = flush
        self.max_streams_per_session = max_streams_per_session
        self.statuses = {s: i.status for s, i in self.instruments.items()}
        self._formats = {s: m.InstrumentFormat(i) for s, i in self.instruments.items()}
        self._book_names = {
            Channel(ORDERBOOK, s, d).name: (s, d) for s in self.instruments for d in MARKET_DEPTHS
        }
        self._trade_names = {Channel(TRADES, s, None).name: s for s in self.instruments}
        #: symbol -> shape -> streams (dicts as insertion-ordered sets)
        self._streams: dict[str, dict[Shape, dict[_Stream, None]]] = {}
        #: session -> MDReqID -> its streams
        self._by_session: dict[Any, dict[str, list[_Stream]]] = {}
        self._channels: dict[tuple[str, int], _BookChannel] = {}
        self._responses = 0
        #: who is pushed a SecurityStatus when a symbol's status changes
        self.status_subscriptions = StatusSubscriptions()

    # -- inbound --------------------------------------------------------------------------

    def handles(self, msg_type: bytes) -> bool:
        """True for the message types this application answers (V, x and e)."""
        return msg_type == b"V" or msg_type == b"x" or msg_type == b"e"

    def on_message(self, session: Any, msg: FixMessage, now_ns: int) -> None:
        """A validated MarketDataRequest, SecurityListRequest or SecurityStatusRequest of a
        logged-on session."""
        if msg.msg_type == b"V":
            self._market_data_request(session, msg, now_ns)
        elif msg.msg_type == b"x":
            self._security_list(session, msg, now_ns)
        elif msg.msg_type == b"e":
            self._security_status_request(session, msg, now_ns)
        else:
            session.send("j", business_reject_fields(msg), now_ns, reply_to=msg)

    def _market_data_request(self, session: Any, msg: FixMessage, now_ns: int) -> None:
        request = parse_market_data_request(msg, self.instruments)
        if session.settings.role is not SessionRole.MARKET_DATA:
            request = Refused(request.md_req_id, INSUFFICIENT_PERMISSIONS,
                              f"market data is served on market-data sessions only, not on a "
                              f"{session.settings.role.value} session")
        elif isinstance(request, Unsubscribe):
            if self._remove(session, request.md_req_id):
                return
            request = Refused(request.md_req_id, None,
                              f"no subscription with MDReqID {request.md_req_id} to end")
        elif isinstance(request, MarketDataRequest):
            held = self._by_session.get(session, {})
            if request.md_req_id in held:
                request = Refused(request.md_req_id, DUPLICATE_MD_REQ_ID,
                                  f"MDReqID {request.md_req_id} is already subscribed")
            elif (request.subscription_type == SNAPSHOT_AND_UPDATES
                  and self._subscriptions_of(session) + len(request.symbols)
                  > self.max_streams_per_session):
                request = Refused(request.md_req_id, INSUFFICIENT_BANDWIDTH,
                                  f"at most {self.max_streams_per_session} symbol "
                                  "subscriptions per session")
        if isinstance(request, Refused):
            session.send("Y", m.reject_fields(request.md_req_id, request.reason, request.text),
                         now_ns, reply_to=msg)
            return
        assert isinstance(request, MarketDataRequest)
        self._serve(session, request, msg, now_ns)

    def _serve(self, session: Any, request: MarketDataRequest, msg: FixMessage,
               now_ns: int) -> None:
        types = request.entry_types
        book = BID in types or OFFER in types
        shape: Shape = (request.depth if book else None, types)
        subscribe = request.subscription_type == SNAPSHOT_AND_UPDATES
        streams: list[_Stream] = []
        for symbol in request.symbols:
            fmt = self._formats[symbol]
            bids: list = []
            offers: list = []
            update_id = 0
            if book:
                snap = self.hub.book_snapshot(symbol, request.depth)
                update_id = snap.update_id
                bids, offers = fmt.levels(snap.bids), fmt.levels(snap.asks)
                if subscribe and (symbol, request.depth) not in self._channels:
                    self._channels[(symbol, request.depth)] = _BookChannel(
                        fmt, update_id, (b[0] for b in bids), (o[0] for o in offers))
            fields = m.snapshot_fields(request.md_req_id, fmt.symbol, update_id,
                                       bids if BID in types else (),
                                       offers if OFFER in types else ())
            session.send("W", fields, now_ns, reply_to=msg)
            if subscribe:
                stream = _Stream(session, request.md_req_id, symbol, shape)
                self._streams.setdefault(symbol, {}).setdefault(shape, {})[stream] = None
                streams.append(stream)
        if subscribe:
            self._by_session.setdefault(session, {})[request.md_req_id] = streams

    def _security_list(self, session: Any, msg: FixMessage, now_ns: int) -> None:
        query = parse_security_list_request(msg, self.instruments)
        entries = []
        if query.result == VALID_REQUEST:
            chosen = [query.symbol] if query.symbol is not None else list(self.instruments)
            entries = [m.security_entry(self.instruments[s], self.statuses[s]) for s in chosen]
        self._responses += 1
        response_id = f"{now_ns}-{self._responses}"
        fields = m.security_list_fields(query.security_req_id, response_id, query.result, entries)
        session.send("y", fields, now_ns, reply_to=msg)

    def _security_status_request(self, session: Any, msg: FixMessage, now_ns: int) -> None:
        request = parse_security_status_request(msg, self.instruments)
        subs = self.status_subscriptions
        if session.settings.role is not SessionRole.MARKET_DATA:
            request = StatusRefused(request.req_id, NOT_AUTHORIZED,
                                    f"security status is served on market-data sessions only, "
                                    f"not on a {session.settings.role.value} session")
        elif isinstance(request, StatusUnsubscribe):
            if subs.remove(session, request.req_id):
                return
            request = StatusRefused(request.req_id, UNKNOWN_ID, f"no subscription with "
                                    f"SecurityStatusReqID {request.req_id} to end")
        elif isinstance(request, StatusRequest) and request.subscribe:
            if subs.holds(session, request.req_id):
                request = StatusRefused(request.req_id, OTHER, f"SecurityStatusReqID "
                                        f"{request.req_id} is already subscribed")
            elif self._subscriptions_of(session) + 1 > self.max_streams_per_session:
                request = StatusRefused(request.req_id, OTHER,
                                        f"at most {self.max_streams_per_session} symbol "
                                        "subscriptions per session")
        if isinstance(request, StatusRefused):
            session.send("j", status_reject_fields(msg, request), now_ns, reply_to=msg)
            return
        assert isinstance(request, StatusRequest)
        symbol = request.symbol
        fields = security_status_fields(request.req_id.encode("latin-1"),
                                        self._formats[symbol].symbol, self.statuses[symbol])
        session.send("f", fields, now_ns, reply_to=msg)
        if request.subscribe:
            subs.add(session, request.req_id, symbol)

    # -- subscriptions ----------------------------------------------------------------------

    def _subscriptions_of(self, session: Any) -> int:
        """Symbol subscriptions a session holds, market data and status (the limit's count)."""
        held = self._by_session.get(session, {})
        return sum(map(len, held.values())) + self.status_subscriptions.count(session)

    def _remove(self, session: Any, md_req_id: str) -> bool:
        held = self._by_session.get(session)
        if held is None or md_req_id not in held:
            return False
        for stream in held.pop(md_req_id):
            self._drop_stream(stream)
        if not held:
            del self._by_session[session]
        return True

    def _drop_stream(self, stream: _Stream) -> None:
        by_shape = self._streams[stream.symbol]
        streams = by_shape[stream.shape]
        del streams[stream]
        if streams:
            return
        del by_shape[stream.shape]
        depth = stream.shape[0]
        if depth is not None and not any(s[0] == depth for s in by_shape):
            del self._channels[(stream.symbol, depth)]
        if not by_shape:
            del self._streams[stream.symbol]

    def on_logout(self, session: Any, now_ns: int = 0) -> None:
        """The session's connection ended: its subscriptions end with it."""
        for md_req_id in list(self._by_session.get(session, ())):
            self._remove(session, md_req_id)
        self.status_subscriptions.remove_session(session)

    def subscription_count(self, session: Any | None = None) -> int:
        """Active symbol streams (of one session, or of all)."""
        if session is not None:
            return sum(map(len, self._by_session.get(session, {}).values()))
        return sum(len(s) for by_shape in self._streams.values() for s in by_shape.values())

    # -- released state ---------------------------------------------------------------------

    def list_instrument(self, instrument: Instrument) -> None:
        """An instrument listed (or its rules changed) while running: in SecurityList, and
        its market data can be requested, from now on."""
        s = instrument.symbol
        new = s not in self.instruments
        self.instruments[s] = instrument
        self._formats[s] = m.InstrumentFormat(instrument)
        if new:
            self.statuses[s] = instrument.status
            for d in MARKET_DEPTHS:
                self._book_names[Channel(ORDERBOOK, s, d).name] = (s, d)
            self._trade_names[Channel(TRADES, s, None).name] = s

    def on_released(self, processed: list) -> None:
        """Durable ticks (the pipeline's subscriber): instruments listed, and instrument
        status changes, held and pushed to the symbol's status subscribers."""
        touched: dict[Any, None] = {}
        for p in processed:
            if type(p.command) is ConfigureInstrument:
                for event in p.events:
                    if type(event) is InstrumentConfigured:
                        self.list_instrument(event.instrument)
            elif type(p.command) is SetInstrumentStatus:
                for event in p.events:
                    if type(event) is InstrumentStatusChanged:
                        self._status_changed(event, touched)
        for session in touched:
            self.flush(session)

    def _status_changed(self, event: InstrumentStatusChanged, touched: dict[Any, None]) -> None:
        status = InstrumentStatus(event.status)
        symbol = event.symbol
        if symbol not in self.statuses or self.statuses[symbol] == status:
            return
        self.statuses[symbol] = status
        subscribers = self.status_subscriptions.subscribers(symbol)
        if not subscribers:
            return
        now = self.now_ns()
        wire_symbol = self._formats[symbol].symbol
        for session, req_id in subscribers:
            if session.connection is None:
                self.on_logout(session, now)
                continue
            session.send("f", security_status_fields(req_id, wire_symbol, status, event.ts), now)
            touched[session] = None

    # -- batches ------------------------------------------------------------------------------

    def on_batch(self, messages: list) -> None:
        """One feed batch (``FeedSink``): an X per symbol and shape to every stream."""
        if not self._streams:
            return
        updates: dict[tuple[str, int], tuple[list, list]] = {}
        trades: dict[str, list] = {}
        resync: list[tuple[str, int]] = []
        for message in messages:
            key = self._book_names.get(message.channel)
            if key is not None:
                channel = self._channels.get(key)
                if channel is not None:
                    changes = channel.apply(message.payload)
                    if changes is None:
                        resync.append(key)
                    else:
                        updates[key] = changes
                continue
            symbol = self._trade_names.get(message.channel)
            if symbol is not None and symbol in self._streams:
                sym = self._formats[symbol].symbol
                trades[symbol] = [
                    m.trade_entry(sym, t["id"], t["price"].encode(), t["qty"].encode(), t["ts"],
                                  t["u"])
                    for t in message.payload["data"]
                ]
        now = self.now_ns()
        touched: dict[Any, None] = {}
        gone: dict[Any, None] = {}
        for symbol in {k[0] for k in updates} | trades.keys():
            for shape, streams in self._streams[symbol].items():
                depth, types = shape
                entries: list = []
                if TRADE in types:
                    entries += trades.get(symbol, ())
                book = updates.get((symbol, depth)) if depth is not None else None
                if book is not None:
                    if BID in types:
                        entries += book[0]
                    if OFFER in types:
                        entries += book[1]
                if not entries:
                    continue
                group = m.packed_group(268, entries)
                for stream in streams:
                    session = stream.session
                    if session.connection is None:
                        gone[session] = None
                        continue
                    session.send("X", [(262, stream.req_id), group], now)
                    touched[session] = None
        for key in resync:
            self._resync(key, now, touched)
        for session in gone:
            self.on_logout(session, now)
        for session in touched:
            self.flush(session)

    def _resync(self, key: tuple[str, int], now: int, touched: dict[Any, None]) -> None:
        """A book update that does not chain on (the hub's book was reseeded): start the
        channel again from the published book and send its subscribers a fresh W."""
        symbol, depth = key
        fmt = self._formats[symbol]
        snap = self.hub.book_snapshot(symbol, depth)
        bids, offers = fmt.levels(snap.bids), fmt.levels(snap.asks)
        self._channels[key] = _BookChannel(fmt, snap.update_id,
                                           (b[0] for b in bids), (o[0] for o in offers))
        for (d, types), streams in self._streams[symbol].items():
            if d != depth:
                continue
            for stream in streams:
                fields = m.snapshot_fields(stream.md_req_id, fmt.symbol, snap.update_id,
                                           bids if BID in types else (),
                                           offers if OFFER in types else ())
                stream.session.send("W", fields, now)
                touched[stream.session] = None


def build_market_data_application(
    instruments: Iterable[Instrument],
    md_state: Any,
    *,
    now_ns: Callable[[], int],
    flush: Callable[[Any], None] = lambda session: None,
    status_of: Callable[[str], InstrumentStatus] | None = None,
    max_streams_per_session: int = 100,
) -> MarketDataApplication:
    """The FIX market-data application, registered as a sink of the feed hub ``md_state``.

    ``status_of`` (e.g. the recovered engine's ``status``) gives each instrument's trading
    status at start; later changes arrive through :meth:`MarketDataApplication.on_released`.
    """
    app = MarketDataApplication(instruments, md_state, now_ns=now_ns, flush=flush,
                                max_streams_per_session=max_streams_per_session)
    if status_of is not None:
        for symbol in app.statuses:
            app.statuses[symbol] = InstrumentStatus(status_of(symbol))
    md_state.add_sink(app)
    return app

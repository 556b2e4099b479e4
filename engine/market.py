"""Per-instrument state held by the matcher: book, status, last price, positions, stops.

Theory of operation
-------------------
``positions`` is the signed position (lots) of each account, kept from the engine's own
fills or set by a SetPosition command. ``reduce_only`` indexes the *resting* reduce-only
orders of each account (order id -> Order, in id order) so that, after any fill or position
change of that account, they can be shrunk or canceled in a deterministic order.

Untriggered stop and take-profit orders wait in two sorted lists of ``(trigger, order id)``:
``stops_up`` trigger when the last trade price rises to or above the trigger (buy stops,
sell take-profits) and ``stops_down`` when it falls to or below it (sell stops, buy
take-profits). :meth:`Market.next_triggered` returns the lowest order id among those whose
condition holds, so cascades trigger in arrival order.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort

from engine.book import Book
from engine.enums import InstrumentStatus, OrdType, Side
from engine.instruments import PPM, Instrument
from engine.order import Order

_UP_TYPES = {(OrdType.STOP, Side.BUY), (OrdType.STOP_LIMIT, Side.BUY),
             (OrdType.TAKE_PROFIT, Side.SELL), (OrdType.TAKE_PROFIT_LIMIT, Side.SELL)}
_BIG = 1 << 62


def triggers_up(ord_type: OrdType, side: Side) -> bool:
    """True if the order triggers when the last price rises to its trigger."""
    return (ord_type, side) in _UP_TYPES


class Market:
    """Mutable state of one instrument (see module docstring)."""

    __slots__ = (
        "_band_hi",
        "_band_lo",
        "_band_ref",
        "book",
        "instrument",
        "last_price",
        "mark_price",
        "mstops_down",
        "mstops_up",
        "positions",
        "reduce_only",
        "status",
        "stops_down",
        "stops_up",
        "symbol",
    )
    instrument: Instrument
    symbol: str
    book: Book
    status: InstrumentStatus
    last_price: int
    mark_price: int
    mstops_up: list[tuple[int, int]]
    mstops_down: list[tuple[int, int]]
    positions: dict[str, int]
    reduce_only: dict[str, dict[int, Order]]
    stops_up: list[tuple[int, int]]
    stops_down: list[tuple[int, int]]
    _band_ref: int
    _band_lo: int
    _band_hi: int

    def __init__(self, instrument: Instrument, book: Book) -> None:
        self.instrument = instrument
        self.symbol = instrument.symbol
        self.book = book
        self.status = instrument.status
        self.last_price = 0
        self.mark_price = 0
        self.mstops_up = []
        self.mstops_down = []
        self.positions = {}
        self.reduce_only = {}
        self.stops_up = []
        self.stops_down = []
        self._band_ref = -1
        self._band_lo = 0
        self._band_hi = _BIG

    # -- price band -----------------------------------------------------------------------

    def reference_price(self) -> int:
        """Last trade price, else the mid (floor) of a two-sided book, else the configured one."""
        if self.last_price:
            return self.last_price
        book = self.book
        bb = book.best_bid
        if bb:
            ba = book.best_ask
            if ba != _BIG:
                return (bb + ba) // 2
        return self.instrument.reference_price

    def reset_band(self) -> None:
        """Forget the cached band (the instrument's band or reference price changed)."""
        self._band_ref = -1

    def band(self) -> tuple[int, int]:
        """(lowest, highest) price allowed now; (0, huge) when there is no reference."""
        ref = self.last_price
        if not ref:
            ref = self.reference_price()
        if ref != self._band_ref:
            self._band_ref = ref
            if ref:
                b = self.instrument.price_band_ppm
                self._band_lo = -((-ref * (PPM - b)) // PPM)  # ceil
                self._band_hi = ref * (PPM + b) // PPM
            else:
                self._band_lo, self._band_hi = 0, _BIG
        return self._band_lo, self._band_hi

    # -- stops ----------------------------------------------------------------------------

    def _stop_list(self, o: Order) -> list[tuple[int, int]]:
        spec = o.spec
        up = triggers_up(spec.ord_type, o.side)
        if spec.trigger_mark:
            return self.mstops_up if up else self.mstops_down
        return self.stops_up if up else self.stops_down

    def has_stops(self) -> bool:
        """True if any untriggered order waits here."""
        return bool(self.stops_up or self.stops_down or self.mstops_up or self.mstops_down)

    def trigger_lists(self) -> tuple[list[tuple[int, int]], ...]:
        """The four trigger indexes (last up/down, mark up/down)."""
        return self.stops_up, self.stops_down, self.mstops_up, self.mstops_down

    def add_stop(self, o: Order) -> None:
        """Index an untriggered stop/take-profit order."""
        insort(self._stop_list(o), (o.spec.stop_price, o.id))

    def remove_stop(self, o: Order) -> None:
        """Remove an untriggered order from the trigger index."""
        spec = o.spec
        lst = self._stop_list(o)
        key = (spec.stop_price, o.id)
        i = bisect_left(lst, key)
        if i < len(lst) and lst[i] == key:
            del lst[i]
        else:  # pragma: no cover - an index bug
            raise KeyError(key)

    def next_triggered(self) -> int:
        """Lowest order id whose trigger condition holds at the last (or, for mark-triggered
        orders, the mark) price; 0 if none."""
        if self.status is InstrumentStatus.HALTED or (
            self.status is InstrumentStatus.CANCEL_ONLY
        ):
            return 0
        best = _first_triggered(self.stops_up, self.stops_down, self.last_price, 0)
        if self.mark_price and (self.mstops_up or self.mstops_down):
            best = _first_triggered(self.mstops_up, self.mstops_down, self.mark_price, best)
        return best

    # -- reduce-only index ----------------------------------------------------------------

    def index_reduce_only(self, o: Order) -> None:
        """Track a resting reduce-only order."""
        d = self.reduce_only.get(o.account)
        if d is None:
            d = self.reduce_only[o.account] = {}
        d[o.id] = o

    def unindex_reduce_only(self, o: Order) -> None:
        """Forget a reduce-only order (no-op if not indexed)."""
        d = self.reduce_only.get(o.account)
        if d is not None and d.pop(o.id, None) is not None and not d:
            del self.reduce_only[o.account]


def _first_triggered(up: list, down: list, price: int, best: int) -> int:
    """Lowest order id in ``up`` with trigger <= price or ``down`` with trigger >= price,
    or ``best`` if that is lower."""
    if not price:
        return best
    if up and up[0][0] <= price:
        for _, oid in up[: bisect_right(up, (price, _BIG))]:
            if not best or oid < best:
                best = oid
    if down and down[-1][0] >= price:
        for _, oid in down[bisect_left(down, (price, 0)) :]:
            if not best or oid < best:
                best = oid
    return best

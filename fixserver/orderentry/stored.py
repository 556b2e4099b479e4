"""The seam to the store of orders the ledger no longer holds (Postgres), for status requests.

Theory of operation
-------------------
The ledger keeps a bounded number of ended orders (:meth:`OrderLedger.evict_ended`); a status
request (H) for an older one, still inside the retention window, is answered from the
``orders`` table. :class:`StatusStore` is what the application needs of that store: one
call, :meth:`StatusStore.lookup`, that returns at once and later calls ``done`` exactly once,
on the reactor thread, with the order found, None, or an error text (the store is down or
slow: the implementation bounds the wait). ``fixserver.pg.order_reader`` implements it over
Postgres; tests use in-memory fakes.

The store answers in the table's terms (:class:`StoredOrder`: decimal prices and quantities,
enum names); :func:`view_of` turns a row into the :class:`OrderView` the report builder
formats, with the instrument's tick and lot size. Pure: no I/O, no clock.
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple, Protocol

from engine.enums import OrdType, Side, TimeInForce
from engine.instruments import Instrument
from fixserver.orderentry.ownership import CANCELED, EXPIRED, FILLED, OrderView

#: ``orders.status`` of an ended order -> OrdStatus (39); other statuses are not final
FINAL_STATUS = {"FILLED": FILLED, "CANCELED": CANCELED, "EXPIRED": EXPIRED}


class StatusQuery(NamedTuple):
    """What a status request asks the store: the order the session's ClOrdID names (current
    or the one before the last replace), else the order with the OrderID, that was last
    updated at or after ``since_ns`` (the start of the retention window)."""

    session_id: str
    cl_ord_id: str  # "" = not by ClOrdID
    order_id: int | None  # None = not by OrderID
    since_ns: int


class StoredOrder(NamedTuple):
    """One ``orders`` row as the store has it (decimals and enum names)."""

    order_id: int
    session_id: str | None
    cl_ord_id: str | None
    orig_cl_ord_id: str | None
    account: str
    symbol: str
    side: str | None
    ord_type: str | None
    time_in_force: str | None
    price: Decimal | None
    stop_price: Decimal | None
    quantity: Decimal | None
    filled_qty: Decimal
    leaves_qty: Decimal
    avg_price: Decimal | None
    status: str


class LookupDone(Protocol):
    """``done(order, error)``: the order found or None; ``error`` a text when the store
    failed (then ``order`` is None)."""

    def __call__(self, order: StoredOrder | None, error: str | None, /) -> None: ...


class StatusStore(Protocol):
    """Where status requests find the ended orders the ledger no longer holds."""

    def lookup(self, query: StatusQuery, done: LookupDone) -> None:
        """Start a lookup; ``done`` is called once, on the reactor thread (possibly before
        this returns), after a bounded time at most."""


def _units(value: Decimal | None, unit: str) -> int:
    if value is None:
        return 0
    return int((value / Decimal(unit)).to_integral_value())


def view_of(row: StoredOrder, inst: Instrument) -> OrderView | None:
    """The view of an ended order's row (None: the row is not of an ended order, or lacks
    what a report needs)."""
    status = FINAL_STATUS.get(row.status)
    if status is None or row.side is None or row.ord_type is None:
        return None
    try:
        side, ord_type = Side[row.side], OrdType[row.ord_type]
        tif = TimeInForce[row.time_in_force] if row.time_in_force else TimeInForce.GTC
    except KeyError:
        return None
    filled = _units(row.filled_qty, inst.lot_size)
    view = OrderView(row.order_id, row.session_id or "", row.account, row.symbol, side,
                     ord_type, tif, _units(row.price, inst.tick_size),
                     _units(row.stop_price, inst.tick_size), _units(row.quantity, inst.lot_size),
                     row.cl_ord_id or "")
    view.filled = filled
    view.leaves = _units(row.leaves_qty, inst.lot_size)
    # avg_price = notional / filled * tick (fixserver.pg.rows.Scale.avg), 28 digits exact
    view.notional = (int((row.avg_price / Decimal(inst.tick_size) * filled).to_integral_value())
                     if row.avg_price is not None and filled else 0)
    view.orig_cl_ord_id = row.orig_cl_ord_id or ""
    view.status = status
    return view

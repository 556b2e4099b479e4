"""OrderStatusRequest (H) and OrderMassStatusRequest (AF): answered at once from the ledger
(released, durable state) with ExecutionReports of ExecType I (order status).

H: the order named by ClOrdID (11, any ClOrdID the session gave it) or OrderID (37, an
order of the session's firm). Unknown: one ExecutionReport 150=I 39=8 OrdRejReason 5.
An ended order the ledger no longer holds (beyond the count bound of ended orders kept in
memory) is read from the status store (Postgres, :mod:`fixserver.orderentry.stored`) when
one is configured: the request holds its session's lane meanwhile
(:meth:`OrderEntryApplication.read_status`), and :func:`stored_status` answers when the read
completes; the store down or slow gives the unknown answer with a Text saying so.

AF: MassStatusReqType 7 (all orders), 1 (one Symbol, 55 required) or 8 (one Account, 1
required), over the live orders of the session's firm. One ExecutionReport per order with
MassStatusReqID (584) and TotNumReports (911); the last has LastRptRequested 912=Y. With no
matching order, a single report 150=I 39=8 with OrderID NONE, 911=0, 912=Y and a Text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fixserver.admin_messages import business_reject_fields
from fixserver.codec import FixMessage
from fixserver.orderentry.reports import order_fields
from fixserver.orderentry.stored import StatusQuery, StoredOrder, view_of
from fixserver.orderentry.translate import (
    BIZ_CONDITIONAL_MISSING,
    BIZ_UNSUPPORTED,
    REJ_UNKNOWN_ORDER,
)
from fixserver.timeutil import format_utc_timestamp

if TYPE_CHECKING:
    from fixserver.orderentry.application import OrderEntryApplication


def _s(msg: FixMessage, tag: int) -> str:
    return (msg.get(tag) or b"").decode("latin-1")


#: Text of the unknown answer when the status store could not be read
STORE_UNAVAILABLE = "unknown order: the order status store is unavailable, try again later"


def order_status(app: OrderEntryApplication, session: Any, msg: FixMessage, now_ns: int) -> None:
    sid = session.settings.session_id
    cl_ord_id = _s(msg, 11)
    view = app.ledger.find(sid, cl_ord_id)
    if view is None:
        order_id = _s(msg, 37)
        oid = int(order_id) if order_id.isdigit() else None
        if app.status_store is not None and (
                cl_ord_id or (oid is not None and oid not in app.ledger.orders)):
            # not in memory by ClOrdID: an older order may be in the store (by ClOrdID, else
            # by an OrderID the ledger does not hold); the answer comes when the read does
            app.read_status(session, msg, StatusQuery(
                sid, cl_ord_id, oid if oid not in app.ledger.orders else None,
                app.retention_start_ns(now_ns)))
            return
        view = _by_order_id(app, session, oid)
    _answer(app, session, msg, view, now_ns)


def stored_status(app: OrderEntryApplication, session: Any, msg: FixMessage,
                  row: StoredOrder | None, error: str | None, now_ns: int) -> tuple:
    """The answer to a status request read from the store: (session, MsgType, fields,
    reply_to), as :meth:`OrderEntryApplication.reply` takes it."""
    sid = session.settings.session_id
    cl_ord_id = _s(msg, 11)
    view = None
    if row is not None:
        inst = app.instruments.get(row.symbol)
        by_cl = (row.session_id == sid and cl_ord_id != ""
                 and cl_ord_id in (row.cl_ord_id, row.orig_cl_ord_id))
        if inst is not None and (by_cl or app.directory.may_trade(session.settings.firm,
                                                                   row.account)):
            view = view_of(row, inst)
    if view is None:  # the ledger still answers by OrderID (only ClOrdID was read)
        order_id = _s(msg, 37)
        view = _by_order_id(app, session, int(order_id) if order_id.isdigit() else None)
    return _fields(app, session, msg, view, now_ns,
                   STORE_UNAVAILABLE if view is None and error is not None else "unknown order")


def _by_order_id(app: OrderEntryApplication, session: Any, oid: int | None) -> Any:
    """The ledger's order with this OrderID if it is the session's firm's, else None."""
    if oid is None:
        return None
    candidate = app.ledger.orders.get(oid)
    if candidate is not None and app.directory.may_trade(session.settings.firm,
                                                         candidate.account):
        return candidate
    return None


def _answer(app: OrderEntryApplication, session: Any, msg: FixMessage, view: Any,
            now_ns: int) -> None:
    _, msg_type, fields, reply_to = _fields(app, session, msg, view, now_ns, "unknown order")
    app.reply(session, msg_type, fields, now_ns, reply_to=reply_to)


def _fields(app: OrderEntryApplication, session: Any, msg: FixMessage, view: Any, now_ns: int,
            unknown_text: str) -> tuple:
    extra: list = []
    if msg.get(790):
        extra.append((790, msg.get(790)))
    if view is None:
        fields: list = [(37, _s(msg, 37) or "NONE"), (11, _s(msg, 11) or "NONE"),
                        (17, app.exec_ids.next("S", now_ns)), (150, "I"), (39, "8"),
                        (103, REJ_UNKNOWN_ORDER), *extra, (55, _s(msg, 55) or "[N/A]"),
                        (54, _s(msg, 54) or "1"), (151, "0"), (14, "0"), (6, "0"),
                        (60, format_utc_timestamp(now_ns)), (58, unknown_text)]
        return session, "8", fields, msg
    inst = app.instruments[view.symbol]
    fields = order_fields(view, inst, exec_id=app.exec_ids.next("S", now_ns), exec_type="I",
                          ord_status=view.status, ts=now_ns)
    return session, "8", fields + extra, msg


def mass_status(app: OrderEntryApplication, session: Any, msg: FixMessage, now_ns: int) -> None:
    req_id = _s(msg, 584)
    req_type = _s(msg, 585)
    accounts = app.directory.accounts_of(session.settings.firm)
    symbol = None
    if req_type == "1":
        symbol = _s(msg, 55)
        if not symbol:
            app.reply(session, "j", business_reject_fields(
                msg, BIZ_CONDITIONAL_MISSING, "Symbol (55) is required for MassStatusReqType 1"),
                now_ns, reply_to=msg)
            return
    elif req_type == "8":
        account = _s(msg, 1)
        if not account:
            app.reply(session, "j", business_reject_fields(
                msg, BIZ_CONDITIONAL_MISSING, "Account (1) is required for MassStatusReqType 8"),
                now_ns, reply_to=msg)
            return
        accounts = tuple(a for a in accounts if a == account)
    elif req_type != "7":
        app.reply(session, "j", business_reject_fields(
            msg, BIZ_UNSUPPORTED, f"MassStatusReqType {req_type} is not supported; use 1, 7 "
                                  "or 8"), now_ns, reply_to=msg)
        return
    side = _s(msg, 54)
    views = [v for v in app.ledger.live_orders(accounts=accounts)
             if (symbol is None or v.symbol == symbol)
             and (not side or (side == "1") == (int(v.side) == 1))]
    total = len(views)
    if not views:
        fields = [(37, "NONE"), (17, app.exec_ids.next("S", now_ns)), (150, "I"), (39, "8"),
                  (584, req_id), (911, 0), (912, "Y"), (55, symbol or "[N/A]"),
                  (54, side or "1"), (151, "0"), (14, "0"), (6, "0"),
                  (60, format_utc_timestamp(now_ns)), (58, "no matching open orders")]
        app.reply(session, "8", fields, now_ns, reply_to=msg)
        return
    for n, view in enumerate(views, start=1):
        inst = app.instruments[view.symbol]
        fields = order_fields(view, inst, exec_id=app.exec_ids.next("S", now_ns),
                              exec_type="I", ord_status=view.status, ts=now_ns)
        fields += [(584, req_id), (911, total), (912, "Y" if n == total else "N")]
        app.reply(session, "8", fields, now_ns, reply_to=msg)

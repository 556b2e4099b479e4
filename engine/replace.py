"""Cancel/replace (FIX OrderCancelReplaceRequest) semantics.

Theory of operation
-------------------
A replace changes quantity and/or price of a live order and gives it the request's client
order id. Rules, in order:

1. Unknown order or another account's -> UNKNOWN_ORDER; HALTED or CANCEL_ONLY instrument ->
   rejected; quantity and price checked as for a new order (band only for working orders).
2. New quantity at or below the filled quantity: the order is done (leaves 0; it is removed
   and OrderReplaced carries leaves=0, so OrdStatus becomes FILLED as FIX expects).
3. Untriggered stops: quantity, limit price and (if non-zero) stop price change in place;
   the trigger may then fire at the end of the command.
4. Same price and quantity not increased: leaves shrink in place, time priority kept.
5. Otherwise (price change or quantity increase) the order loses priority: it leaves the book
   and re-enters as a fresh entry (a copy of the order object, so the old book entry stays a
   tombstone), and may trade as a taker if it now crosses (post-only: rejected instead).

A reduce-only order's new leaves are clamped to the position it may close.
"""

from __future__ import annotations

from typing import Any

from engine.enums import InstrumentStatus, OrdType, RejectReason, RequestKind, Side, TriggerBy
from engine.events import OrderReplaced, RequestRejected

R = RejectReason
_MARKET_TYPES = (OrdType.MARKET, OrdType.STOP, OrdType.TAKE_PROFIT)


def replace_order(eng: Any, c: Any, ev: list) -> None:
    """Apply ReplaceOrder ``c`` to MatchingEngine ``eng``, appending events to ``ev``."""
    o = eng.orders.get(c.order_id)
    if o is None or o.account != c.account:
        eng._request_reject(c, RequestKind.REPLACE, c.order_id, c.account, R.UNKNOWN_ORDER, ev)
        return
    m = eng.markets[o.symbol]
    reason = R.KILL_SWITCH_ACTIVE if eng.blocked and o.account in eng.blocked else _check(m, o, c)
    if reason:
        eng._request_reject(c, RequestKind.REPLACE, c.order_id, c.account, reason, ev)
        return
    spec = o.spec
    has_limit = spec.ord_type not in _MARKET_TYPES
    price = c.price if has_limit else 0
    new_qty = c.qty
    orig = o.cl_ord_id
    cl = c.cl_ord_id or orig
    if new_qty <= o.filled:  # done: nothing left to work
        eng._remove_live(m, o)
        o.qty = new_qty
        o.leaves = 0
        o.cl_ord_id = cl
        ev.append(eng._oev(OrderReplaced, c.seq, c.ts, o, orig, True))
        eng._finish(m, c.seq, c.ts, ev)
        return
    leaves = new_qty - o.filled
    if spec.reduce_only:
        pos = m.positions.get(o.account, 0)
        room = -pos if o.side is Side.BUY else pos
        if 0 < room < leaves:
            leaves = room
            new_qty = o.filled + leaves
    if spec.pending:
        stop = c.stop_price or spec.stop_price
        by_mark = spec.trigger_mark if c.trigger_by is None else c.trigger_by == TriggerBy.MARK
        if stop != spec.stop_price or by_mark != spec.trigger_mark:
            m.remove_stop(o)
            o.spec = spec._replace(stop_price=stop, trigger_mark=by_mark)
            m.add_stop(o)
        o.qty, o.leaves, o.price, o.cl_ord_id = new_qty, leaves, price, cl
        ev.append(eng._oev(OrderReplaced, c.seq, c.ts, o, orig, True))
        eng._finish(m, c.seq, c.ts, ev)
        return
    if m.instrument.max_leverage and not spec.reduce_only:
        risk = eng.risk
        reason, shortfall = risk.check_order(
            ev, o.account, o.symbol, o.side, risk.margin_price(o.symbol, o.side, price),
            leaves, risk.held.get(o.id))
        if reason:
            eng.exec_id += 1
            ev.append(RequestRejected(c.seq, c.ts, eng.exec_id, RequestKind.REPLACE, c.order_id,
                                      c.cl_ord_id, c.account, reason, shortfall))
            return
    if price == o.price and new_qty <= o.qty:  # keeps time priority
        m.book.restate(o, leaves)
        o.qty = new_qty
        o.cl_ord_id = cl
        ev.append(eng._oev(OrderReplaced, c.seq, c.ts, o, orig, True))
        eng._finish(m, c.seq, c.ts, ev)
        return
    book = m.book
    crosses = price >= book.best_ask if o.side is Side.BUY else price <= book.best_bid
    if crosses and spec.post_only:
        eng._request_reject(c, RequestKind.REPLACE, c.order_id, c.account,
                            R.POST_ONLY_WOULD_TAKE, ev)
        return
    if crosses and m.status is InstrumentStatus.POST_ONLY:
        eng._request_reject(c, RequestKind.REPLACE, c.order_id, c.account,
                            R.INSTRUMENT_POST_ONLY, ev)
        return
    book.remove(o)  # loses priority: a fresh entry
    n = o.copy()
    n.price, n.qty, n.leaves, n.cl_ord_id, n.visible = price, new_qty, leaves, cl, 0
    eng.orders[o.id] = n
    if spec.reduce_only:
        m.unindex_reduce_only(o)
    ev.append(eng._oev(OrderReplaced, c.seq, c.ts, n, orig, False))
    eng._execute(m, n, c.seq, c.ts, ev, False)
    eng._finish(m, c.seq, c.ts, ev)


def _check(m: Any, o: Any, c: Any) -> int:
    status = m.status
    if status is InstrumentStatus.HALTED:
        return R.INSTRUMENT_HALTED
    if status is InstrumentStatus.CANCEL_ONLY:
        return R.INSTRUMENT_CANCEL_ONLY
    inst = m.instrument
    if c.qty <= 0:
        return R.INVALID_QTY
    if c.qty < inst.min_qty:
        return R.QTY_BELOW_MIN
    if c.qty > inst.max_qty:
        return R.QTY_ABOVE_MAX
    spec = o.spec
    if spec.ord_type not in _MARKET_TYPES:
        if c.price <= 0:
            return R.INVALID_PRICE
        if not spec.pending:
            lo, hi = m.band()
            if not lo <= c.price <= hi:
                return R.PRICE_OUTSIDE_BAND
    if c.stop_price < 0 or (c.stop_price and not spec.pending):
        return R.INVALID_STOP_PRICE
    if c.trigger_by is not None:
        try:
            by = TriggerBy(c.trigger_by)
        except ValueError:
            return R.INVALID_TRIGGER
        if not spec.pending or (by is TriggerBy.MARK and not m.instrument.max_leverage
                                and not m.mark_price):
            return R.INVALID_TRIGGER
    return 0

"""Who owns which order, and what each session's ClOrdIDs mean.

Theory of operation
-------------------
Every request is submitted to the sequencer with an *origin* (journaled with it): a tuple
``(session_id, kind, ...)`` where ``kind`` is the FIX MsgType that caused it (``D``, ``F``,
``G``, ``q``) or ``K`` (kill switch, ``("", "K", firm[, who])``) / ``X`` (cancel-on-disconnect)
/ ``S`` (session status) / ``A`` (start-up and the admin API, ``("", "A"[, who, action])``).
Origins with an empty session id belong to no session. See :func:`origin`.

:class:`OrderLedger` is the FIX layer's view of the orders, built only from *released*
(durable) ticks, so a status request never reports what might be lost in a crash:

- ``orders``: order id -> :class:`OrderView` (everything an ExecutionReport needs, including
  what the engine's events do not carry for the maker of a trade: side, type, ClOrdIDs);
- per session: the ClOrdIDs it has used (new orders, cancels, replaces, rejected ones too)
  and which order each ClOrdID names (for OrigClOrdID lookups);
- live orders per account (MaxOpenOrders) and per session (cancel-on-disconnect).

ClOrdIDs are claimed when a request is *submitted* (:meth:`OrderLedger.claim`), not when it is
released, so two messages with the same ClOrdID in one tick are told apart. The day's ClOrdIDs
are kept once, as fingerprints (:mod:`fixserver.orderentry.used_ids`), in the recorder's sets
(:class:`OwnerRecorder`, what snapshots carry: those of journaled requests); the ledger checks
a claim against them and against its own small sets of claims the recorder has not seen yet
(requests still on their way to a tick, and those refused before they were submitted), kept
for two trading days like the recorder's (:meth:`OrderLedger.follow_journal`). A ledger not
following a recorder (tests, tools) keeps the fingerprints itself.

Ended orders (filled, canceled, expired) stay in ``orders`` for status requests, oldest end
first in ``ended``, until the trading-day retention is over (:meth:`OrderLedger.prune_ended`)
or, sooner, until more than a count bound of them are kept (:meth:`OrderLedger.evict_ended`:
with Postgres only those whose final state the writer has committed). Forgetting an order
unnames every ClOrdID still naming it, so nothing kept per ended order outlives it; the used
ClOrdIDs (``used``) are kept per trading day regardless.

Restart: the pipeline's snapshot carries :meth:`OwnerRecorder.snapshot` and
:meth:`OrderLedger.details` (taken at the snapshot's tick boundary, in step with the engine).
The views of the orders live at the snapshot are taken from the restored engine
(:meth:`OrderLedger.views_of`, :meth:`OrderLedger.adopt`), then the journal tail is replayed
through the ledger event by event as the live path applies released ticks (see
:mod:`fixserver.orderentry.redelivery`), so orders that ended after the snapshot are known too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from engine.enums import OrdType, RequestKind, Side, TimeInForce
from engine.events import (
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderRejected,
    OrderReplaced,
    OrderRestated,
    OrderTriggered,
    RequestRejected,
    Trade,
)
from fixserver.orderentry.used_ids import UsedIds, fingerprint

NEW, PARTIAL, FILLED, CANCELED, EXPIRED = "0", "1", "2", "4", "C"
SESSION_KINDS = ("D", "F", "G", "q", "X")


def origin(session_id: str, kind: str, *extra: Any) -> tuple:
    """The origin journaled with a request: (session id, kind, extra...)."""
    return (session_id, kind, *extra)


def origin_session(o: Any) -> str | None:
    """The session id of an origin, or None (engine ticks, kill switch, admin actions)."""
    if o is None or len(o) < 2 or o[1] not in SESSION_KINDS:
        return None
    return str(o[0])


def entering_session(o: Any) -> str | None:
    """The session that entered a NewOrder (an origin of kind ``D``), else None."""
    if o is None or len(o) < 2 or o[1] != "D":
        return None
    return str(o[0])


class OrderView:
    """One order as the FIX layer reports it (mutable; updated from released events)."""

    __slots__ = (
        "account",
        "cl_ord_id",
        "ended_seq",
        "ended_ts",
        "filled",
        "leaves",
        "notional",
        "older_names",
        "ord_type",
        "order_id",
        "orig_cl_ord_id",
        "price",
        "qty",
        "session_id",
        "side",
        "status",
        "stop_price",
        "stp",
        "symbol",
        "tif",
    )

    def __init__(
        self, order_id: int, session_id: str, account: str, symbol: str, side: Side,
        ord_type: OrdType, tif: TimeInForce, price: int, stop_price: int, qty: int,
        cl_ord_id: str, stp: str = "",
    ) -> None:
        self.order_id = order_id
        self.session_id = session_id
        self.account = account
        self.symbol = symbol
        self.side = side
        self.ord_type = ord_type
        self.tif = tif
        self.price = price
        self.stop_price = stop_price
        self.qty = qty
        self.filled = 0
        self.leaves = qty
        self.notional = 0
        self.cl_ord_id = cl_ord_id
        self.orig_cl_ord_id = ""
        self.status = NEW
        self.stp = stp
        self.ended_ts = 0  # when it stopped working (ns); 0 while live
        self.ended_seq = 0  # the seq of the command it ended in; 0 while live or not known
        #: ClOrdIDs of replaces before the last two (``orig_cl_ord_id``, ``cl_ord_id``) that
        #: still name the order, so forgetting it unnames them too; None: there are none
        self.older_names: list[str] | None = None

    @property
    def live(self) -> bool:
        return self.leaves > 0 and self.status in (NEW, PARTIAL)

    def working_status(self) -> str:
        return PARTIAL if self.filled else NEW


DAY_NS = 86_400 * 1_000_000_000


class DayIds(Protocol):
    """Where the day's ClOrdID fingerprints are kept: the current and previous trading day."""

    used: UsedIds
    used_prev: UsedIds


def _ignore(_order_id: int) -> None:
    """The default :attr:`OrderLedger.order_gone`: a ledger without a recorder."""
    return None


class OwnerRecorder:
    """Wraps the pipeline's sequencer: records each stamped NewOrder's owning session and every
    ClOrdID a session used, at the moment the tick is matched, so that a snapshot taken at that
    tick boundary carries ownership in step with the engine.

    ClOrdIDs are unique per session per trading day: the recorder keeps the current trading
    day's and the previous one's (``used``, ``used_prev``), rolled by the commands' own
    timestamps against ``day_offset()`` (the engine's journaled boundary), so a replay keeps
    exactly what the live run kept."""

    def __init__(self, sequencer: Any, owners: dict[int, str] | None = None,
                 used: Any = None, used_prev: Any = None, day: int | None = None,
                 day_offset: Any = None) -> None:
        self._sequencer = sequencer
        self.owners: dict[int, str] = owners if owners is not None else {}
        #: what a snapshot saved (UsedIds.to_bytes, or an older snapshot's {session: ids})
        self.used = used if isinstance(used, UsedIds) else UsedIds.load(used)
        self.used_prev = (used_prev if isinstance(used_prev, UsedIds)
                          else UsedIds.load(used_prev))
        self.day = day
        self.day_offset = day_offset if day_offset is not None else (lambda: 0)
        #: called with the fingerprint of every ClOrdID recorded (OrderLedger.follow_journal)
        self.recorded: Callable[[int], None] = _ignore

    def __getattr__(self, name: str) -> Any:  # submit, pending, position, ...
        return getattr(self._sequencer, name)

    def next_batch(self, now_ns: int) -> Any:
        batch = self._sequencer.next_batch(now_ns)
        if batch is not None:
            for tagged, command in batch.entries:
                # The order pipeline submits (origin, packed journal entry); unwrap it.
                if tagged is not None and isinstance(tagged[1], bytes):
                    tagged = tagged[0]
                self.record(tagged, command)
        return batch

    def record(self, o: Any, command: Any) -> None:
        """Note the owner of a NewOrder and the ClOrdID of any session request."""
        day = (command.ts - self.day_offset()) // DAY_NS
        if day != self.day:
            if self.day is not None:
                self.used_prev = self.used if day == self.day + 1 else UsedIds()
                self.used = UsedIds()
            self.day = day
        sid = origin_session(o)
        if sid is None:
            return
        cl_ord_id = getattr(command, "cl_ord_id", "")
        if cl_ord_id:
            fp = fingerprint(sid, cl_ord_id)
            self.used.add_fingerprint(fp)
            self.recorded(fp)
        if o[1] == "D":
            self.owners[command.seq] = sid

    def forget(self, order_id: int) -> None:
        """The order ended (or was rejected) in a released tick: its owner is needed no more
        (:attr:`OrderLedger.order_gone`). Owners are dropped as orders end, not at snapshots:
        a snapshot's state may be gathered in a forked child, which cannot prune the parent."""
        self.owners.pop(order_id, None)

    def snapshot(self, live_order_ids: Iterable[int]) -> dict[str, Any]:
        """msgpack-able: owners of the live orders, and every session's used ClOrdIDs of the
        current and the previous trading day (bounded by the day, not by history). Reads
        memory only (it may run in a forked child)."""
        owners = self.owners
        live = {oid: owners[oid] for oid in live_order_ids if oid in owners}
        return {"owners": live, "used": self.used.to_bytes(),
                "used_prev": self.used_prev.to_bytes(), "used_day": self.day}


class OrderLedger:
    """The released view of orders and ClOrdIDs (see module docstring)."""

    def __init__(self) -> None:
        self.orders: dict[int, OrderView] = {}
        #: where the day's ClOrdIDs are kept (``used``, ``used_prev``): the ledger itself, or
        #: once :meth:`follow_journal` is called, the recorder
        self.ids: DayIds = self
        self.used = UsedIds()  # this trading day's (session, ClOrdID) pairs (own sets)
        self.used_prev = UsedIds()  # the previous trading day's
        #: following a recorder: fingerprints claimed that it has not recorded (yet)
        self.claimed: set[int] = set()
        self.claimed_prev: set[int] = set()
        self.by_cl_ord_id: dict[str, dict[str, int]] = {}
        self.live_by_account: dict[str, set[int]] = {}
        self.live_by_session: dict[str, set[int]] = {}
        #: NewOrders submitted but not yet released, per account (MaxOpenOrders counts them)
        self.in_flight: dict[str, int] = {}
        #: ids of ended orders still in ``orders``, in the order they ended (retention)
        self.ended: deque[int] = deque()
        #: called with an order id once the order ended or was rejected (OwnerRecorder.forget)
        self.order_gone: Callable[[int], None] = _ignore

    # -- ClOrdIDs ---------------------------------------------------------------------------

    def follow_journal(self, recorder: OwnerRecorder) -> None:
        """Keep the day's ClOrdIDs only in ``recorder``'s sets (the journaled ones, which
        snapshots carry), plus the claims it has not recorded yet: one copy of each
        fingerprint instead of two."""
        recorder.used.merge(self.used)  # anything claimed before (nothing, at start-up)
        recorder.used_prev.merge(self.used_prev)
        self.used, self.used_prev = UsedIds(), UsedIds()
        self.ids = recorder
        recorder.recorded = self._recorded

    def _recorded(self, fp: int) -> None:
        self.claimed.discard(fp)
        self.claimed_prev.discard(fp)

    def _taken(self, fp: int) -> bool:
        ids = self.ids
        return (ids.used.has_fingerprint(fp) or ids.used_prev.has_fingerprint(fp)
                or fp in self.claimed or fp in self.claimed_prev)

    def is_used(self, session_id: str, cl_ord_id: str) -> bool:
        return self._taken(fingerprint(session_id, cl_ord_id))

    def claim(self, session_id: str, cl_ord_id: str) -> bool:
        """Mark ``cl_ord_id`` used by the session; False if it already was (this trading day
        or the previous one), or if it still names one of the session's live orders."""
        fp = fingerprint(session_id, cl_ord_id)  # once: it is the costly part
        if self._taken(fp):
            return False
        named = self.by_cl_ord_id.get(session_id, {}).get(cl_ord_id)
        if named is not None:
            view = self.orders.get(named)
            if view is not None and view.live:
                return False
        if self.ids is self:
            self.used.add_fingerprint(fp)
        else:
            self.claimed.add(fp)
        return True

    def roll_day(self, days: int = 1) -> None:
        """``days`` new trading days: ClOrdIDs of the day before last may be used again (a
        recorder followed rolls its own sets by the commands' timestamps)."""
        self.used_prev = self.used if days == 1 else UsedIds()
        self.used = UsedIds()
        self.claimed_prev = self.claimed if days == 1 else set()
        self.claimed = set()

    def find(self, session_id: str, cl_ord_id: str) -> OrderView | None:
        """The order a session's ClOrdID (current or earlier) names."""
        oid = self.by_cl_ord_id.get(session_id, {}).get(cl_ord_id)
        return self.orders.get(oid) if oid is not None else None

    def name(self, session_id: str, cl_ord_id: str, order_id: int) -> None:
        """Let ``cl_ord_id`` name ``order_id`` for the session (a replace's new ClOrdID)."""
        self.by_cl_ord_id.setdefault(session_id, {})[cl_ord_id] = order_id

    def unname(self, session_id: str, cl_ord_id: str) -> None:
        self.by_cl_ord_id.get(session_id, {}).pop(cl_ord_id, None)

    # -- counts -----------------------------------------------------------------------------

    def open_orders(self, account: str) -> int:
        """Live orders of the account, plus new orders submitted and not yet released."""
        return len(self.live_by_account.get(account, ())) + self.in_flight.get(account, 0)

    def submitted_new(self, account: str) -> None:
        self.in_flight[account] = self.in_flight.get(account, 0) + 1

    def live_orders(self, session_id: str | None = None,
                    accounts: Iterable[str] | None = None) -> list[OrderView]:
        """Live orders of a session, or of some accounts, in order-id order."""
        if session_id is not None:
            ids: set[int] = set(self.live_by_session.get(session_id, ()))
        else:
            ids = set()
            for account in accounts or ():
                ids |= self.live_by_account.get(account, set())
        return [self.orders[i] for i in sorted(ids)]

    # -- released events --------------------------------------------------------------------

    def apply(self, o: Any, command: Any, events: list) -> None:
        """Update the view from one released command whose reports are not needed (replay)."""
        sid = self.begin(o, command)
        for event in events:
            self.apply_event(sid, o, event)

    def begin(self, o: Any, command: Any) -> str | None:
        """A released command's own bookkeeping (its events are applied one by one after);
        returns the origin's session id."""
        sid = origin_session(o)
        if type(command).__name__ == "NewOrder" and sid is not None:
            account = command.account
            left = self.in_flight.get(account, 0) - 1
            if left > 0:
                self.in_flight[account] = left
            else:
                self.in_flight.pop(account, None)
        return sid

    def apply_event(self, sid: str | None, o: Any, e: Any) -> None:
        kind = type(e)
        view: OrderView | None
        if kind is OrderAccepted:
            if sid is None:
                return
            view = OrderView(e.order_id, sid, e.account, e.symbol, e.side, e.ord_type, e.tif,
                             e.price, e.stop_price, e.qty, e.cl_ord_id,
                             str(o[2]) if len(o) > 2 and o[2] else "")
            self.orders[e.order_id] = view
            self.name(sid, e.cl_ord_id, e.order_id)
            self.live_by_account.setdefault(e.account, set()).add(e.order_id)
            self.live_by_session.setdefault(sid, set()).add(e.order_id)
        elif kind is Trade:
            self._fill(e.maker_order_id, e.maker_filled, e.maker_leaves, e.maker_notional, e.ts,
                       e.seq)
            self._fill(e.taker_order_id, e.taker_filled, e.taker_leaves, e.taker_notional, e.ts,
                       e.seq)
        elif kind is OrderCanceled or kind is OrderExpired:
            view = self.orders.get(e.order_id)
            if view is not None:
                self._update(view, e)
                view.status = CANCELED if kind is OrderCanceled else EXPIRED
                self._ended(view, e.ts, e.seq)
        elif kind is OrderReplaced:
            view = self.orders.get(e.order_id)
            if view is not None:
                self._update(view, e)
                view.price = e.price
                view.stop_price = e.stop_price
                older = view.orig_cl_ord_id
                if older and older not in (e.orig_cl_ord_id, e.cl_ord_id):
                    if view.older_names is None:
                        view.older_names = []
                    view.older_names.append(older)
                view.orig_cl_ord_id = e.orig_cl_ord_id
                view.cl_ord_id = e.cl_ord_id
                self.name(view.session_id, e.cl_ord_id, e.order_id)
                if e.leaves == 0:
                    view.status = FILLED if e.filled and e.filled >= e.qty else CANCELED
                    self._ended(view, e.ts, e.seq)
                else:
                    view.status = view.working_status()
        elif kind is OrderTriggered or kind is OrderRestated:
            view = self.orders.get(e.order_id)
            if view is not None:
                self._update(view, e)
                view.status = view.working_status()
        elif kind is RequestRejected:
            if sid is not None and e.request is RequestKind.REPLACE and e.cl_ord_id:
                self.unname(sid, e.cl_ord_id)
        elif kind is OrderRejected:
            self.order_gone(e.order_id)  # nothing lived; the ClOrdID stays used

    def _update(self, view: OrderView, e: Any) -> None:
        view.qty = e.qty
        view.filled = e.filled
        view.leaves = e.leaves
        view.notional = e.notional

    def _fill(self, order_id: int, filled: int, leaves: int, notional: int, ts: int,
              seq: int) -> None:
        view = self.orders.get(order_id)
        if view is None:
            return
        view.filled = filled
        view.leaves = leaves
        view.notional = notional
        if leaves == 0:
            view.status = FILLED
            self._ended(view, ts, seq)
        else:
            view.status = PARTIAL

    def _ended(self, view: OrderView, ts: int, seq: int) -> None:
        self.live_by_account.get(view.account, set()).discard(view.order_id)
        self.live_by_session.get(view.session_id, set()).discard(view.order_id)
        if not view.ended_ts:
            view.ended_ts = ts or 1
            view.ended_seq = seq
            self.ended.append(view.order_id)
            self.order_gone(view.order_id)

    # -- retention of ended orders ------------------------------------------------------------

    def prune_ended(self, before_ts: int) -> int:
        """Forget orders that ended before ``before_ts`` (the start of the retention window):
        status requests no longer find them. Returns how many were dropped."""
        ended = self.ended
        orders = self.orders
        dropped = 0
        while ended:
            view = orders.get(ended[0])
            if view is not None and view.ended_ts >= before_ts:
                break
            ended.popleft()
            if view is not None:
                self._forget(view)
                dropped += 1
        return dropped

    def evict_ended(self, keep: int, durable_before: int | None = None) -> int:
        """Forget the oldest-ended orders beyond the newest ``keep`` (the count bound of ended
        orders in memory). With ``durable_before`` (the Postgres writer's committed mark) only
        orders that ended in a command below it go: their final state is in Postgres, where a
        status request finds them. Returns how many were dropped."""
        ended = self.ended
        orders = self.orders
        dropped = 0
        while len(ended) > keep:
            view = orders.get(ended[0])
            if (view is not None and durable_before is not None
                    and view.ended_seq >= durable_before):
                break
            ended.popleft()
            if view is not None:
                self._forget(view)
                dropped += 1
        return dropped

    def _forget(self, view: OrderView) -> None:
        """Drop an ended order and every ClOrdID still naming it."""
        del self.orders[view.order_id]
        names = self.by_cl_ord_id.get(view.session_id)
        if names is None:
            return
        oid = view.order_id
        for cl in (view.cl_ord_id, view.orig_cl_ord_id, *(view.older_names or ())):
            if cl and names.get(cl) == oid:
                del names[cl]
        if not names:
            del self.by_cl_ord_id[view.session_id]

    def ended_rows(self) -> list[list[Any]]:
        """msgpack-able: the ended orders still in memory, oldest end first (snapshots carry
        them so a status request after a restart still finds them; at most the count bound,
        plus those Postgres does not hold yet)."""
        rows = []
        orders = self.orders
        for oid in self.ended:
            v = orders.get(oid)
            if v is not None:
                rows.append([v.order_id, v.session_id, v.account, v.symbol, int(v.side),
                             int(v.ord_type), int(v.tif), v.price, v.stop_price, v.qty,
                             v.cl_ord_id, v.stp, v.filled, v.leaves, v.notional,
                             v.orig_cl_ord_id, v.status, v.ended_ts, v.ended_seq])
        return rows

    def adopt_ended(self, rows: Iterable[Any]) -> None:
        """Take back the ended orders of :meth:`ended_rows` (start-up, before the tail)."""
        for r in rows:
            (oid, sid, account, symbol, side, ord_type, tif, price, stop, qty, cl, stp, filled,
             leaves, notional, orig, status, ended_ts) = r[:18]
            ended_seq = r[18] if len(r) > 18 else 0  # rows of earlier versions have none
            view = OrderView(int(oid), str(sid), str(account), str(symbol), Side(side),
                             OrdType(ord_type), TimeInForce(tif), price, stop, qty, str(cl),
                             str(stp))
            view.filled, view.leaves, view.notional = filled, leaves, notional
            view.orig_cl_ord_id, view.status, view.ended_ts = str(orig), str(status), ended_ts
            view.ended_seq = int(ended_seq)
            self.orders[view.order_id] = view
            self.ended.append(view.order_id)
            names = self.by_cl_ord_id.setdefault(view.session_id, {})
            if view.orig_cl_ord_id:
                names.setdefault(view.orig_cl_ord_id, view.order_id)
            names[view.cl_ord_id] = view.order_id

    # -- restart ----------------------------------------------------------------------------

    @staticmethod
    def views_of(engine: Any) -> list[OrderView]:
        """Views of the engine's live orders, owner not yet known (``session_id`` empty).
        Taken from the engine restored from a snapshot, before the journal tail is replayed."""
        views = []
        for oid in sorted(engine.orders):
            order = engine.orders[oid]
            spec = order.spec
            view = OrderView(oid, "", order.account, order.symbol, order.side, spec.ord_type,
                             spec.tif, order.price, spec.stop_price, order.qty, order.cl_ord_id)
            view.filled = order.filled
            view.leaves = order.leaves
            view.notional = order.notional
            view.status = view.working_status()
            views.append(view)
        return views

    def details(self, live_order_ids: Iterable[int]) -> dict[int, list[str]]:
        """msgpack-able: what the engine does not keep of the live orders and their reports
        carry (the STP instruction 7928 as sent, the OrigClOrdID of a replace), where set."""
        out: dict[int, list[str]] = {}
        orders = self.orders
        for oid in live_order_ids:
            view = orders.get(oid)
            if view is not None and (view.stp or view.orig_cl_ord_id):
                out[oid] = [view.stp, view.orig_cl_ord_id]
        return out

    def adopt(self, views: Iterable[OrderView], owners: dict[int, str],
              used: UsedIds | dict[str, set[str]] | None,
              details: dict[int, Any] | None = None) -> None:
        """Take the live orders' views (:meth:`views_of`) with their owners and
        :meth:`details`, and the used ClOrdIDs (None: a recorder followed has them already);
        orders with no known owner are left out."""
        if isinstance(used, UsedIds):
            self.ids.used.merge(used)
        elif used:
            self.ids.used.add_all(used)
        details = details or {}
        for view in views:
            oid = view.order_id
            owner = owners.get(oid)
            if owner is None:
                continue
            view.session_id = owner
            extra = details.get(oid)
            if extra:
                view.stp, view.orig_cl_ord_id = str(extra[0]), str(extra[1])
            self.orders[oid] = view
            self.name(owner, view.cl_ord_id, oid)
            self.live_by_account.setdefault(view.account, set()).add(oid)
            self.live_by_session.setdefault(owner, set()).add(oid)

    def restore(self, engine: Any, owners: dict[int, str],
                used: UsedIds | dict[str, set[str]]) -> None:
        """Rebuild views of the engine's live orders (after recovery) and the used ClOrdIDs."""
        self.adopt(self.views_of(engine), owners, used)

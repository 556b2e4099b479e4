"""OrderEntryApplication: the FIX application layer of order entry (sans-IO, no Twisted).

Theory of operation
-------------------
:meth:`on_message` receives each validated application message of a session. After the
throttle, the message goes through its session's *lane* (:mod:`fixserver.orderentry.lanes`):
it is handled at once, or waits until the session's earlier requests are released, so that
every session's requests take effect and are answered in MsgSeqNum order, exactly as if the
client had waited for each answer (a cancel sent right behind its NewOrderSingle finds the
order). Handling checks the session's role; an order message is translated
(:mod:`fixserver.orderentry.translate`) and either refused at once (ExecutionReport 150=8,
OrderCancelReject, BusinessMessageReject, OrderMassCancelReport 531=0: nothing reached the
engine) or submitted to the sequencer pipeline with its origin
(:func:`fixserver.orderentry.ownership.origin`). Status requests (H, AF) are answered from
the ledger, which holds only released (durable) state. Every answer given at once goes out
through :meth:`reply`, behind the reports of the session's requests still in flight.

Bounded memory: after each released tick the ledger keeps at most ``max_ended_orders`` ended
orders (oldest-ended go first; the trading-day retention drops them anyway). With a status
store (:meth:`use_status_store`, Postgres) only orders whose final state the store holds are
dropped, and an H for one of them is read from the store (:meth:`read_status`) while its
session's lane waits (a ``READ`` entry, :mod:`fixserver.orderentry.lanes`); the answer and
whatever waited behind it go out when the read completes.

The pipeline calls :meth:`on_released` with each durable tick: the ledger is updated, then the
reports are built (:mod:`fixserver.orderentry.reports`) and sent to the owning session and,
for ExecutionReports, to the drop-copy sessions of the account's firm (CopyMsgIndicator 797=Y);
then what waited in the lanes for those requests. Reports of liquidations (the engine's own
orders and transfers, :mod:`fixserver.orderentry.liquidation_reports`) go to every
order-entry session of the account's firm; margin calls (:class:`RiskDesk`) to those logged
on. Sending at release happens outside a socket
pump, so ``flush`` is called for each session written to. :meth:`reports_of` and
:meth:`deliveries` are the two halves of that path; the start-up redelivery
(:mod:`fixserver.orderentry.redelivery`) runs the journal tail through them too.

Session life: :meth:`on_logon` reads CancelOnDisconnect (7929) from the Logon and journals
the choice (engine SessionStatus); :meth:`on_logout` journals the disconnect and, if the
choice was on, cancels the session's live orders (and orders of the session released later,
until its next logon) after ``cancel_on_disconnect_delay`` seconds (0: at once; a logon
within the delay keeps them). At start-up :meth:`resume_sessions` does the same for the
sessions the journal says were connected with it on (a crash or restart is a disconnect).

Kill switch: :meth:`set_kill_switch` journals an engine KillSwitch command, which cancels the
firm's live orders and rejects its orders still in flight (the engine blocks the accounts).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable

from prometheus_client import Gauge

from engine.commands import CancelOrder, KillSwitch, SessionStatus
from engine.enums import CancelReason
from engine.events import (
    AccountChanged,
    InstrumentConfigured,
    KillSwitchChanged,
    MarkPriceUpdated,
    MassCancelDone,
    OrderAccepted,
    PositionChanged,
    RequestRejected,
    RiskSettingsChanged,
)
from engine.instruments import Instrument
from engine.risk.readmodel import RiskReadModel
from fixserver.admin_messages import business_reject_fields
from fixserver.codec import FixMessage
from fixserver.metrics import ORDER_PROCESSING_LATENCY_MS
from fixserver.orderentry import status
from fixserver.orderentry.controls import Throttle, Verdict
from fixserver.orderentry.firms import FirmDirectory
from fixserver.orderentry.lanes import REPLY, SessionLanes
from fixserver.orderentry.liquidation_reports import LiquidationReports
from fixserver.orderentry.ownership import OrderLedger, origin
from fixserver.orderentry.reports import (
    LocalExecIds,
    Report,
    ReportBuilder,
    cancel_reject_fields,
    mass_cancel_report_fields,
    refused_order_fields,
)
from fixserver.orderentry.risk_desk import RiskDesk
from fixserver.orderentry.risk_reports import (
    MAINTENANCE,
    MaintenanceRefused,
    maintenance_outcome,
    maintenance_report_fields,
    translate_maintenance,
)
from fixserver.orderentry.stored import StatusQuery, StatusStore, StoredOrder
from fixserver.orderentry.translate import (
    BIZ_THROTTLED,
    BIZ_UNSUPPORTED,
    CXL_DUPLICATE_CLORDID,
    CXL_OTHER,
    CXL_TOO_LATE,
    CXL_UNKNOWN_ORDER,
    REJ_DUPLICATE,
    REJ_OTHER,
    BusinessRefused,
    CancelRefused,
    OrderRefused,
    SessionContext,
    mass_cancel_requests,
    translate_cancel,
    translate_new,
    translate_replace,
)
from fixserver.settings import SessionRole

_ORDER_TYPES = (b"D", b"F", b"G", b"H", b"q", b"AF", b"AN", b"BB", b"AL")
#: what a drop-copy session may ask: its firm's positions and collateral (read-only)
_READ_ONLY_TYPES = (b"AN", b"BB")
#: origin kinds of requests a session's message caused (each holds a place in its lane)
_LANE_KINDS = frozenset(("D", "F", "G", "q", MAINTENANCE))
#: events the risk read model follows
_RISK_EVENTS = frozenset((AccountChanged, PositionChanged, RiskSettingsChanged,
                          MarkPriceUpdated))
DAY_NS = 86_400 * 1_000_000_000

ENDED_IN_MEMORY = Gauge("orderentry_ended_orders_in_memory",
                        "Ended orders the order-entry ledger keeps in memory for status requests")


def _field_map(msg: FixMessage) -> dict[int, str]:
    out: dict[int, str] = {}
    for tag, value in msg.fields:
        out.setdefault(tag, value.decode("latin-1"))
    return out


class OrderEntryApplication:
    """See the module docstring. ``gateway`` has ``submit(origin, request)`` (the pipeline)."""

    def __init__(
        self,
        sessions: Iterable[Any],
        gateway: Any,
        instruments: Iterable[Instrument],
        directory: FirmDirectory,
        *,
        now_ns: Callable[[], int],
        flush: Callable[[Any], None] = lambda session: None,
        disconnect: Callable[[Any, str], None] = lambda session, text: None,
        killed: Iterable[str] = (),
        ledger: OrderLedger | None = None,
        call_later: Callable[[float, Callable[[], None]], Any] | None = None,
        cancel_on_disconnect_delay: float = 0.0,
        day_offset_ns: int = 0,
        retention_days: int = 1,
        max_ended_orders: int = 100_000,
        risk_push_interval: float = 1.0,
    ) -> None:
        self.sessions = {s.settings.session_id: s for s in sessions}
        self.gateway = gateway
        #: (session id, ClOrdID) -> when the request reached the application (ns)
        self._received_ns: dict[tuple[Any, Any], int] = {}
        self.instruments = {i.symbol: i for i in instruments}
        self.directory = directory
        self.now_ns = now_ns
        self.flush = flush
        self.disconnect = disconnect
        self.killed: set[str] = set(killed)
        self.ledger = ledger if ledger is not None else OrderLedger()
        self.builder = ReportBuilder(self.instruments, self.ledger)
        self.exec_ids = LocalExecIds()
        self._throttles: dict[str, Throttle] = {}
        self._cancel_on_disconnect = {
            sid: s.settings.cancel_on_disconnect for sid, s in self.sessions.items()
        }
        self._gone: set[str] = set()  # logged out with cancel-on-disconnect set
        self._mass: dict[tuple[str, str], int] = {}  # (session, q ClOrdID) -> canceled so far
        self.lanes = SessionLanes()
        #: ended orders are kept (status requests find them) for ``retention_days`` trading
        #: days (1: the rest of the day they ended in); the day rolls at ``day_offset_ns``
        self.day_offset_ns = day_offset_ns
        self.retention_days = retention_days
        self._day = -1
        #: at most this many ended orders stay in memory (oldest-ended are dropped first)
        self.max_ended_orders = max_ended_orders
        #: where H finds ended orders no longer in memory (None: they are unknown)
        self.status_store: StatusStore | None = None
        #: the store's durable mark (every command below it is in the store; None: unknown)
        self._store_durable: Callable[[], int | None] | None = None
        #: sessions written to while a released tick is handled (flushed at its end)
        self._touched: set[Any] | None = None
        self.call_later = call_later
        self.cancel_on_disconnect_delay = cancel_on_disconnect_delay
        self._cod_timers: dict[str, Any] = {}  # session -> pending delayed cancel (IDelayedCall)
        #: firm -> live orders its kill switch canceled (the last time it was turned on)
        self.kill_canceled: dict[str, int] = {}
        self._drop_copies: dict[str, list[Any]] = {}
        #: firm -> its order-entry sessions (configuration order): where reports of what no
        #: session entered (liquidations) and margin calls go
        self._order_entry: dict[str, list[Any]] = {}
        for s in self.sessions.values():
            if s.settings.role is SessionRole.DROP_COPY and s.settings.firm:
                self._drop_copies.setdefault(s.settings.firm, []).append(s)
            elif s.settings.role is SessionRole.ORDER_ENTRY and s.settings.firm:
                self._order_entry.setdefault(s.settings.firm, []).append(s)
        self._order_entry_ids = {firm: tuple(s.settings.session_id for s in sessions)
                                 for firm, sessions in self._order_entry.items()}
        self.builder.engine_orders = LiquidationReports(self.builder, self.firm_sessions)
        #: collateral and positions as released (durable): what AP, BA and AM report
        self.risk = RiskReadModel(self.instruments.values())
        self.risk_desk = RiskDesk(self.risk, self.instruments, directory, self._drop_copies,
                                  self._push, now_ns, call_later, risk_push_interval,
                                  order_entry=self._order_entry)

    def seed_risk(self, engine: Any) -> None:
        """Start-up: bring the risk read model to the engine as recovered (snapshot and
        journal replay: all of it durable, no new tick has run). Replaying the tail through
        :meth:`reports_of` afterwards is harmless: its events carry absolute state, the
        last of each is the engine's."""
        self.risk.seed(engine)

    # -- session life ---------------------------------------------------------------------

    def context(self, session: Any) -> SessionContext:
        settings = session.settings
        return SessionContext(settings.session_id, settings.firm,
                              self.directory.accounts_of(settings.firm), settings.default_stp)

    def on_logon(self, session: Any, logon: FixMessage | None, now_ns: int) -> None:
        """A session logged on; CancelOnDisconnect (7929) on its Logon overrides the config.
        The choice is journaled (SessionStatus) so that it survives a restart."""
        sid = session.settings.session_id
        self._gone.discard(sid)
        timer = self._cod_timers.pop(sid, None)
        if timer is not None and timer.active():
            timer.cancel()  # back within the grace period: the orders stay
        flag = logon.get(7929) if logon is not None else None
        if flag in (b"Y", b"N"):
            self._cancel_on_disconnect[sid] = flag == b"Y"
        else:
            self._cancel_on_disconnect[sid] = session.settings.cancel_on_disconnect
        self._submit_quietly(origin(sid, "S"),
                             SessionStatus(0, 0, sid, True, self._cancel_on_disconnect[sid]))
        self.risk_desk.logged_on(session)

    def on_logout(self, session: Any, now_ns: int) -> None:
        """The session's connection ended (Logout or lost): journal it, and with
        cancel-on-disconnect cancel its orders (after CancelOnDisconnectDelay)."""
        sid = session.settings.session_id
        self.risk_desk.logged_off(session)  # its position/collateral subscriptions end
        cod = bool(self._cancel_on_disconnect.get(sid))
        self._submit_quietly(origin(sid, "S"), SessionStatus(0, 0, sid, False, cod))
        if cod:
            self._schedule_disconnect_cancel(sid)

    def resume_sessions(self, recorded: dict[str, tuple[bool, bool]]) -> list[str]:
        """Start-up: the sessions the journal says had cancel-on-disconnect on when they last
        logged on are not logged on now (the process just started): each is handled as a
        disconnect (journaled, orders canceled after the delay). Returns their ids."""
        resumed = []
        for sid, (connected, cod) in sorted(recorded.items()):
            if not cod or sid not in self.sessions:
                continue
            self._cancel_on_disconnect[sid] = True
            if connected:
                self._submit_quietly(origin(sid, "S"), SessionStatus(0, 0, sid, False, True))
            self._schedule_disconnect_cancel(sid)
            resumed.append(sid)
        return resumed

    def _schedule_disconnect_cancel(self, sid: str) -> None:
        delay = self.cancel_on_disconnect_delay
        if delay <= 0 or self.call_later is None:
            self._cancel_on_disconnect_now(sid)
            return
        old = self._cod_timers.pop(sid, None)
        if old is not None and old.active():
            old.cancel()
        self._cod_timers[sid] = self.call_later(delay, lambda: self._cod_due(sid))

    def _cod_due(self, sid: str) -> None:
        self._cod_timers.pop(sid, None)
        self._cancel_on_disconnect_now(sid)

    def _cancel_on_disconnect_now(self, sid: str) -> None:
        """Cancel the session's live orders, and (until it logs on again) any of its orders
        released later (requests still in flight when it left)."""
        self._gone.add(sid)
        for view in self.ledger.live_orders(session_id=sid):
            self._submit_quietly(origin(sid, "X"), CancelOrder(
                0, 0, view.account, view.order_id, "", CancelReason.CANCEL_ON_DISCONNECT))

    def _submit_quietly(self, o: Any, request: Any, received_ns: int = 0) -> bool:
        try:
            self.gateway.submit(o, request)
        except Exception:  # the pipeline is stopped: nothing more can be canceled or entered
            return False
        if o[1] in _LANE_KINDS:
            self.lanes.submitted(o[0])
        if received_ns:  # order_processing_latency_ms is observed when its tick is released
            self._received_ns[(o[0], request.cl_ord_id)] = received_ns
        return True

    # -- kill switch ----------------------------------------------------------------------

    def set_kill_switch(self, firm: str, active: bool, who: str = "") -> tuple:
        """Switch a firm's kill switch (journaled). On: the engine cancels every live order
        of the firm's accounts and rejects their orders still in flight; new orders are
        refused here at once. ``who`` (the operator, admin API) is journaled in the origin,
        which is returned. Raises KeyError (unknown firm) or PipelineStopped."""
        if firm not in self.directory.firms:
            raise KeyError(f"unknown firm {firm}")
        accounts = tuple(self.directory.accounts_of(firm))
        o = origin("", "K", firm, who) if who else origin("", "K", firm)
        self.gateway.submit(o, KillSwitch(0, 0, firm, accounts, active))
        if active:
            self.killed.add(firm)
        else:
            self.killed.discard(firm)
        return o

    # -- inbound --------------------------------------------------------------------------

    def on_message(self, session: Any, msg: FixMessage, now_ns: int) -> None:
        """One validated application message of a logged-on session."""
        settings = session.settings
        sid = settings.session_id
        if settings.throttle_rate:
            throttle = self._throttles.get(sid)
            if throttle is None:
                throttle = self._throttles[sid] = Throttle(settings.throttle_rate)
            verdict = throttle.admit(now_ns)
            if verdict is not Verdict.ADMIT:
                self._business_reject(session, msg, BIZ_THROTTLED,
                                      f"Throttle limit exceeded: {settings.throttle_rate} "
                                      "messages per second", now_ns)
                if verdict is Verdict.DISCONNECT:
                    self.disconnect(session, "throttle limit exceeded repeatedly")
                return
        self._roll_day(now_ns)  # a ClOrdID claimed now belongs to this trading day
        self._arrive(session, msg, now_ns)

    def _arrive(self, session: Any, msg: FixMessage, now_ns: int) -> None:
        """Handle a message now, or queue it in its session's lane (see
        :mod:`fixserver.orderentry.lanes`) until the session's earlier requests are released."""
        sid = session.settings.session_id
        if self.lanes.must_wait(sid, msg.msg_type == b"D"):
            self.lanes.wait(sid, (session, msg))
            return
        self._handle(session, msg, now_ns)

    def _handle(self, session: Any, msg: FixMessage, now_ns: int) -> None:
        settings = session.settings
        mt = msg.msg_type
        if mt not in _ORDER_TYPES:
            self._business_reject(session, msg, BIZ_UNSUPPORTED, None, now_ns)
            return
        if settings.role is not SessionRole.ORDER_ENTRY and not (
                settings.role is SessionRole.DROP_COPY and mt in _READ_ONLY_TYPES):
            self._business_reject(session, msg, BIZ_UNSUPPORTED,
                                  f"a {settings.role.value} session cannot send orders", now_ns)
            return
        if mt == b"AN" or mt == b"BB":
            desk = self.risk_desk
            answers = (desk.positions_request(session, msg, now_ns) if mt == b"AN"
                       else desk.collateral_inquiry(session, msg, now_ns))
            for msg_type, fields in answers:
                self.reply(session, msg_type, fields, now_ns, reply_to=msg)
        elif mt == b"AL":
            self._maintenance(session, msg, now_ns)
        elif mt == b"D":
            self._new_order(session, msg, now_ns)
        elif mt == b"F" or mt == b"G":
            self._cancel_or_replace(session, msg, now_ns)
        elif mt == b"q":
            self._mass_cancel(session, msg, now_ns)
        elif mt == b"H":
            status.order_status(self, session, msg, now_ns)
        else:
            status.mass_status(self, session, msg, now_ns)

    def reply(self, session: Any, msg_type: str, fields: list, now_ns: int,
              reply_to: FixMessage | None = None) -> None:
        """Send an answer given at once, after the reports of the session's earlier requests:
        held in its lane while any of them is not released yet."""
        item = (session, msg_type, fields, reply_to)
        if not self.lanes.hold_reply(session.settings.session_id, item):
            self._emit(item, now_ns)

    def _emit(self, item: tuple, now_ns: int) -> None:
        session, msg_type, fields, reply_to = item
        session.send(msg_type, fields, now_ns, reply_to=reply_to)
        if self._touched is not None:
            self._touched.add(session)

    def _lane_released(self, sid: str, now_ns: int) -> None:
        """A request of the session was released: send the answers that waited for it and
        handle the messages that did."""
        replies, again = self.lanes.released(sid)
        for item in replies:
            self._emit(item, now_ns)
        self._handle_again(again, now_ns)

    def _handle_again(self, again: list, now_ns: int) -> None:
        """Handle the entries that waited in a lane, in order, as if they had just arrived;
        once one has to wait again, the rest go back as they are (they would all wait)."""
        for index, entry in enumerate(again):
            if entry.kind == REPLY:
                session, msg_type, fields, reply_to = entry.item
                self.reply(session, msg_type, fields, now_ns, reply_to)
            else:
                session, msg = entry.item
                self._arrive(session, msg, now_ns)
                sid = session.settings.session_id
                if self.lanes.waits(sid):
                    rest = again[index + 1:]
                    if rest:
                        self.lanes.wait_all(sid, rest)
                    return

    def _business_reject(self, session: Any, msg: FixMessage, reason: int, text: str | None,
                         now_ns: int) -> None:
        self.reply(session, "j", business_reject_fields(msg, reason, text), now_ns, reply_to=msg)

    def _possible_resend_seen(self, sid: str, msg: FixMessage, cl_ord_id: str) -> bool:
        """PossResend=Y and the ClOrdID was used: the first answer stands; ignore it."""
        return msg.get(97) == b"Y" and self.ledger.is_used(sid, cl_ord_id)

    def _new_order(self, session: Any, msg: FixMessage, now_ns: int) -> None:
        sid = session.settings.session_id
        cl_ord_id = (msg.get(11) or b"").decode("latin-1")
        if self._possible_resend_seen(sid, msg, cl_ord_id):
            return
        if not self.ledger.claim(sid, cl_ord_id):
            self._refuse_order(session, msg, REJ_DUPLICATE,
                               f"duplicate ClOrdID {cl_ord_id} for this session", now_ns)
            return
        firm = session.settings.firm
        if firm in self.killed:
            self._refuse_order(session, msg, REJ_OTHER, f"kill switch active for firm {firm}",
                               now_ns)
            return
        result = translate_new(msg, self.context(session), self.instruments)
        if isinstance(result, OrderRefused):
            self._refuse_order(session, msg, result.reason, result.text, now_ns)
            return
        account = result.account
        limit = self.directory.max_open_orders(account)
        if limit and self.ledger.open_orders(account) >= limit:
            self._refuse_order(session, msg, REJ_OTHER,
                               f"MaxOpenOrders {limit} reached for account {account}", now_ns)
            return
        stp = (msg.get(7928) or b"").decode("latin-1")
        if not self._submit_quietly(origin(sid, "D", stp), result, now_ns):
            self._refuse_order(session, msg, REJ_OTHER, "exchange is not accepting orders",
                               now_ns)
            return
        self.ledger.submitted_new(account)

    def _refuse_order(self, session: Any, msg: FixMessage, reason: int, text: str,
                      now_ns: int) -> None:
        fields = refused_order_fields(_field_map(msg), self.exec_ids.next("R", now_ns), reason,
                                      text, now_ns)
        self.reply(session, "8", fields, now_ns, reply_to=msg)
        account = (msg.get(1) or b"").decode("latin-1")
        if account and self.directory.firm_of(account) == session.settings.firm:
            self._copy(account, fields, now_ns, set())

    def _cancel_or_replace(self, session: Any, msg: FixMessage, now_ns: int) -> None:
        sid = session.settings.session_id
        is_cancel = msg.msg_type == b"F"
        response_to = "1" if is_cancel else "2"
        cl_ord_id = (msg.get(11) or b"").decode("latin-1")
        orig = (msg.get(41) or b"").decode("latin-1")
        if self._possible_resend_seen(sid, msg, cl_ord_id):
            return

        def refuse(reason: int, text: str, view: Any = None) -> None:
            fields = cancel_reject_fields(view, cl_ord_id, orig, response_to, reason, text,
                                          now_ns)
            self.reply(session, "9", fields, now_ns, reply_to=msg)

        if not self.ledger.claim(sid, cl_ord_id):
            refuse(CXL_DUPLICATE_CLORDID, f"duplicate ClOrdID {cl_ord_id} for this session")
            return
        view = self.ledger.find(sid, orig)
        order_id = msg.get(37)
        if view is None or (order_id and order_id.decode("latin-1") != str(view.order_id)):
            refuse(CXL_UNKNOWN_ORDER, f"unknown order: OrigClOrdID {orig}")
            return
        if not view.live:
            refuse(CXL_TOO_LATE, "the order is no longer working", view)
            return
        if is_cancel:
            request: Any = translate_cancel(msg, view)
        else:
            if session.settings.firm in self.killed:
                refuse(CXL_OTHER, f"kill switch active for firm {session.settings.firm}", view)
                return
            request = translate_replace(msg, view, self.instruments)
            if isinstance(request, CancelRefused):
                refuse(request.reason, request.text, view)
                return
            if isinstance(request, BusinessRefused):
                self._business_reject(session, msg, request.reason, request.text, now_ns)
                return
        if not self._submit_quietly(origin(sid, msg.msg_type.decode(), orig), request, now_ns):
            refuse(CXL_OTHER, "exchange is not accepting requests", view)
            return
        if not is_cancel:
            self.ledger.name(sid, cl_ord_id, view.order_id)

    def _maintenance(self, session: Any, msg: FixMessage, now_ns: int) -> None:
        """PositionMaintenanceRequest (AL): the engine command (journaled, in the session's
        order); its AM comes at release (:meth:`reports_of`), or at once if refused here."""
        settings = session.settings
        m, result = translate_maintenance(msg, self.directory.accounts_of(settings.firm),
                                          settings.firm, self.instruments)
        text = result.text if isinstance(result, MaintenanceRefused) else None
        if text is None and not self._submit_quietly(
                origin(settings.session_id, MAINTENANCE, *m.origin_extra()), result):
            text = "exchange is not accepting requests"
        if text is not None:
            fields = maintenance_report_fields(m, self.exec_ids.next("PM", now_ns), now_ns,
                                               accepted=False, text=text)
            self.reply(session, "AM", fields, now_ns, reply_to=msg)

    def _mass_cancel(self, session: Any, msg: FixMessage, now_ns: int) -> None:
        sid = session.settings.session_id
        cl_ord_id = (msg.get(11) or b"").decode("latin-1")
        request_type = (msg.get(530) or b"").decode("latin-1")
        if self._possible_resend_seen(sid, msg, cl_ord_id):
            return

        def report(response: str, total: int, reject: int | None, text: str | None) -> None:
            fields = mass_cancel_report_fields(
                cl_ord_id, self.exec_ids.next("MC", now_ns), request_type or "7", response,
                total, now_ns, reject_reason=reject, text=text)
            self.reply(session, "r", fields, now_ns, reply_to=msg)

        if not self.ledger.claim(sid, cl_ord_id):
            report("0", 0, 99, f"duplicate ClOrdID {cl_ord_id} for this session")
            return
        result = mass_cancel_requests(msg, self.context(session), self.instruments)
        if isinstance(result, BusinessRefused):
            self._business_reject(session, msg, result.reason, result.text, now_ns)
            return
        if isinstance(result, int):
            text = ("unknown symbol" if result == 1 else
                    f"MassCancelRequestType {request_type} is not supported; use 1 or 7")
            report("0", 0, result, text)
            return
        if not result:
            report(request_type, 0, None, None)
            return
        count = len(result)
        for index, request in enumerate(result):
            if not self._submit_quietly(origin(sid, "q", request_type, index, count), request):
                report("0", 0, 99, "exchange is not accepting requests")
                return
        self._mass[(sid, cl_ord_id)] = 0

    # -- released ticks -------------------------------------------------------------------

    def on_released(self, processed: list) -> None:
        """A durable tick: update the ledger, send every report, then what waited in the
        sessions' lanes for these requests; flush the sessions written to."""
        touched: set[Any] = set()
        self._touched = touched
        now = self.now_ns()
        if processed:
            self._roll_day(processed[-1].command.ts)
        received = self._received_ns
        try:
            for p in processed:
                o = p.origin
                if received and o is not None:
                    at = received.pop((o[0], getattr(p.command, "cl_ord_id", None)), 0)
                    if at:
                        ORDER_PROCESSING_LATENCY_MS.observe((now - at) / 1e6)
                for report in self.reports_of(p):
                    self._send(report, now, touched)
                self.risk_desk.released(p.events)
                self._cancel_if_gone(p.events)
                if o is not None and o[1] in _LANE_KINDS:
                    self._lane_released(o[0], now)
        finally:
            self._touched = None
        self.evict_ended()
        for session in touched:
            self.flush(session)

    # -- ended orders beyond memory -------------------------------------------------------

    def use_status_store(self, store: StatusStore,
                         durable_before: Callable[[], int | None]) -> None:
        """H finds ended orders no longer in memory in ``store``; ``durable_before()`` is the
        seq below which every released command's rows are in it (None: not known yet), so
        only orders whose final state it holds leave memory."""
        self.status_store = store
        self._store_durable = durable_before

    def evict_ended(self) -> int:
        """Keep at most ``max_ended_orders`` ended orders in memory (see the module
        docstring); returns how many were dropped."""
        ledger = self.ledger
        dropped = 0
        if len(ledger.ended) > self.max_ended_orders:
            if self._store_durable is None:
                dropped = ledger.evict_ended(self.max_ended_orders)
            else:
                mark = self._store_durable()
                if mark is not None:
                    dropped = ledger.evict_ended(self.max_ended_orders, mark)
        ENDED_IN_MEMORY.set(len(ledger.ended))
        return dropped

    def retention_start_ns(self, now_ns: int) -> int:
        """The start of the retention window: orders that ended before it are unknown."""
        day = self._day if self._day >= 0 else (now_ns - self.day_offset_ns) // DAY_NS
        return (day - self.retention_days + 1) * DAY_NS + self.day_offset_ns

    def read_status(self, session: Any, msg: FixMessage, query: StatusQuery) -> None:
        """Answer a status request from the store: the session's lane holds everything it
        sends until the read completes (called with an empty lane, see lanes.py)."""
        store = self.status_store
        assert store is not None
        sid = session.settings.session_id
        self.lanes.start_read(sid, msg)
        called = False
        looking_up = True

        def done(row: StoredOrder | None, error: str | None) -> None:
            nonlocal called
            if called:  # a store calling twice is a bug there; the first answer stands
                return
            called = True
            # at once (inside lookup): whoever handles the message flushes; later: we do
            self._read_done(session, msg, row, error, flush=not looking_up)

        store.lookup(query, done)
        looking_up = False

    def _read_done(self, session: Any, msg: FixMessage, row: StoredOrder | None,
                   error: str | None, flush: bool) -> None:
        now = self.now_ns()
        answer = status.stored_status(self, session, msg, row, error, now)
        outer = self._touched
        touched: set[Any] = outer if outer is not None else set()
        self._touched = touched
        try:
            replies, again = self.lanes.read_done(session.settings.session_id, answer)
            for item in replies:
                self._emit(item, now)
            self._handle_again(again, now)
        finally:
            self._touched = outer
        if flush and outer is None:
            for s in touched:
                self.flush(s)

    def set_instrument(self, instrument: Instrument) -> None:
        """An instrument listed or changed: orders and reports use its rules from now on."""
        self.instruments[instrument.symbol] = instrument  # the report builder shares the dict

    def _roll_day(self, ts: int) -> None:
        day = (ts - self.day_offset_ns) // DAY_NS
        if day > self._day:
            if self._day >= 0:
                self.ledger.roll_day(day - self._day)
            self._day = day
            self.ledger.prune_ended((day - self.retention_days + 1) * DAY_NS
                                    + self.day_offset_ns)

    def reports_of(self, p: Any) -> list[Report]:
        """Apply one released (or, at start-up, replayed) command to the ledger and build its
        reports in the order they are sent. The start-up redelivery calls this too, so a
        report rebuilt from the journal is the one the live path made."""
        o = p.origin
        sid = self.ledger.begin(o, p.command)
        reports = self.builder.reports(sid, o, p.events)
        if o is not None and o[1] == "q":
            self._mass_cancel_done(sid, o, p.events, reports)
        risk = self.risk
        maintenance = o is not None and o[1] == MAINTENANCE
        for e in p.events:
            if type(e) in _RISK_EVENTS:
                risk.apply(e)
                if maintenance and type(e) is RiskSettingsChanged:
                    self._maintenance_done(o, e, reports)
            elif maintenance and type(e) is RequestRejected:
                self._maintenance_done(o, e, reports)
            elif type(e) is InstrumentConfigured:
                risk.apply(e)
                self.set_instrument(e.instrument)
            elif type(e) is KillSwitchChanged:
                if e.active:
                    self.killed.add(e.firm)
                    self.kill_canceled[e.firm] = e.canceled
                else:
                    self.killed.discard(e.firm)
        return reports

    def _maintenance_done(self, o: Any, e: Any, out: list[Report]) -> None:
        """The PositionMaintenanceReport (AM) of an AL's released outcome."""
        fields = maintenance_outcome(o, e, self.instruments)
        if fields is not None:
            out.append(Report(str(o[0]), e.account, "AM", fields, copy=False))

    def deliveries(self, report: Report) -> list[tuple[Any, str, list]]:
        """(session, MsgType, fields) of every message ``report`` becomes: the owning
        session's, then a copy (797=Y) per drop-copy session of the account's firm."""
        out: list[tuple[Any, str, list]] = []
        session = self.sessions.get(report.session_id or "")
        if session is not None:
            out.append((session, report.msg_type, report.fields))
        if report.copy and report.msg_type == "8":
            for copy_session in self.drop_copies_of(report.account):
                out.append((copy_session, "8", [*report.fields, (797, "Y")]))
        return out

    def firm_sessions(self, account: str) -> tuple[str, ...] | None:
        """The order-entry session ids of the account's firm (None: no firm owns it)."""
        firm = self.directory.firm_of(account)
        if firm is None:
            return None
        return self._order_entry_ids.get(firm, ())

    def drop_copies_of(self, account: str) -> list[Any]:
        """The drop-copy sessions of the account's firm."""
        return self._drop_copies.get(self.directory.firm_of(account) or "", [])

    def _send(self, report: Report, now: int, touched: set[Any]) -> None:
        for session, msg_type, fields in self.deliveries(report):
            session.send(msg_type, fields, now)
            touched.add(session)

    def _push(self, session: Any, msg_type: str, fields: list) -> None:
        """A position or collateral push (RiskDesk): inside a released tick it is flushed
        with the tick's reports; from a timer, at once."""
        session.send(msg_type, fields, self.now_ns())
        if self._touched is not None:
            self._touched.add(session)
        else:
            self.flush(session)

    def _copy(self, account: str, fields: list, now: int, touched: set[Any]) -> None:
        firm = self.directory.firm_of(account)
        for copy_session in self._drop_copies.get(firm or "", ()):
            copy_session.send("8", [*fields, (797, "Y")], now)
            touched.add(copy_session)

    def _mass_cancel_done(self, sid: str | None, o: Any, events: list,
                          out: list[Report]) -> None:
        """The OrderMassCancelReport of a q request, once its last part is matched."""
        if sid is None:
            return
        request_type, index, count = str(o[2]), int(o[3]), int(o[4])
        for e in events:
            if type(e) is MassCancelDone:
                key = (sid, e.cl_ord_id)
                total = self._mass.get(key, 0) + e.canceled
                if index + 1 < count:
                    self._mass[key] = total
                    continue
                self._mass.pop(key, None)
                fields = mass_cancel_report_fields(
                    e.cl_ord_id, f"MC-{e.exec_id}", request_type, request_type, total, e.ts,
                    symbol=e.symbol if isinstance(e.symbol, str) else None,
                    side=e.side if e.side is not None else None)  # type: ignore[arg-type]
                out.append(Report(sid, "", "r", fields, copy=False))
            elif type(e) is RequestRejected:
                self._mass.pop((sid, e.cl_ord_id), None)
                fields = mass_cancel_report_fields(
                    e.cl_ord_id, f"MC-{e.exec_id}", request_type, "0", 0, e.ts,
                    reject_reason=99, text=e.reason.name.lower().replace("_", " "))
                out.append(Report(sid, "", "r", fields, copy=False))

    def _cancel_if_gone(self, events: list) -> None:
        """Orders accepted for a session that left with cancel-on-disconnect: cancel them."""
        if not self._gone:
            return
        for e in events:
            if type(e) is OrderAccepted:
                view = self.ledger.orders.get(e.order_id)
                if view is not None and view.session_id in self._gone and view.live:
                    self._submit_quietly(origin(view.session_id, "X"), CancelOrder(
                        0, 0, view.account, view.order_id, "",
                        CancelReason.CANCEL_ON_DISCONNECT))

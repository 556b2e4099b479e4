"""OrderEntryApplication: the FIX application layer of order entry (sans-IO, no Twisted).

Theory of operation
-------------------
:meth:`on_message` receives each validated application message of a session. After the
throttle and the session's role are checked, an order message is translated
(:mod:`fixserver.orderentry.translate`) and either refused at once (ExecutionReport 150=8,
OrderCancelReject, BusinessMessageReject, OrderMassCancelReport 531=0: nothing reached the
engine, so nothing needs to be durable first) or submitted to the sequencer pipeline with its
origin (:func:`fixserver.orderentry.ownership.origin`). Status requests (H, AF) are answered
at once from the ledger, which holds only released (durable) state.

The pipeline calls :meth:`on_released` with each durable tick: the ledger is updated, then the
reports are built (:mod:`fixserver.orderentry.reports`) and sent to the owning session and,
for ExecutionReports, to the drop-copy sessions of the account's firm (CopyMsgIndicator 797=Y).
Sending at release happens outside a socket pump, so ``flush`` is called for each session
written to. :meth:`reports_of` and :meth:`deliveries` are the two halves of that path; the
start-up redelivery (:mod:`fixserver.orderentry.redelivery`) runs the journal tail through
them too.

Session life: :meth:`on_logon` reads CancelOnDisconnect (7929) from the Logon;
:meth:`on_logout` cancels the session's live orders if it is set (and orders of the session
released later, until its next logon).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable

from engine.commands import CancelOrder, MassCancel
from engine.events import MassCancelDone, RequestRejected
from engine.instruments import Instrument
from fixserver.admin_messages import business_reject_fields
from fixserver.codec import FixMessage
from fixserver.metrics import ORDER_PROCESSING_LATENCY_MS
from fixserver.orderentry import status
from fixserver.orderentry.controls import Throttle, Verdict
from fixserver.orderentry.firms import FirmDirectory
from fixserver.orderentry.ownership import OrderLedger, origin
from fixserver.orderentry.reports import (
    LocalExecIds,
    Report,
    ReportBuilder,
    cancel_reject_fields,
    mass_cancel_report_fields,
    refused_order_fields,
)
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

_ORDER_TYPES = (b"D", b"F", b"G", b"H", b"q", b"AF")


class _PipelineStopped(Exception):
    pass


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
        self._drop_copies: dict[str, list[Any]] = {}
        for s in self.sessions.values():
            if s.settings.role is SessionRole.DROP_COPY and s.settings.firm:
                self._drop_copies.setdefault(s.settings.firm, []).append(s)

    # -- session life ---------------------------------------------------------------------

    def context(self, session: Any) -> SessionContext:
        settings = session.settings
        return SessionContext(settings.session_id, settings.firm,
                              self.directory.accounts_of(settings.firm), settings.default_stp)

    def on_logon(self, session: Any, logon: FixMessage | None, now_ns: int) -> None:
        """A session logged on; CancelOnDisconnect (7929) on its Logon overrides the config."""
        sid = session.settings.session_id
        self._gone.discard(sid)
        flag = logon.get(7929) if logon is not None else None
        if flag in (b"Y", b"N"):
            self._cancel_on_disconnect[sid] = flag == b"Y"
        else:
            self._cancel_on_disconnect[sid] = session.settings.cancel_on_disconnect

    def on_logout(self, session: Any, now_ns: int) -> None:
        """The session's connection ended (Logout or lost): cancel-on-disconnect."""
        sid = session.settings.session_id
        if not self._cancel_on_disconnect.get(sid):
            return
        self._gone.add(sid)
        for view in self.ledger.live_orders(session_id=sid):
            self._submit_quietly(origin(sid, "X"), CancelOrder(0, 0, view.account,
                                                               view.order_id, ""))

    def _submit_quietly(self, o: Any, request: Any, received_ns: int = 0) -> bool:
        try:
            self.gateway.submit(o, request)
        except Exception:  # the pipeline is stopped: nothing more can be canceled or entered
            return False
        if received_ns:  # order_processing_latency_ms is observed when its tick is released
            self._received_ns[(o[0], request.cl_ord_id)] = received_ns
        return True

    # -- kill switch ----------------------------------------------------------------------

    def set_kill_switch(self, firm: str, active: bool) -> int:
        """Switch a firm's kill switch; on: cancel all its orders. Returns the mass cancels
        submitted (one per account)."""
        if firm not in self.directory.firms:
            raise KeyError(f"unknown firm {firm}")
        if not active:
            self.killed.discard(firm)
            return 0
        self.killed.add(firm)
        n = 0
        for account in self.directory.accounts_of(firm):
            if self._submit_quietly(origin("", "K", firm), MassCancel(0, 0, account)):
                n += 1
        return n

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
        mt = msg.msg_type
        if mt not in _ORDER_TYPES:
            self._business_reject(session, msg, BIZ_UNSUPPORTED, None, now_ns)
            return
        if settings.role is not SessionRole.ORDER_ENTRY:
            self._business_reject(session, msg, BIZ_UNSUPPORTED,
                                  f"a {settings.role.value} session cannot send orders", now_ns)
            return
        if mt == b"D":
            self._new_order(session, msg, now_ns)
        elif mt == b"F" or mt == b"G":
            self._cancel_or_replace(session, msg, now_ns)
        elif mt == b"q":
            self._mass_cancel(session, msg, now_ns)
        elif mt == b"H":
            status.order_status(self, session, msg, now_ns)
        else:
            status.mass_status(self, session, msg, now_ns)

    def _business_reject(self, session: Any, msg: FixMessage, reason: int, text: str | None,
                         now_ns: int) -> None:
        session.send("j", business_reject_fields(msg, reason, text), now_ns, reply_to=msg)

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
        session.send("8", fields, now_ns, reply_to=msg)
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
            session.send("9", fields, now_ns, reply_to=msg)

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
            session.send("r", fields, now_ns, reply_to=msg)

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
        """A durable tick: update the ledger, send every report, flush the sessions."""
        touched: set[Any] = set()
        now = self.now_ns()
        received = self._received_ns
        for p in processed:
            o = p.origin
            if received and o is not None:
                at = received.pop((o[0], getattr(p.command, "cl_ord_id", None)), 0)
                if at:
                    ORDER_PROCESSING_LATENCY_MS.observe((now - at) / 1e6)
            for report in self.reports_of(p):
                self._send(report, now, touched)
            self._cancel_if_gone(p.events)
        for session in touched:
            self.flush(session)

    def reports_of(self, p: Any) -> list[Report]:
        """Apply one released (or, at start-up, replayed) command to the ledger and build its
        reports in the order they are sent. The start-up redelivery calls this too, so a
        report rebuilt from the journal is the one the live path made."""
        o = p.origin
        sid = self.ledger.begin(o, p.command)
        reports = self.builder.reports(sid, o, p.events)
        if o is not None and o[1] == "q":
            self._mass_cancel_done(sid, o, p.events, reports)
        return reports

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

    def drop_copies_of(self, account: str) -> list[Any]:
        """The drop-copy sessions of the account's firm."""
        return self._drop_copies.get(self.directory.firm_of(account) or "", [])

    def _send(self, report: Report, now: int, touched: set[Any]) -> None:
        for session, msg_type, fields in self.deliveries(report):
            session.send(msg_type, fields, now)
            touched.add(session)

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
            if type(e).__name__ == "OrderAccepted":
                view = self.ledger.orders.get(e.order_id)
                if view is not None and view.session_id in self._gone and view.live:
                    self._submit_quietly(origin(view.session_id, "X"),
                                         CancelOrder(0, 0, view.account, view.order_id, ""))

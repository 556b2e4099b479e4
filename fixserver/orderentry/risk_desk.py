"""RiskDesk: positions and collateral for order-entry and drop-copy sessions.

Theory of operation
-------------------
The desk reads a :class:`engine.risk.readmodel.RiskReadModel` that the application feeds with
*released* (durable) events only, so what a PositionReport (AP) or CollateralReport (BA)
says is journaled. It answers, at once, RequestForPositions (AN: AO, then one AP per
position) and CollateralInquiry (BB: one BA per account and settlement asset, or a
CollateralInquiryAck BG when refused or unsubscribed), and keeps their subscriptions
(SubscriptionRequestType 263=1; 263=2 with the same PosReqID / CollInquiryID ends one; a
session's subscriptions end when it logs out).

Pushes. After each released command (:meth:`released`, called once the model holds the
command's events): an AP for every subscribed position the command changed (a
PositionChanged), a BA for every subscribed account and asset it changed (AccountChanged);
drop-copy sessions that are logged on receive the same for every account of their firm
(325=Y, 797=Y, without a request id). A mark move (MarkPriceUpdated) changes the value of
every open position in the symbol without an event per position: those pushes are paced,
at most one per position (AP) or account and asset (BA) per ``interval`` seconds per
recipient (:class:`PushPacer`); the first goes at once, a later one waits for the end of the
interval and then shows the view as of then. An event-driven push resets its key's interval.
Time is ``now_ns`` and timers are ``call_later`` (both injected: task.Clock in tests).

Margin calls. Each released ``MarginCall`` (the engine emits one per crossing of a warning
level) becomes one unsolicited CollateralReport (BA with MarginCallLevel 7944, see
:func:`fixserver.orderentry.risk_reports.margin_call_fields`) to every logged-on
order-entry session of the account's firm and its logged-on drop copies, subscribed or not.

Pushes go only to sessions logged on: a report of a state is worth nothing when stale, and a
session away would otherwise store one per mark move for its resend (AN/BB after the logon
give the state).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any, Callable, NamedTuple

from engine.events import AccountChanged, MarginCall, MarkPriceUpdated, PositionChanged
from engine.instruments import Instrument
from engine.risk.readmodel import RiskReadModel
from engine.risk.views import PositionView
from fixserver.codec import FixMessage
from fixserver.orderentry.firms import FirmDirectory
from fixserver.orderentry.reports import LocalExecIds
from fixserver.orderentry.risk_reports import (
    COLL_COMPLETED,
    COLL_OTHER,
    COLL_REJECTED,
    COLL_SUCCESSFUL,
    COLL_UNAUTHORIZED,
    POS_COMPLETED,
    POS_INVALID,
    POS_NONE_FOUND,
    POS_NOT_AUTHORIZED,
    POS_NOT_SUPPORTED,
    POS_REJECTED,
    POS_VALID,
    Fields,
    collateral_ack_fields,
    collateral_report_fields,
    margin_call_fields,
    position_report_fields,
    positions_ack_fields,
)

Answer = tuple[str, Fields]  # (MsgType, body)


class PushPacer:
    """At most one paced push per key per ``interval`` seconds (pure; time is an argument).

    :meth:`plan` says when a paced push of ``key`` may go: 0.0 now, a delay, or None when one
    is already waiting; :meth:`sent` records any push of the key (paced or not) and
    :meth:`fired` that a waiting one went (or was dropped).
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last: dict[Hashable, float] = {}
        self.waiting: set[Hashable] = set()

    def plan(self, key: Hashable, now: float) -> float | None:
        if key in self.waiting:
            return None
        last = self.last.get(key)
        if last is None or now - last >= self.interval:
            return 0.0
        self.waiting.add(key)
        return last + self.interval - now

    def sent(self, key: Hashable, now: float) -> None:
        self.last[key] = now

    def fired(self, key: Hashable) -> None:
        self.waiting.discard(key)

    def forget(self, keys: Iterable[Hashable]) -> None:
        for key in keys:
            self.last.pop(key, None)
            self.waiting.discard(key)


class PositionSub(NamedTuple):
    """An AN subscription: the account's positions (one symbol, or all when None)."""

    session: Any
    req_id: str
    account: str
    symbol: str | None


class CollateralSub(NamedTuple):
    """A BB subscription: these accounts' collateral (one asset, or all when None)."""

    session: Any
    inquiry_id: str
    accounts: tuple[str, ...]
    asset: str | None


def _text(msg: FixMessage, tag: int) -> str:
    value = msg.get(tag)
    return value.decode("latin-1") if value else ""


class RiskDesk:
    """See the module docstring. ``send(session, msg_type, fields)`` sends a push;
    ``drop_copies`` maps a firm to its drop-copy sessions."""

    def __init__(
        self, model: RiskReadModel, instruments: dict[str, Instrument],
        directory: FirmDirectory, drop_copies: dict[str, list[Any]],
        send: Callable[[Any, str, Fields], None], now_ns: Callable[[], int],
        call_later: Callable[[float, Callable[[], None]], Any] | None,
        interval: float = 1.0, *, order_entry: dict[str, list[Any]] | None = None,
    ) -> None:
        self.model = model
        self.instruments = instruments  # shared with the application (listings update it)
        self.directory = directory
        self.drop_copies = drop_copies
        #: firm -> its order-entry sessions (margin calls go to those logged on)
        self.order_entry = order_entry if order_entry is not None else {}
        self.send = send
        self.now_ns = now_ns
        self.call_later = call_later
        self.pacer = PushPacer(interval)
        self.ids = LocalExecIds()
        self.online: set[str] = set()
        self.position_subs: dict[tuple[str, str], PositionSub] = {}
        self.collateral_subs: dict[tuple[str, str], CollateralSub] = {}
        self._timers: dict[Hashable, Any] = {}

    # -- session life -----------------------------------------------------------------------

    def logged_on(self, session: Any) -> None:
        self.online.add(session.settings.session_id)

    def logged_off(self, session: Any) -> None:
        """The session's subscriptions end; nothing more is pushed to it."""
        sid = session.settings.session_id
        self.online.discard(sid)
        for key in [k for k in self.position_subs if k[0] == sid]:
            del self.position_subs[key]
        for key in [k for k in self.collateral_subs if k[0] == sid]:
            del self.collateral_subs[key]
        self._drop_keys(lambda k: k[1] == sid)

    def _drop_keys(self, which: Callable[[tuple], bool]) -> None:
        keys = [k for k in self.pacer.last if which(k)]  # type: ignore[arg-type]
        keys += [k for k in self._timers if which(k) and k not in keys]  # type: ignore[arg-type]
        for key in keys:
            timer = self._timers.pop(key, None)
            if timer is not None and timer.active():
                timer.cancel()
        self.pacer.forget(keys)

    # -- views ------------------------------------------------------------------------------

    def decimals(self, asset: str) -> int:
        """The settlement asset's decimals (from the instruments settling in it)."""
        for inst in self.instruments.values():
            if inst.settlement_asset == asset and inst.margined:
                return inst.settlement_decimals
        for inst in self.instruments.values():
            if inst.settlement_asset == asset:
                return inst.settlement_decimals
        return 0

    def positions(self, account: str, symbol: str | None) -> list[PositionView]:
        """The account's position views: one symbol, or every position record it has
        (opened at some point or with settings changed), by asset then symbol."""
        model = self.model
        if symbol is not None:
            view = model.position_view(account, symbol)
            return [view] if view is not None else []
        mine = model.by_account.get(account, {})
        out: list[PositionView] = []
        for asset in sorted({model.params[s].asset for s in mine}):
            out += model.view(account, asset)[1]
        return out

    def _assets(self, account: str, asset: str | None) -> list[str]:
        known = {p.asset for p in self.model.params.values()} | set(self.model.assets_of(account))
        return sorted(a for a in known if asset is None or a == asset)

    def _ap(self, v: PositionView, ts: int, **kw: Any) -> Fields:
        return position_report_fields(v, self.instruments[v.symbol], self.ids.next("AP", ts),
                                      ts, **kw)

    def _ba(self, account: str, asset: str, ts: int, **kw: Any) -> Fields:
        view, _positions = self.model.view(account, asset)
        return collateral_report_fields(view, self.decimals(asset), self.ids.next("BA", ts),
                                        **kw)

    # -- requests (answered at once, from released state) ------------------------------------

    def positions_request(self, session: Any, msg: FixMessage, now_ns: int) -> list[Answer]:
        """RequestForPositions (AN) -> AO and the APs (see module docstring)."""
        settings = session.settings
        sid = settings.session_id
        req_id = _text(msg, 710)
        account = _text(msg, 1)
        symbol = _text(msg, 55) or None
        sub_type = _text(msg, 263) or "0"

        def ack(result: int, status: int, text: str | None = None,
                total: int | None = None) -> Answer:
            return "AO", positions_ack_fields(self.ids.next("AO", now_ns), req_id, result,
                                              status, account, total=total, symbol=symbol,
                                              text=text)

        if _text(msg, 724) != "0":
            return [ack(POS_NOT_SUPPORTED, POS_REJECTED,
                        "PosReqType (724) must be 0 (positions)")]
        if sub_type not in ("0", "1", "2"):
            return [ack(POS_INVALID, POS_REJECTED,
                        "SubscriptionRequestType (263) must be 0, 1 or 2")]
        if sub_type == "2":
            if self.position_subs.pop((sid, req_id), None) is None:
                return [ack(POS_INVALID, POS_REJECTED,
                            f"no position subscription with PosReqID {req_id}")]
            self._drop_keys(lambda k: k[0] == "AP" and k[1] == sid and k[2] == req_id)
            return [ack(POS_VALID, POS_COMPLETED, "subscription ended", total=0)]
        if account not in self.directory.accounts_of(settings.firm):
            return [ack(POS_NOT_AUTHORIZED, POS_REJECTED,
                        f"account {account} is not an account of firm {settings.firm}")]
        if symbol is not None:
            inst = self.instruments.get(symbol)
            if inst is None:
                return [ack(POS_INVALID, POS_REJECTED, f"unknown symbol {symbol}")]
            if not inst.margined or symbol not in self.model.params:
                return [ack(POS_INVALID, POS_REJECTED,
                            f"{symbol} is not a margined instrument: it has no positions "
                            "to report here")]
        if sub_type == "1":
            if (sid, req_id) in self.position_subs:
                return [ack(POS_INVALID, POS_REJECTED,
                            f"PosReqID {req_id} is already a subscription")]
            self.position_subs[(sid, req_id)] = PositionSub(session, req_id, account, symbol)
        views = self.positions(account, symbol)
        if not views:
            return [ack(POS_NONE_FOUND, POS_COMPLETED, "no positions", total=0)]
        answers = [ack(POS_VALID, POS_COMPLETED, total=len(views))]
        for v in views:
            answers.append(("AP", self._ap(v, now_ns, req_id=req_id, sub_type=sub_type,
                                           total=len(views))))
        return answers

    def collateral_inquiry(self, session: Any, msg: FixMessage, now_ns: int) -> list[Answer]:
        """CollateralInquiry (BB) -> one BA per account and asset, or a BG."""
        settings = session.settings
        sid = settings.session_id
        inquiry_id = _text(msg, 909)
        account = _text(msg, 1) or None
        asset = _text(msg, 15) or None
        sub_type = _text(msg, 263) or "0"

        def refuse(result: int, text: str) -> list[Answer]:
            return [("BG", collateral_ack_fields(inquiry_id, COLL_REJECTED, result,
                                                 account=account, text=text))]

        if sub_type not in ("0", "1", "2"):
            return refuse(COLL_OTHER, "SubscriptionRequestType (263) must be 0, 1 or 2")
        if sub_type == "2":
            if self.collateral_subs.pop((sid, inquiry_id), None) is None:
                return refuse(COLL_OTHER,
                              f"no collateral subscription with CollInquiryID {inquiry_id}")
            self._drop_keys(lambda k: k[0] == "BA" and k[1] == sid and k[2] == inquiry_id)
            return [("BG", collateral_ack_fields(inquiry_id, COLL_COMPLETED, COLL_SUCCESSFUL,
                                                 account=account, total=0,
                                                 text="subscription ended"))]
        firm_accounts = self.directory.accounts_of(settings.firm)
        if account is not None and account not in firm_accounts:
            return refuse(COLL_UNAUTHORIZED,
                          f"account {account} is not an account of firm {settings.firm}")
        accounts = (account,) if account is not None else firm_accounts
        pairs = [(a, s) for a in accounts for s in self._assets(a, asset)]
        if not pairs:
            return refuse(COLL_OTHER, f"no collateral in {asset}" if asset else
                          "no margined instruments: no collateral to report")
        if sub_type == "1":
            if not inquiry_id:
                return refuse(COLL_OTHER, "CollInquiryID (909) is required to subscribe")
            if (sid, inquiry_id) in self.collateral_subs:
                return refuse(COLL_OTHER,
                              f"CollInquiryID {inquiry_id} is already a subscription")
            self.collateral_subs[(sid, inquiry_id)] = CollateralSub(session, inquiry_id,
                                                                    accounts, asset)
        total = len(pairs)
        return [("BA", self._ba(a, s, now_ns, inquiry_id=inquiry_id or None, total=total,
                                last=i == total - 1))
                for i, (a, s) in enumerate(pairs)]

    # -- pushes -----------------------------------------------------------------------------

    def released(self, events: Iterable[Any]) -> None:
        """Push what one released command changed (the model already holds its events)."""
        positions: list[tuple[str, str, int]] = []
        accounts: list[tuple[str, str, int]] = []
        marks: list[str] = []
        calls = 0
        for e in events:
            t = type(e)
            if t is PositionChanged:
                positions.append((e.account, e.symbol, e.ts))
            elif t is AccountChanged:
                accounts.append((e.account, e.asset, e.ts))
            elif t is MarkPriceUpdated:
                marks.append(e.symbol)
            elif t is MarginCall:
                calls += 1
                self._margin_call(e, calls)
        if not (positions or accounts or marks):
            return
        if not (self.position_subs or self.collateral_subs or self._copies_online()):
            return
        for account, symbol, ts in positions:
            self._position_changed(account, symbol, ts)
        for account, asset, ts in accounts:
            self._account_changed(account, asset, ts)
        for symbol in marks:
            self._mark_moved(symbol)

    def _margin_call(self, call: MarginCall, n: int) -> None:
        """The ``n``-th MarginCall of a released command: an unsolicited BA (CollRptID
        ``MC-<seq>-<n>``, the same for every recipient) to the logged-on order-entry
        sessions of the account's firm and its logged-on drop copies (797=Y). The engine
        emits one MarginCall per crossing of a warning level, so this is one warning per
        crossing, never one per tick or mark move."""
        firm = self.directory.firm_of(call.account)
        if firm is None:
            return
        online = self.online
        sessions = [s for s in self.order_entry.get(firm, ())
                    if s.settings.session_id in online]
        copies = self._copies_of(call.account)
        if not sessions and not copies:
            return
        view, _positions = self.model.view(call.account, call.asset)
        rpt_id = f"MC-{call.seq}-{n}"
        decimals = self.decimals(call.asset)
        if sessions:
            fields = margin_call_fields(view, decimals, rpt_id, call)
            for session in sessions:
                self.send(session, "BA", fields)
        if copies:
            fields = margin_call_fields(view, decimals, rpt_id, call, copy=True)
            for session in copies:
                self.send(session, "BA", fields)

    def _copies_online(self) -> bool:
        return any(s.settings.session_id in self.online
                   for sessions in self.drop_copies.values() for s in sessions)

    def _copies_of(self, account: str) -> list[Any]:
        sessions = self.drop_copies.get(self.directory.firm_of(account) or "", ())
        return [s for s in sessions if s.settings.session_id in self.online]

    def _position_changed(self, account: str, symbol: str, ts: int) -> None:
        view = None
        for sub in list(self.position_subs.values()):
            if sub.account != account or sub.symbol not in (None, symbol):
                continue
            sid = sub.session.settings.session_id
            if sid not in self.online:
                continue
            view = view or self.model.position_view(account, symbol)
            if view is not None:
                self._push_now(("AP", sid, sub.req_id, account, symbol), sub.session, "AP",
                               self._ap(view, ts, req_id=sub.req_id))
        for session in self._copies_of(account):
            view = view or self.model.position_view(account, symbol)
            if view is not None:
                self._push_now(("APc", session.settings.session_id, "", account, symbol),
                               session, "AP", self._ap(view, ts, copy=True))

    def _account_changed(self, account: str, asset: str, ts: int) -> None:
        for sub in list(self.collateral_subs.values()):
            if account not in sub.accounts or sub.asset not in (None, asset):
                continue
            sid = sub.session.settings.session_id
            if sid in self.online:
                self._push_now(("BA", sid, sub.inquiry_id, account, asset), sub.session, "BA",
                               self._ba(account, asset, ts, inquiry_id=sub.inquiry_id or None))
        for session in self._copies_of(account):
            self._push_now(("BAc", session.settings.session_id, "", account, asset), session,
                           "BA", self._ba(account, asset, ts, copy=True))

    def _open(self, account: str, symbol: str) -> bool:
        p = self.model.positions.get((account, symbol))
        return p is not None and p.size != 0

    def _mark_moved(self, symbol: str) -> None:
        prm = self.model.params.get(symbol)
        if prm is None:
            return
        asset = prm.asset
        for sub in list(self.position_subs.values()):
            if sub.symbol in (None, symbol) and self._open(sub.account, symbol):
                self._paced(("AP", sub.session.settings.session_id, sub.req_id, sub.account,
                             symbol), sub.session)
        for csub in list(self.collateral_subs.values()):
            if csub.asset not in (None, asset):
                continue
            for account in csub.accounts:
                if self._open(account, symbol):
                    self._paced(("BA", csub.session.settings.session_id, csub.inquiry_id,
                                 account, asset), csub.session)
        for firm, sessions in self.drop_copies.items():
            online = [s for s in sessions if s.settings.session_id in self.online]
            if not online:
                continue
            for account in self.directory.accounts_of(firm):
                if not self._open(account, symbol):
                    continue
                for session in online:
                    sid = session.settings.session_id
                    self._paced(("APc", sid, "", account, symbol), session)
                    self._paced(("BAc", sid, "", account, asset), session)

    def _push_now(self, key: tuple, session: Any, msg_type: str, fields: Fields) -> None:
        """An event-driven push: sent now; a paced one waiting for the key is not needed."""
        timer = self._timers.pop(key, None)
        if timer is not None and timer.active():
            timer.cancel()
        self.pacer.fired(key)
        self.pacer.sent(key, self.now_ns() / 1e9)
        self.send(session, msg_type, fields)

    def _paced(self, key: tuple, session: Any) -> None:
        now = self.now_ns() / 1e9
        delay = self.pacer.plan(key, now)
        if delay is None:
            return
        if delay <= 0:
            self._fire(key, session)
            return
        if self.call_later is None:  # no timers: the next mark move after the interval
            self.pacer.fired(key)
            return
        self._timers[key] = self.call_later(delay, lambda: self._due(key, session))

    def _due(self, key: tuple, session: Any) -> None:
        self._timers.pop(key, None)
        self.pacer.fired(key)
        self._fire(key, session)

    def _fire(self, key: tuple, session: Any) -> None:
        """Send the paced push of ``key`` with the view as of now, if still wanted."""
        kind, sid, req, account, what = key
        if sid not in self.online:
            return
        ts = self.now_ns()
        if kind == "AP" or kind == "APc":
            if kind == "AP" and (sid, req) not in self.position_subs:
                return
            view = self.model.position_view(account, what)
            if view is None:
                return
            fields = (self._ap(view, ts, req_id=req) if kind == "AP"
                      else self._ap(view, ts, copy=True))
            msg_type = "AP"
        else:
            if kind == "BA" and (sid, req) not in self.collateral_subs:
                return
            fields = (self._ba(account, what, ts, inquiry_id=req or None) if kind == "BA"
                      else self._ba(account, what, ts, copy=True))
            msg_type = "BA"
        self.pacer.sent(key, ts / 1e9)
        self.send(session, msg_type, fields)

"""The exchange's admin actions: what each one reads or changes, and how it is journaled.

Theory of operation
-------------------
Every action that changes something goes through the journal, with the operator's name
(the admin token's) in the request's *origin* ``("", kind, ...)``: an empty session id, so
the FIX layer's session bookkeeping ignores it (:func:`fixserver.orderentry.ownership.
origin_session`), in the sequencer lane ``""`` (``OrderEntryService._lane_of``):

- engine state changes are the engine commands that exist for them, origin
  ``("", "A", who, action)``: SetInstrumentStatus, SetAccountStp; the kill switch goes
  through ``OrderEntryApplication.set_kill_switch`` (origin ``("", "K", firm, who)``), which
  also refuses the firm's new orders at once;
- actions outside the engine (log a session out, set its sequence numbers, snapshot now)
  journal an :class:`engine.commands.AdminAction` audit record (who, action, detail as
  JSON), submitted in the same reactor turn as the action itself.

The request is matched at once (the pipeline ticks) and the answer waits until its tick is
durable and released (:class:`ReleaseWatch`), so an answered action survives a crash; the
answer carries what the engine said (a kill switch's canceled orders, an engine reject). If
the journal fails meanwhile the answer is 500: nothing done after the failure is durable.

Reads (sessions, instruments, kill switches, state hash) are taken between ticks on the
reactor thread. :meth:`ExchangeAdmin.router` is the one table of routes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred

from engine import MatchingEngine
from engine.commands import AdminAction, SetAccountStp, SetInstrumentStatus
from engine.enums import InstrumentStatus, StpMode
from engine.events import KillSwitchChanged, RequestRejected
from fixserver.admin.router import AdminCall, AdminError, AdminRouter, Answer
from fixserver.instrument_config import INSTRUMENT_KEYS, REQUIRED_KEYS, build_instrument
from fixserver.journal_file import snapshot_name
from fixserver.orderentry.firms import FirmDirectory
from fixserver.orderentry.instrument_sync import instrument_command
from fixserver.orderentry.ownership import origin
from fixserver.session import Session

#: POST /admin/instruments parameters -> [INSTRUMENT] keys (fixserver.instrument_config)
_INSTRUMENT_PARAMS = {
    "symbol": "Symbol", "tick_size": "TickSize", "lot_size": "LotSize",
    "multiplier": "Multiplier", "min_qty": "MinQty", "max_qty": "MaxQty",
    "maker_fee_ppm": "MakerFeePpm", "taker_fee_ppm": "TakerFeePpm",
    "price_band_ppm": "PriceBandPpm", "reference_price": "ReferencePrice", "status": "Status",
    "settlement_asset": "SettlementAsset", "settlement_decimals": "SettlementDecimals",
    "max_leverage": "MaxLeverage", "default_leverage": "DefaultLeverage",
    "risk_tiers": "RiskTiers", "mark_interval_ms": "MarkIntervalMs",
    "mark_smoothing": "MarkSmoothing", "mark_basis_cap_ppm": "MarkBasisCapPpm",
    "liquidation_fee_ppm": "LiquidationFeePpm", "funding_interval_s": "FundingIntervalSeconds",
    "funding_interest_rate": "FundingInterestRate", "funding_clamp": "FundingClamp",
    "funding_cap": "FundingCap", "impact_notional": "ImpactNotional",
    "margin_call_levels": "MarginCallLevels",
}
_PARAM_OF = {key: param for param, key in _INSTRUMENT_PARAMS.items()}

#: API names of instrument statuses and self-trade-prevention modes (lower case, dashes)
STATUS_NAMES = {s.name.lower().replace("_", "-"): s for s in InstrumentStatus}
STP_NAMES = {m.name.lower().replace("_", "-"): m for m in StpMode}
DEFAULT_LOGOUT_TEXT = "logged out by the exchange operator"


def status_name(status: Any) -> str:
    return str(getattr(status, "name", status)).lower().replace("_", "-")


# -- the seams (what the actions use of the exchange) -------------------------------------


class SequencerPosition(Protocol):
    def position(self) -> tuple[int, int, int]: ...


class PipelineControl(Protocol):
    """What the actions use of :class:`fixserver.pipeline.OrderPipeline`."""

    failure: Any
    snapshots_written: int

    @property
    def engine(self) -> MatchingEngine: ...

    @property
    def sequencer(self) -> SequencerPosition: ...

    @property
    def snapshot_in_progress(self) -> bool: ...

    def submit(self, origin: Any, request: Any) -> None: ...

    def tick(self) -> None: ...

    def when_idle(self) -> Deferred: ...

    def request_snapshot(self) -> None: ...

    def when_snapshots_written(self) -> Deferred: ...

    def subscribe(self, callback: Callable[[list], None]) -> None: ...


class KillSwitchControl(Protocol):
    """What the actions use of :class:`fixserver.orderentry.application.OrderEntryApplication`."""

    killed: set[str]
    directory: FirmDirectory

    def set_kill_switch(self, firm: str, active: bool, who: str = "") -> tuple: ...


class Connection(Protocol):
    """A logged-on session's connection (:class:`fixserver.protocol.FixProtocol`)."""

    @property
    def peer(self) -> str: ...

    def logout(self, text: str) -> None: ...


class HostView(Protocol):
    """The logged-on sessions (:class:`fixserver.protocol.SessionHost`)."""

    @property
    def bound(self) -> Mapping[Session, Connection]: ...


# -- released ticks -----------------------------------------------------------------------


class ReleaseWatch:
    """Deferreds fired with a request's events once the tick that matched it is durable and
    released (found by the identity of the origin it was submitted with)."""

    def __init__(self, pipeline: PipelineControl) -> None:
        self._pipeline = pipeline
        self._waiting: dict[int, tuple[Any, Deferred]] = {}
        pipeline.subscribe(self._on_released)

    def watch(self, o: Any) -> Deferred:
        """Match the inbox now (``o``'s request is in it); fires with its events."""
        d: Deferred = Deferred()
        self._waiting[id(o)] = (o, d)
        self._pipeline.tick()
        self._pipeline.when_idle().addCallback(self._check_failed)
        return d

    def _on_released(self, processed: list) -> None:
        waiting = self._waiting
        if not waiting:  # every tick comes through here: nothing to do is the common case
            return
        for p in processed:
            entry = waiting.get(id(p.origin))
            if entry is not None and entry[0] is p.origin:
                del waiting[id(p.origin)]
                entry[1].callback(p.events)

    def _check_failed(self, _: Any) -> None:
        if self._pipeline.failure is None:
            return
        waiting, self._waiting = self._waiting, {}
        for _o, d in waiting.values():
            d.errback(AdminError(500, "the journal failed: the action is not durable and the "
                                      "exchange must be restarted"))


# -- the actions --------------------------------------------------------------------------


class ExchangeAdmin:
    """The admin actions of an order-entry exchange (see module docstring)."""

    def __init__(self, pipeline: PipelineControl, app: KillSwitchControl,
                 sessions: Sequence[Session], host: Callable[[], HostView]) -> None:
        self.pipeline = pipeline
        self.app = app
        self.sessions = list(sessions)
        self.host = host  # the server builds its host after the application
        self.released = ReleaseWatch(pipeline)

    def router(self) -> AdminRouter:
        """The route table: one line per action."""
        r = AdminRouter()
        r.add("GET", "/admin/state-hash", "state-hash",
              "the last matched seq and the engine's state hash", self.state_hash)
        r.add("GET", "/admin/sessions", "sessions",
              "every configured session: logged on or not, next sequence numbers",
              self.list_sessions)
        r.add("POST", "/admin/sessions/logout", "logout",
              "log a session out (Logout with the reason as Text)", self.logout,
              ("session", "reason"))
        r.add("POST", "/admin/sessions/sequence", "set-seq",
              "set a session's next sequence numbers (only while it is not logged on)",
              self.set_sequence, ("session", "next_sender_seq", "next_target_seq"))
        r.add("GET", "/admin/instruments", "instruments",
              "the listed instruments and their trading status", self.list_instruments)
        r.add("POST", "/admin/instruments", "list-instrument",
              "list a new instrument (its [INSTRUMENT] keys in snake_case; add the same "
              "section to the config before the next restart)", self.list_instrument,
              tuple(_INSTRUMENT_PARAMS))
        r.add("POST", "/admin/instruments/status", "instrument-status",
              "set an instrument's status: " + ", ".join(STATUS_NAMES),
              self.set_instrument_status, ("symbol", "status"))
        r.add("GET", "/admin/kill-switch", "kill-switches",
              "the firms and which of them have their kill switch on", self.kill_switches)
        r.add("POST", "/admin/kill-switch", "kill-switch",
              "turn a firm's kill switch on (cancel its orders, refuse new ones) or off",
              self.kill_switch, ("firm", "active"))
        r.add("POST", "/admin/accounts/stp", "account-stp",
              "set an account's default self-trade prevention: " + ", ".join(STP_NAMES),
              self.set_account_stp, ("account", "mode"))
        r.add("POST", "/admin/snapshot", "snapshot",
              "take an engine snapshot now (answers once it is written)", self.snapshot)
        return r

    # -- journaling -------------------------------------------------------------------------

    def _submit(self, o: Any, request: Any) -> None:
        try:
            self.pipeline.submit(o, request)
        except Exception as exc:  # PipelineStopped: shutting down, or the journal failed
            raise AdminError(503, f"the exchange is not accepting commands: {exc}") from exc

    def _journal(self, who: str, action: str, request: Any) -> Deferred:
        """Submit an engine command from the operator; fires with its events once durable."""
        o = origin("", "A", who, action)
        self._submit(o, request)
        return self.released.watch(o)

    def _submit_audit(self, who: str, action: str, detail: dict) -> tuple:
        """Submit the audit record of an action outside the engine; returns its origin."""
        o = origin("", "A", who, action)
        text = json.dumps(detail, sort_keys=True, separators=(",", ":"))
        self._submit(o, AdminAction(0, 0, who, action, text))
        return o

    def _audit(self, who: str, action: str, detail: dict) -> Deferred:
        """Journal the audit record of an action outside the engine (fires once durable)."""
        return self.released.watch(self._submit_audit(who, action, detail))

    # -- reads --------------------------------------------------------------------------------

    def state_hash(self, call: AdminCall) -> Answer:
        """Read between ticks: an offline replay of the journal up to ``seq`` hashes the same."""
        seq = self.pipeline.sequencer.position()[0] - 1
        return {"seq": seq, "state_hash": self.pipeline.engine.state_hash()}

    def list_sessions(self, call: AdminCall) -> Answer:
        bound = self.host().bound
        rows = []
        for s in self.sessions:
            settings = s.settings
            connection = bound.get(s)
            rows.append({
                "id": settings.session_id,
                "target_comp_id": settings.target_comp_id,
                "role": settings.role.value,
                "firm": settings.firm,
                "logged_on": connection is not None,
                "peer": connection.peer if connection is not None else None,
                "next_sender_seq": s.store.next_sender_seq(),
                "next_target_seq": s.store.next_target_seq(),
            })
        return {"sessions": rows}

    def list_instruments(self, call: AdminCall) -> Answer:
        engine = self.pipeline.engine
        rows = []
        for symbol in sorted(engine.markets):
            inst = engine.markets[symbol].instrument
            rows.append({"symbol": symbol, "status": status_name(engine.status(symbol)),
                         "tick_size": inst.tick_size, "lot_size": inst.lot_size,
                         "max_leverage": inst.max_leverage,
                         "settlement_asset": inst.settlement_asset if inst.margined else None})
        return {"instruments": rows}

    def kill_switches(self, call: AdminCall) -> Answer:
        return {"firms": sorted(self.app.directory.firms), "killed": sorted(self.app.killed)}

    # -- sessions -------------------------------------------------------------------------

    def _session(self, call: AdminCall) -> Session:
        """The session a ``session`` parameter names: its id or its TargetCompID."""
        name = call.params.text("session")
        found = [s for s in self.sessions if s.settings.session_id == name]
        if not found:
            found = [s for s in self.sessions if s.settings.target_comp_id == name]
        if len(found) != 1:
            known = ", ".join(s.settings.session_id for s in self.sessions)
            what = "names more than one session" if found else "is not a configured session"
            raise AdminError(404, f"{name} {what} (sessions: {known})")
        return found[0]

    def logout(self, call: AdminCall) -> Deferred:
        session = self._session(call)
        sid = session.settings.session_id
        reason = call.params.text("reason", required=False) or DEFAULT_LOGOUT_TEXT
        connection = self.host().bound.get(session)
        if connection is None:
            raise AdminError(409, f"session {sid} is not logged on")
        d = self._audit(call.who, "logout", {"session": sid, "reason": reason})
        connection.logout(reason)
        return d.addCallback(lambda _: {"session": sid, "logout_sent": True, "reason": reason,
                                        "by": call.who})

    def set_sequence(self, call: AdminCall) -> Deferred:
        session = self._session(call)
        sid = session.settings.session_id
        sender = call.params.integer("next_sender_seq", required=False, minimum=1)
        target = call.params.integer("next_target_seq", required=False, minimum=1)
        if sender is None and target is None:
            raise AdminError(400, "give next_sender_seq and/or next_target_seq")
        if session.connection is not None or self.host().bound.get(session) is not None:
            raise AdminError(409, f"session {sid} is logged on: log it out first")
        store = session.store
        previous = {"next_sender_seq": store.next_sender_seq(),
                    "next_target_seq": store.next_target_seq()}
        detail: dict[str, Any] = {"session": sid, "previous": previous}
        if sender is not None:
            detail["next_sender_seq"] = sender
        if target is not None:
            detail["next_target_seq"] = target
        d = self._audit(call.who, "set-seq", detail)
        if sender is not None:
            store.set_next_sender_seq(sender)
        if target is not None:
            store.set_next_target_seq(target)
        answer = {"session": sid, "next_sender_seq": store.next_sender_seq(),
                  "next_target_seq": store.next_target_seq(), "previous": previous,
                  "by": call.who}
        return d.addCallback(lambda _: answer)

    # -- engine state ---------------------------------------------------------------------

    def set_instrument_status(self, call: AdminCall) -> Deferred:
        symbol = call.params.text("symbol")
        engine = self.pipeline.engine
        if symbol not in engine.markets:
            raise AdminError(404, f"unknown instrument {symbol} (GET /admin/instruments)")
        status = call.params.choice("status", STATUS_NAMES)
        previous = status_name(engine.status(symbol))
        d = self._journal(call.who, "instrument-status",
                          SetInstrumentStatus(0, 0, str(symbol), status))

        def answer(events: list) -> Answer:
            _refused(events)
            return {"symbol": symbol, "status": status_name(status), "previous": previous,
                    "by": call.who}

        return d.addCallback(answer)

    def list_instrument(self, call: AdminCall) -> Deferred:
        """List a new instrument: the same rules and checks as an [INSTRUMENT] section,
        journaled as ConfigureInstrument; order entry, market data and Postgres take it up
        when it is released."""
        symbol = str(call.params.text("symbol", max_length=32))
        if symbol in self.pipeline.engine.markets:
            raise AdminError(409, f"instrument {symbol} is already listed; its rules change "
                                  "through its [INSTRUMENT] section at a restart")
        values: dict[str, Any] = {}
        for param, key in _INSTRUMENT_PARAMS.items():
            if param in call.params:
                value = call.params.values[param]
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    value = str(value)  # JSON numbers are taken too; strings keep decimals exact
                    call.params.values[param] = value
                raw = str(call.params.text(param, max_length=400 if key == "RiskTiers"
                                           else 40))
                try:
                    values[key] = INSTRUMENT_KEYS[key](raw)
                except ValueError as exc:
                    raise AdminError(400, f"{param}={raw!r}: {exc}") from None
        for key in REQUIRED_KEYS:
            if key not in values:
                raise AdminError(400, f"{_PARAM_OF[key]} is required")

        def fail(key: str, message: str) -> AdminError:
            return AdminError(400, f"{_PARAM_OF[key]}={values[key]!r}: {message}")

        inst = build_instrument(values, fail)
        d = self._journal(call.who, "list-instrument", instrument_command(inst))

        def answer(events: list) -> Answer:
            _refused(events)
            return {"symbol": inst.symbol, "listed": True, "status": status_name(inst.status),
                    "tick_size": inst.tick_size, "lot_size": inst.lot_size, "by": call.who}

        return d.addCallback(answer)

    def set_account_stp(self, call: AdminCall) -> Deferred:
        account = str(call.params.text("account"))
        if self.app.directory.firm_of(account) is None:
            raise AdminError(404, f"unknown account {account}")
        mode = call.params.choice("mode", STP_NAMES)
        previous = self.pipeline.engine.account_stp.get(account)
        d = self._journal(call.who, "account-stp", SetAccountStp(0, 0, account, mode))

        def answer(events: list) -> Answer:
            _refused(events)
            return {"account": account, "mode": status_name(mode),
                    "previous": status_name(previous) if previous is not None else None,
                    "by": call.who}

        return d.addCallback(answer)

    def kill_switch(self, call: AdminCall) -> Deferred:
        firm = str(call.params.text("firm"))
        active = call.params.boolean("active")
        try:
            o = self.app.set_kill_switch(firm, active, call.who)
        except KeyError:
            raise AdminError(404, f"unknown firm {firm}") from None
        except Exception as exc:  # PipelineStopped
            raise AdminError(503, f"the exchange is not accepting commands: {exc}") from exc
        d = self.released.watch(o)

        def answer(events: list) -> Answer:
            canceled = sum(e.canceled for e in events if type(e) is KillSwitchChanged)
            return {"firm": firm, "active": active, "canceled": canceled,
                    "killed": sorted(self.app.killed), "by": call.who}

        return d.addCallback(answer)

    def snapshot(self, call: AdminCall) -> Deferred:
        pipeline = self.pipeline
        if pipeline.snapshot_in_progress:
            raise AdminError(409, "a snapshot is being taken already; try again shortly")
        written = pipeline.snapshots_written
        o = self._submit_audit(call.who, "snapshot", {})
        pipeline.request_snapshot()  # taken at the end of the tick that matches the record
        d = self.released.watch(o)
        next_seq = pipeline.sequencer.position()[0]

        def answer(_: Any) -> Answer:
            if pipeline.snapshots_written <= written:
                raise AdminError(500, "the snapshot could not be written (see the log); the "
                                      "journal still covers the state")
            return {"snapshot": snapshot_name(next_seq), "next_seq": next_seq, "by": call.who}

        d.addCallback(lambda _: pipeline.when_snapshots_written())
        return d.addCallback(answer)


def _refused(events: list) -> None:
    """AdminError 409 if the engine rejected the command."""
    for e in events:
        if type(e) is RequestRejected:
            raise AdminError(409, "the engine refused it: "
                                  + e.reason.name.lower().replace("_", " "))

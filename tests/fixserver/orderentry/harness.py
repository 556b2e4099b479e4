"""Order-entry test harness: a real MatchingEngine behind a synchronous in-memory pipeline,
sessions that record what they send, and FIX messages built from tag/value pairs."""

from __future__ import annotations

from typing import Any

import attr

from engine import MatchingEngine, demo_instruments
from engine.recovery import ProcessedCommand
from engine.sequencer import Sequencer
from fixserver.codec import FixMessage
from fixserver.orderentry.application import OrderEntryApplication
from fixserver.orderentry.firms import AccountSettings, FirmDirectory, FirmSettings
from fixserver.orderentry.ownership import OwnerRecorder
from fixserver.settings import SessionRole, SessionSettings

T0 = 1_700_000_000_000_000_000
#: tags of repeating-group entries that may repeat in one message (PositionAmountData)
_GROUP_MEMBERS = frozenset((707, 708))


class RecordingSession:
    """Stands in for fixserver.session.Session: keeps every sent message as a dict."""

    def __init__(self, settings: SessionSettings) -> None:
        self.settings = settings
        self.sent: list[tuple[str, dict[int, str], list]] = []

    def send(self, msg_type: str, fields: list, now_ns: int, reply_to: Any = None,
             header: Any = ()) -> int:
        as_dict: dict[int, str] = {}
        for tag, value in fields:
            text = value.decode() if isinstance(value, bytes) else str(value)
            if tag in _GROUP_MEMBERS and tag in as_dict:
                continue  # a repeating group's later entries: the dict keeps the first
            assert tag not in as_dict, f"tag {tag} twice in {msg_type}: {fields}"
            as_dict[tag] = text
        self.sent.append((msg_type, as_dict, fields))
        return len(self.sent)

    def take(self) -> list[tuple[str, dict[int, str]]]:
        out = [(m, f) for m, f, _ in self.sent]
        self.sent.clear()
        return out


class SyncPipeline:
    """submit() queues; tick() stamps, matches and releases at once (no journal)."""

    def __init__(self, engine: MatchingEngine, lane_of: Any = None) -> None:
        self.engine = engine
        self.sequencer = OwnerRecorder(Sequencer(idle_tick_ns=10**15, lane_of=lane_of))
        self.subscribers: list = []
        self.now = T0
        self.stopped = False

    def submit(self, origin: Any, request: Any) -> None:
        if self.stopped:
            raise RuntimeError("stopped")
        self.sequencer.submit(origin, request)

    def tick(self) -> list[ProcessedCommand]:
        self.now += 1_000_000
        batch = self.sequencer.next_batch(self.now)
        if batch is None:
            return []
        processed = [ProcessedCommand(o, c, self.engine.process(c)) for o, c in batch.entries]
        for callback in self.subscribers:
            callback(processed)
        return processed


def msg(msg_type: str, *pairs: tuple[int, str], seq: int = 1) -> FixMessage:
    fields = [(8, b"FIX.4.4"), (35, msg_type.encode()), (34, str(seq).encode())]
    fields += [(tag, str(value).encode()) for tag, value in pairs]
    return FixMessage(fields)


def new_order(cl: str, side: str = "1", qty: str = "0.005", price: str | None = "60000",
              ord_type: str = "2", symbol: str = "BTC-PERP", account: str | None = "A1",
              *extra: tuple[int, str]) -> FixMessage:
    pairs: list[tuple[int, str]] = [(11, cl)]
    if account is not None:
        pairs.append((1, account))
    pairs += [(55, symbol), (54, side), (60, "20240101-00:00:00")]
    if qty is not None:
        pairs.append((38, qty))
    pairs.append((40, ord_type))
    if price is not None:
        pairs.append((44, price))
    pairs += list(extra)
    return msg("D", *pairs)


def firm_lane(o: Any) -> Any:
    """The sequencer lane of an origin, as the server wires it: the session's firm."""
    if o is None:
        return None
    if o[1] == "K":
        return o[2]
    return "BETA" if str(o[0]).endswith("BETA1") else "ACME"


class Exchange:
    """Firms ACME (accounts A1, A2; sessions ACME1, ACME2, drop copy ACMEDC) and BETA (B1;
    session BETA1), demo instruments, one engine."""

    def __init__(self, **overrides: Any) -> None:
        self.engine = MatchingEngine(demo_instruments())
        self.pipeline = SyncPipeline(self.engine, lane_of=firm_lane)
        self.directory = FirmDirectory([
            FirmSettings("ACME", (AccountSettings("A1", "ACME", overrides.pop("max_open", 0)),
                                  AccountSettings("A2", "ACME"))),
            FirmSettings("BETA", (AccountSettings("B1", "BETA"),)),
        ])
        base = dict(begin_string="FIX.4.4", sender_comp_id="EXCH")
        session_overrides = overrides.pop("session", {})
        self.acme = RecordingSession(attr.evolve(SessionSettings(
            target_comp_id="ACME1", firm="ACME", **base), **session_overrides))
        self.acme2 = RecordingSession(SessionSettings(target_comp_id="ACME2", firm="ACME", **base))
        self.beta = RecordingSession(SessionSettings(target_comp_id="BETA1", firm="BETA", **base))
        self.dc = RecordingSession(SessionSettings(target_comp_id="ACMEDC", firm="ACME",
                                                   role=SessionRole.DROP_COPY, **base))
        self.flushed: list = []
        self.disconnected: list = []
        self.app = OrderEntryApplication(
            [self.acme, self.acme2, self.beta, self.dc], self.pipeline, demo_instruments(),
            self.directory, now_ns=lambda: self.pipeline.now, flush=self.flushed.append,
            disconnect=lambda s, text: self.disconnected.append((s, text)), **overrides,
        )
        self.pipeline.subscribers.append(self.app.on_released)
        self.app.ledger.order_gone = self.pipeline.sequencer.forget  # as the wiring does
        self.app.ledger.follow_journal(self.pipeline.sequencer)
        #: a ShadowStore answering status reads, completed by settle()
        self.shadow: Any = None

    def send(self, session: RecordingSession, message: FixMessage, now: int | None = None) -> None:
        self.app.on_message(session, message, self.pipeline.now if now is None else now)

    def run(self, session: RecordingSession, message: FixMessage) -> list[tuple[str, dict]]:
        """Send, tick until everything it caused is released, return what ``session`` got."""
        self.send(session, message)
        self.settle()
        return session.take()

    def settle(self, limit: int = 100) -> None:
        """Tick until no request waits in the sequencer or in any session's lane (status
        reads of a ShadowStore are answered along the way)."""
        for _ in range(limit):
            if self.shadow is not None:
                self.shadow.complete()
            if not self.pipeline.sequencer.pending and not self.app.lanes.busy_sessions():
                return
            self.pipeline.tick()
        raise AssertionError(f"not settled after {limit} ticks: "
                             f"{self.app.lanes.busy_sessions()}")


class ShadowStore:
    """A status store (fixserver.orderentry.stored.StatusStore) that stands in for Postgres:
    it follows every released tick in a ledger of its own that forgets nothing, and answers
    lookups when :meth:`complete` is called (or at once with ``at_once``)."""

    def __init__(self, x: Exchange, at_once: bool = False) -> None:
        from fixserver.orderentry.ownership import OrderLedger

        self.x = x
        self.ledger = OrderLedger()
        self.at_once = at_once
        self.pending: list[tuple[Any, Any]] = []
        self.lookups: list[Any] = []
        x.pipeline.subscribers.append(self._follow)
        x.app.use_status_store(self, lambda: 1 << 62)
        x.shadow = self

    def _follow(self, processed: list) -> None:
        for p in processed:
            self.ledger.apply(p.origin, p.command, p.events)

    def lookup(self, query: Any, done: Any) -> None:
        self.lookups.append(query)
        if self.at_once:
            done(self.find(query), None)
        else:
            self.pending.append((query, done))

    def complete(self) -> int:
        """Answer every lookup waiting (in order); returns how many."""
        pending, self.pending = self.pending, []
        for query, done in pending:
            done(self.find(query), None)
        return len(pending)

    def find(self, query: Any) -> Any:
        view = None
        if query.cl_ord_id:
            view = self.ledger.find(query.session_id, query.cl_ord_id)
            if view is not None and not view.ended_ts:
                view = None
        if view is None and query.order_id is not None:
            view = self.ledger.orders.get(query.order_id)
        if view is None or not view.ended_ts or view.ended_ts < query.since_ns:
            return None
        return stored_row(view, self.x.app.instruments[view.symbol])


def stored_row(view: Any, inst: Any) -> Any:
    """The ``orders`` row Postgres holds for an ended order's view (as fixserver.pg.rows)."""
    from decimal import Decimal

    from engine.enums import Side
    from fixserver.orderentry.stored import StoredOrder

    tick, lot = Decimal(inst.tick_size), Decimal(inst.lot_size)
    status = {"2": "FILLED", "4": "CANCELED", "C": "EXPIRED"}[view.status]
    avg = Decimal(view.notional) / Decimal(view.filled) * tick if view.filled else None
    return StoredOrder(
        view.order_id, view.session_id, view.cl_ord_id, view.orig_cl_ord_id or None,
        view.account, view.symbol, Side(view.side).name, view.ord_type.name, view.tif.name,
        view.price * tick if view.price else None,
        view.stop_price * tick if view.stop_price else None, view.qty * lot,
        view.filled * lot, view.leaves * lot, avg, status)

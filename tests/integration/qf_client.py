"""A QuickFIX (C++) initiator for the integration tests, with every callback captured.

QuickFIX calls its Application callbacks on its own threads, and an exception escaping one
kills the process; so every callback body is wrapped in try/except and only pushes what it saw
onto a ``queue.Queue``. Tests read the queue on their own thread (``poll``/``wait_for``) and
assert there.

Validation is on (UseDataDictionary=Y with QuickFIX's own FIX44.xml, fields out of order,
fields without values, user-defined fields), so anything malformed the server sends makes
QuickFIX send a Reject (35=3), which ``rejects()`` reports, or log an event containing
"reject", which ``logged_rejects()`` reports.
"""

from __future__ import annotations

import glob
import os
import queue
import sysconfig
import time
import traceback
from typing import Callable

import quickfix as fix

SOH = "\x01"
FIX44_XML = os.path.join(sysconfig.get_paths()["data"], "share", "quickfix", "FIX44.xml")


def fields_of(raw: str) -> dict[int, str]:
    """The first value of each tag of a raw FIX message."""
    result: dict[int, str] = {}
    for part in raw.split(SOH):
        tag, sep, value = part.partition("=")
        if sep and tag.isdigit():
            result.setdefault(int(tag), value)
    return result


class Event:
    """One captured callback: ``kind`` is to_admin, from_admin, to_app, from_app, logon,
    logout, create or error; ``raw`` the message (or text)."""

    __slots__ = ("fields", "kind", "raw")

    def __init__(self, kind: str, raw: str) -> None:
        self.kind = kind
        self.raw = raw
        self.fields = fields_of(raw)

    @property
    def msg_type(self) -> str:
        return self.fields.get(35, "")

    @property
    def seq(self) -> int:
        return int(self.fields.get(34, "0"))

    def __repr__(self) -> str:
        return f"Event({self.kind}, {self.raw.replace(SOH, '|')})"


class _CapturingApplication(fix.Application):
    def __init__(
        self, events: queue.Queue[Event], logon_fields: dict[int, str] | None = None
    ) -> None:
        super().__init__()
        self.events = events
        self.logon_fields = logon_fields or {}
        self.session_id: fix.SessionID | None = None

    def _push(self, kind: str, raw: str) -> None:
        self.events.put(Event(kind, raw))

    def _guard(self, kind: str, message: fix.Message | None, text: str = "") -> None:
        try:
            self._push(kind, message.toString() if message is not None else text)
        except Exception:  # must never escape into QuickFIX's thread
            try:
                self._push("error", traceback.format_exc())
            except Exception:
                pass

    def onCreate(self, sessionID):
        try:
            self.session_id = sessionID
            self._push("create", sessionID.toString())
        except Exception:
            self._guard("error", None, traceback.format_exc())

    def onLogon(self, sessionID):
        self._guard("logon", None, sessionID.toString())

    def onLogout(self, sessionID):
        self._guard("logout", None, sessionID.toString())

    def toAdmin(self, message, sessionID):
        try:
            if self.logon_fields and message.getHeader().getField(35) == "A":
                for tag, value in self.logon_fields.items():
                    message.setField(fix.StringField(tag, value))
        except Exception:  # must never escape into QuickFIX's thread
            self._guard("error", None, traceback.format_exc())
        self._guard("to_admin", message)

    def fromAdmin(self, message, sessionID):
        self._guard("from_admin", message)

    def toApp(self, message, sessionID):
        self._guard("to_app", message)

    def fromApp(self, message, sessionID):
        self._guard("from_app", message)


class QuickFixClient:
    """A QuickFIX SocketInitiator logging on to ``target`` as ``sender`` at 127.0.0.1:port."""

    def __init__(
        self,
        workdir: str,
        port: int,
        sender: str = "CLIENT1",
        target: str = "EXCH",
        heartbeat: int = 1,
        extra: dict[str, str] | None = None,
        logon_fields: dict[int, str] | None = None,
    ) -> None:
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        settings = {
            "ConnectionType": "initiator",
            "ReconnectInterval": "1",
            "FileStorePath": os.path.join(workdir, "store"),
            "FileLogPath": os.path.join(workdir, "log"),
            "StartTime": "00:00:00",
            "EndTime": "00:00:00",
            "UseDataDictionary": "Y",
            "DataDictionary": FIX44_XML,
            "ValidateFieldsOutOfOrder": "Y",
            "ValidateFieldsHaveValues": "Y",
            "ValidateUserDefinedFields": "Y",
            "CheckLatency": "Y",
            "MaxLatency": "120",
            "BeginString": "FIX.4.4",
            "SenderCompID": sender,
            "TargetCompID": target,
            "SocketConnectHost": "127.0.0.1",
            "SocketConnectPort": str(port),
            "HeartBtInt": str(heartbeat),
            "LogonTimeout": "10",
            "LogoutTimeout": "5",
        }
        settings.update(extra or {})
        self.config_path = os.path.join(workdir, "client.cfg")
        identity = ("BeginString", "SenderCompID", "TargetCompID")
        with open(self.config_path, "w", encoding="ascii") as handle:
            # QuickFIX reads the log and store paths from [DEFAULT]; sessions inherit the rest.
            handle.write("[DEFAULT]\n")
            handle.writelines(f"{k}={v}\n" for k, v in settings.items() if k not in identity)
            handle.write("[SESSION]\n")
            handle.writelines(f"{k}={settings[k]}\n" for k in identity)
        self.events: queue.Queue[Event] = queue.Queue()
        self.history: list[Event] = []
        self._app = _CapturingApplication(self.events, logon_fields)
        self._settings = fix.SessionSettings(self.config_path)
        self._store = fix.FileStoreFactory(self._settings)
        self._log = fix.FileLogFactory(self._settings)
        self._initiator: fix.SocketInitiator | None = None

    # --- lifecycle ---

    def start(self) -> None:
        """Start the initiator (it connects and logs on by itself, reconnecting every second)."""
        self._initiator = fix.SocketInitiator(self._app, self._store, self._settings, self._log)
        self._initiator.start()

    def stop(self, force: bool = False) -> None:
        """Log out (waiting for the acceptor's Logout unless ``force``) and stop. Blocks: in a
        reactor test call it with deferToThread, or the reactor cannot answer the Logout."""
        if self._initiator is not None:
            self._initiator.stop(force)
            self._initiator = None

    @property
    def session(self) -> fix.Session:
        assert self._app.session_id is not None, "the session was not created yet"
        return fix.Session.lookupSession(self._app.session_id)

    def logout(self, text: str = "") -> None:
        """Log out but keep the initiator; ``logon()`` connects again."""
        self.session.logout(text)

    def logon(self) -> None:
        self.session.logon()

    def set_logon_field(self, tag: int, value: str) -> None:
        """Change a field the next Logons carry (e.g. a corrected Password 554)."""
        self._app.logon_fields[tag] = value

    def send_new_order(self, cl_ord_id: str) -> None:
        """A valid FIX 4.4 NewOrderSingle (limit buy 1 BTC-PERP at 100)."""
        message = fix.Message()
        message.getHeader().setField(fix.MsgType(fix.MsgType_NewOrderSingle))
        message.setField(fix.ClOrdID(cl_ord_id))
        message.setField(fix.Symbol("BTC-PERP"))
        message.setField(fix.Side(fix.Side_BUY))
        message.setField(fix.TransactTime())
        message.setField(fix.OrderQty(1))
        message.setField(fix.OrdType(fix.OrdType_LIMIT))
        message.setField(fix.Price(100))
        fix.Session.sendToTarget(message, self._app.session_id)

    def send_test_request(self, test_req_id: str) -> None:
        message = fix.Message()
        message.getHeader().setField(fix.MsgType(fix.MsgType_TestRequest))
        message.setField(fix.TestReqID(test_req_id))
        fix.Session.sendToTarget(message, self._app.session_id)

    # --- reading what happened ---

    def poll(self) -> list[Event]:
        """Move the captured events into ``history``; returns the new ones."""
        new = []
        while True:
            try:
                new.append(self.events.get_nowait())
            except queue.Empty:
                break
        self.history.extend(new)
        return new

    def find(
        self, kind: str, predicate: Callable[[Event], bool] = lambda e: True, start: int = 0
    ) -> Event | None:
        """The first event of ``kind`` in history[start:] that satisfies ``predicate``."""
        self.poll()
        for event in self.history[start:]:
            if event.kind == kind and predicate(event):
                return event
        return None

    def wait_for(
        self,
        kind: str,
        predicate: Callable[[Event], bool] = lambda e: True,
        timeout: float = 20.0,
        what: str = "",
        start: int = 0,
    ) -> Event:
        """Block until such an event is captured; AssertionError naming ``what`` on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.find(kind, predicate, start)
            if found is not None:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"QuickFIX client: no {kind} event ({what}) within {timeout}s; "
                    f"last events: {self.history[-8:]}"
                )
            try:
                self.history.append(self.events.get(timeout=min(remaining, 0.2)))
            except queue.Empty:
                pass

    def rejects(self) -> list[Event]:
        """Session Rejects (35=3) the client sent or received, and callback errors."""
        self.poll()
        return [
            e
            for e in self.history
            if e.kind == "error" or (e.kind in ("to_admin", "from_admin") and e.msg_type == "3")
        ]

    def logged_rejects(self) -> list[str]:
        """Lines of QuickFIX's event logs that mention a reject."""
        lines = []
        for path in glob.glob(os.path.join(self.workdir, "log", "*.event.log")):
            with open(path, encoding="latin-1") as handle:
                lines.extend(line for line in handle if "reject" in line.lower())
        return lines

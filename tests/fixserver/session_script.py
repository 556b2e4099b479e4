"""Replays acceptance scripts in QuickFIX's ``.def`` format against SessionConnection in-process.

Script lines: ``iCONNECT`` / ``iDISCONNECT`` (client connects / drops), ``I<msg>`` (client
sends), ``E<msg>`` (server must send this next), ``eDISCONNECT`` (server must close, with
nothing more to read), ``#`` comments; ``iN,`` / ``IN,`` prefixes address connection N.
``<TIME>``, ``<TIME+n>``, ``<TIME-n>`` become UTCTimestamps (whole seconds); BodyLength and
CheckSum are filled in when a line leaves them out. Expected messages are compared field by
field, in order, exactly, except CheckSum and the timestamp fields (any value of the right
shape).

Time is virtual: when the script waits for a message or a disconnect the clock jumps to the
connection's next deadline, so heartbeat and timeout cases run instantly.

The server side is configured as the suite expects: FIX.4.4 ISLD (us) <-> TW44, ResetOnLogon,
no password, the standard FIX44.xml dictionary, and an echo application (NewOrderSingle,
SecurityDefinition and Email are echoed back; NewOrderSingle with PossResend=Y and an already
seen ClOrdID is dropped; other application messages get BusinessMessageReject 380=3).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable

from fixserver.admin_messages import HEADER_TAGS, business_reject_fields
from fixserver.codec import FixMessage, FrameDecoder
from fixserver.session import Session, SessionConnection, SessionRegistry
from fixserver.session_events import ApplicationMessageReceived, LoggedOut
from fixserver.settings import SessionSettings
from fixserver.store import MemoryMessageStore

SOH = "\x01"
START_NS = 1_704_196_800_250_000_000  # 2024-01-02 12:00:00.250 UTC
STEP_NS = 1_000_000  # each client action takes 1 ms
WAIT_LIMIT_NS = 70 * 1_000_000_000  # longest virtual wait for an expected message
DISCONNECT_WAIT_NS = 10 * 1_000_000_000  # the suite waits 10 s for a disconnect
RESEND_CHUNK = 2  # messages per chunk of a resend (small: scripts cross chunk boundaries)

#: fields compared by shape rather than value
PATTERNS = {
    "10": re.compile(r"\d{3}"),
    "42": re.compile(r"\d{8}-\d{2}:\d{2}:\d{2}"),
    "52": re.compile(r"\d{8}-\d{2}:\d{2}:\d{2}"),
    "60": re.compile(r"\d{8}-\d{2}:\d{2}:\d{2}"),
    "122": re.compile(r"\d{8}-\d{2}:\d{2}:\d{2}"),
}

_PREFIX = re.compile(r"^[IEie](\d),")
_TIME_OFFSET = re.compile(r"<TIME([+-])(\d+)>")


class ScriptFailure(AssertionError):
    pass


def _format_seconds(now_ns: int) -> str:
    moment = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=now_ns // 10**9)
    return moment.strftime("%Y%m%d-%H:%M:%S")


def timeify(text: str, now_ns: int) -> str:
    text = text.replace("<TIME>", _format_seconds(now_ns))

    def offset(match: re.Match[str]) -> str:
        delta = int(match.group(2)) * 10**9
        return _format_seconds(now_ns + delta if match.group(1) == "+" else now_ns - delta)

    return _TIME_OFFSET.sub(offset, text)


def fixify(text: str) -> str:
    """Add BodyLength and CheckSum where the script leaves them out."""
    if not text.startswith("8="):
        return text
    has_length = re.search("\x019=.*?\x01", text) is not None
    head_end = text.index(SOH) + 1
    head, rest = text[:head_end], text[head_end:]
    checksum_match = re.search("\x0110=.*\x01$", rest)
    checksum = None
    if checksum_match is not None:
        checksum = checksum_match.group(0)[1:]
        rest = rest[: checksum_match.start() + 1]
    length = "" if has_length else f"9={len(rest)}{SOH}"
    if checksum is None:
        total = sum((head + length + rest).encode("latin-1")) % 256
        checksum = f"10={total:03d}{SOH}"
    return head + length + rest + checksum


def compare(expected: str, actual: str) -> str | None:
    """None if ``actual`` matches ``expected``; else the reason it does not."""
    exp_fields = [f for f in expected.split(SOH) if f]
    act_fields = [f for f in actual.split(SOH) if f]
    if len(exp_fields) != len(act_fields):
        return "number of fields differs"
    for exp, act in zip(exp_fields, act_fields):
        exp_tag, _, exp_value = exp.partition("=")
        act_tag, _, act_value = act.partition("=")
        if exp_tag != act_tag:
            return f"expected field {exp_tag} but found {act_tag}"
        pattern = PATTERNS.get(exp_tag)
        if pattern is None:
            if exp_value != act_value:
                return f"field {exp_tag} should be {exp_value!r} but was {act_value!r}"
        elif not pattern.search(act_value):
            return f"field {exp_tag} value {act_value!r} has the wrong shape"
    return None


class EchoApplication:
    """The behaviour the acceptance suite's server application has."""

    def __init__(self) -> None:
        self.seen_orders: set[tuple[bytes | None, str]] = set()

    def on_message(self, session: Session, msg: FixMessage, now_ns: int) -> None:
        msg_type = msg.msg_type
        if msg_type == b"D":
            key = (msg.get(11), session.settings.session_id)
            if msg.get(97) == b"Y" and key in self.seen_orders:
                return
            self.seen_orders.add(key)
            self._echo(session, msg, now_ns)
        elif msg_type in (b"d", b"C"):
            self._echo(session, msg, now_ns)
        else:
            session.send(b"j", business_reject_fields(msg), now_ns)

    def on_logout(self, session: Session) -> None:
        sid = session.settings.session_id
        self.seen_orders = {k for k in self.seen_orders if k[1] != sid}

    @staticmethod
    def _echo(session: Session, msg: FixMessage, now_ns: int) -> None:
        header = [
            (t, v)
            for t, v in msg.fields
            if t in HEADER_TAGS and t not in (8, 9, 35, 34, 49, 52, 56, 43, 122)
        ]
        body = sorted(
            ((t, v) for t, v in msg.fields if t not in HEADER_TAGS and t not in (10, 93, 89)),
            key=lambda field: field[0],
        )
        session.send(msg.msg_type, body, now_ns, header=header)


def default_sessions(dictionary: object) -> list[Session]:
    settings = SessionSettings(
        begin_string="FIX.4.4", sender_comp_id="ISLD", target_comp_id="TW44", reset_on_logon=True
    )
    return [Session(settings, MemoryMessageStore(START_NS), dictionary)]  # type: ignore[arg-type]


class ScriptRunner:
    """Runs one script; ``run`` raises ScriptFailure naming the line that failed."""

    def __init__(self, registry: SessionRegistry, app: EchoApplication, start_ns: int) -> None:
        self.registry = registry
        self.app = app
        self.now_ns = start_ns
        self.conns: dict[int, SessionConnection] = {}
        self.inbox: dict[int, list[bytes]] = {}
        self.decoders: dict[int, FrameDecoder] = {}

    def run(self, lines: Iterable[str]) -> None:
        try:
            for number, line in enumerate(lines, 1):
                line = line.rstrip("\r\n")
                if not line or line.startswith("#"):
                    continue
                try:
                    self._step(line)
                except ScriptFailure as exc:
                    shown = line.replace(SOH, "|")
                    raise ScriptFailure(f"line {number}: {shown}\n    {exc}") from None
        finally:
            for conn in self.conns.values():
                conn.connection_lost(self.now_ns)
            self._pump()

    def _step(self, line: str) -> None:
        match = _PREFIX.match(line)
        cid, body = (int(match.group(1)), line[3:]) if match else (1, line[1:])
        kind = line[0]
        self.now_ns += STEP_NS
        text = fixify(timeify(body, self.now_ns))
        if kind == "i" and text == "CONNECT":
            self.conns[cid] = SessionConnection(self.registry, self.now_ns)
            self.inbox[cid] = []
            self.decoders[cid] = FrameDecoder()
        elif kind == "i" and text == "DISCONNECT":
            self.conns[cid].connection_lost(self.now_ns)
            self._pump()
        elif kind == "I":
            conn = self.conns[cid]
            if conn.should_close:
                raise ScriptFailure("cannot send: the server closed the connection")
            conn.receive_data(text.encode("latin-1"), self.now_ns)
            self._pump()
        elif kind == "E":
            self._expect(cid, text)
        elif kind == "e" and text == "DISCONNECT":
            self._expect_disconnect(cid)
        else:
            raise ScriptFailure(f"cannot interpret line kind {kind!r}")

    def _pump(self) -> None:
        for cid, conn in self.conns.items():
            while True:
                event = conn.next_event()
                if event is None:
                    break
                if isinstance(event, ApplicationMessageReceived):
                    self.app.on_message(event.session, event.message, self.now_ns)
                elif isinstance(event, LoggedOut):
                    self.app.on_logout(event.session)
            while conn.resend_pending:  # as the glue does, a chunk per turn (small ones here)
                conn.continue_resend(RESEND_CHUNK, 1 << 20, self.now_ns)
            data = conn.data_to_send()
            if data:
                decoder = self.decoders[cid]
                decoder.feed(data)
                while (item := decoder.next_message()) is not None:
                    if not isinstance(item, FixMessage):
                        raise ScriptFailure(f"server sent a garbled message: {item!r}")
                    self.inbox[cid].append(item.raw)

    def _advance(self, limit_ns: int) -> bool:
        """Jump to the earliest deadline of any open connection (up to limit); False if none."""
        deadlines = [
            d
            for c in self.conns.values()
            if not c.should_close
            if (d := c.next_deadline_ns()) is not None
        ]
        if not deadlines or min(deadlines) > limit_ns:
            return False
        self.now_ns = max(self.now_ns, min(deadlines))
        for conn in self.conns.values():
            conn.on_timer(self.now_ns)
        self._pump()
        return True

    def _expect(self, cid: int, expected: str) -> None:
        limit = self.now_ns + WAIT_LIMIT_NS
        while not self.inbox[cid]:
            if self.conns[cid].should_close:
                raise ScriptFailure("expected a message but the server closed the connection")
            if not self._advance(limit):
                raise ScriptFailure("expected a message but none came")
        actual = self.inbox[cid].pop(0).decode("latin-1")
        problem = compare(expected, actual)
        if problem is not None:
            raise ScriptFailure(
                f"{problem}\n    expected: {expected.replace(SOH, '|')}"
                f"\n    received: {actual.replace(SOH, '|')}"
            )

    def _expect_disconnect(self, cid: int) -> None:
        limit = self.now_ns + DISCONNECT_WAIT_NS
        conn = self.conns[cid]
        while not conn.should_close and not self.inbox[cid]:
            if not self._advance(limit):
                raise ScriptFailure("connection still open after ten seconds")
        if self.inbox[cid]:
            shown = self.inbox[cid][0].decode("latin-1").replace(SOH, "|")
            raise ScriptFailure(f"expected disconnection, got data: {shown}")


def run_script(text: str, registry: SessionRegistry, app: EchoApplication, start_ns: int) -> int:
    """Run a script; returns the virtual time at its end."""
    runner = ScriptRunner(registry, app, start_ns)
    runner.run(text.split("\n"))
    return runner.now_ns

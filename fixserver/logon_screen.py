"""Who may log on: the checks a connection's first message passes before anything in it is
acted on (sans-IO; part of the session core, ``fixserver.session``).

In order (``spec/rules-of-engagement.md``, "Logon and authentication"):

1. the message is a Logon;
2. its BeginString and CompIDs name a configured session (if not: a *failed* logon);
3. the gate (the glue's logon throttle) does not refuse it: a session or address locked out
   after repeated failures is refused here, before its credentials are looked at;
4. the session is not logged on already; the Logon passes the dictionary; MsgSeqNum and
   SendingTime are there, and SendingTime is within MaxLatency;
5. the credentials (``fixserver.logon_auth``; if refused: a *failed* logon).

Every refusal here closes the connection without an answer. The FIX session protocol makes
the Logout optional when a Logon fails authentication because a Logout uses a MsgSeqNum: one
the exchange keeps would let anyone who can connect advance the session's outgoing numbers
(and write to its store) at will; one it does not keep would be counted by the client anyway
(QuickFIX's ``nextLogout`` increments its expected number for any Logout) and then be taken
by the exchange's next real message, which the client would refuse as "MsgSeqNum too low".
So neither sequence number nor the store is touched, and the reason goes to the log only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import attr

from fixserver.codec import FixMessage
from fixserver.dictionary import ValidationError
from fixserver.logon_auth import AuthenticationError, check_logon_credentials
from fixserver.timeutil import NS_PER_SECOND, parse_utc_timestamp

if TYPE_CHECKING:
    from fixserver.session_registry import Session, SessionRegistry


class LogonGate(Protocol):
    """What the glue decides before a Logon's credentials are checked."""

    def refuse_logon(self, session: Session | None, now_ns: int) -> str | None:
        """None to go on, or why this Logon is refused at once (``session`` is the one it
        names; None if it names none)."""


@attr.s(frozen=True, slots=True, auto_attribs=True)
class LogonRefusal:
    """A first message that is not let through; the connection closes without an answer."""

    reason: str
    #: a failed logon (no such session, or bad credentials): counted by the logon throttle
    failed: bool = False
    session: Session | None = None


def screen_logon(
    registry: SessionRegistry, msg: FixMessage, now_ns: int, gate: LogonGate | None
) -> Session | LogonRefusal:
    """The session a connection's first message logs on to, or why it may not."""
    if msg.msg_type != b"A":
        return LogonRefusal("first message is not a Logon")
    begin_string = msg.begin_string.decode("latin-1")
    their_id = msg.get_str(49, "") or ""
    our_id = msg.get_str(56, "") or ""
    session = registry.find(begin_string, our_id, their_id)
    if gate is not None:
        refused = gate.refuse_logon(session, now_ns)
        if refused is not None:
            return LogonRefusal(refused)
    if session is None:
        return LogonRefusal(f"no session {begin_string}:{our_id}->{their_id}", failed=True)
    settings = session.settings
    if session.connection is not None:
        return LogonRefusal(f"{settings.session_id} is already logged on")
    if settings.use_data_dictionary:
        try:
            session.dictionary.validate(msg)
        except ValidationError as exc:
            return LogonRefusal(f"invalid Logon: {exc}")
    try:
        sent_ns = parse_utc_timestamp(msg.get(52) or b"")
        seq = msg.get_int(34)
    except ValueError:
        seq = None
    if seq is None:
        return LogonRefusal("Logon without a valid MsgSeqNum or SendingTime")
    if settings.check_latency and abs(now_ns - sent_ns) > settings.max_latency * NS_PER_SECOND:
        return LogonRefusal("Logon SendingTime accuracy problem")
    try:
        check_logon_credentials(settings, msg, now_ns, session.nonces)
    except AuthenticationError as exc:
        return LogonRefusal(f"authentication failed: {exc}", failed=True, session=session)
    return session

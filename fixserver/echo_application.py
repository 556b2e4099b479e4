"""EchoApplication: the application of QuickFIX's acceptance-test server, for conformance runs.

Theory of operation
-------------------
FIX session-layer conformance suites written against QuickFIX (its ``test/definitions/server``
scripts, replayed by its acceptance-test runner) expect the server's application to behave as
QuickFIX's own test server does (``at_application.h``), not as an exchange:

- NewOrderSingle (D) is echoed back, unless it carries PossResend (97=Y) and its ClOrdID (11)
  was already seen on the session since its last logon: then it is dropped (test case 19a:
  an application-level duplicate is ignored). Every echoed ClOrdID is remembered; the memory
  is forgotten when the session logs out or its connection ends (QuickFIX clears it in
  ``onLogout``, which it also calls on a disconnect). Here the memory is tied to the logged-on
  connection, so it is forgotten even when the host has no logout hook.
- SecurityDefinition (d) and Email (C) are echoed back.
- Any other application message is answered with BusinessMessageReject, 380=3 "Unsupported
  Message Type" (QuickFIX's message cracker rejects types it has no handler for).

An echo is the inbound message sent back as a new message of our own: the session fills
BeginString, CompIDs, MsgSeqNum and SendingTime; PossDupFlag (43) and OrigSendingTime (122) are
dropped (QuickFIX's ``Session::send`` removes them); the other header fields are kept as they
came (PossResend, routing tags: not reversed, as QuickFIX copies them), except the Hops group
(627-630), which is not echoed. The body comes out in
QuickFIX's order: fields by ascending tag number, each repeating group's entries (in wire
order) right after its count field.

Selected by ``Application=echo`` in a config's ``[DEFAULT]`` (see ``ops/conformance.cfg`` and
``ops/README.md``); never for a trading deployment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fixserver.admin_messages import HEADER_TAGS, business_reject_fields
from fixserver.codec import FieldValue, FixMessage
from fixserver.dictionary import DataDictionary
from fixserver.groups import group_end

if TYPE_CHECKING:
    from fixserver.session import Session

NEW_ORDER_SINGLE = b"D"
#: echoed back as they are
ECHOED_TYPES = frozenset({b"d", b"C"})  # SecurityDefinition, Email
#: header tags the session fills itself (or drops, 43 and 122) on every message it sends, and
#: the Hops group (627-630), which the header's ascending tag order would scramble
_NOT_ECHOED_HEADER = frozenset({8, 9, 35, 34, 43, 49, 52, 56, 122, 627, 628, 629, 630})
#: trailer fields are not echoed (the codec adds the CheckSum; no signing here)
_TRAILER_TAGS = frozenset({10, 89, 93})


class EchoApplication:
    """Echoes NewOrderSingle, SecurityDefinition and Email; rejects other application types."""

    def __init__(self) -> None:
        #: session id -> (the connection the ClOrdIDs were seen on, the ClOrdIDs)
        self._seen: dict[str, tuple[object, set[bytes]]] = {}

    def on_message(self, session: Session, message: FixMessage, now_ns: int) -> None:
        msg_type = message.msg_type
        if msg_type == NEW_ORDER_SINGLE:
            seen = self._seen_orders(session)
            cl_ord_id = message.get(11, b"")
            if message.get(97) == b"Y" and cl_ord_id in seen:
                return  # a resent order this session already has: ignored (test case 19a)
            seen.add(cl_ord_id)  # type: ignore[arg-type]
        elif msg_type not in ECHOED_TYPES:
            session.send(b"j", business_reject_fields(message), now_ns, reply_to=message)
            return
        header, body = echo_fields(session, message)
        session.send(msg_type, body, now_ns, header=header)

    def on_logon(self, session: Session, logon: FixMessage | None, now_ns: int) -> None:
        """A new logon starts with no ClOrdIDs seen."""
        self._seen.pop(session.settings.session_id, None)

    def on_logout(self, session: Session, now_ns: int) -> None:
        """Forget the session's ClOrdIDs (QuickFIX's test application does so on logout)."""
        self._seen.pop(session.settings.session_id, None)

    def _seen_orders(self, session: Session) -> set[bytes]:
        sid = session.settings.session_id
        connection = session.connection
        entry = self._seen.get(sid)
        if entry is None or entry[0] is not connection:
            entry = self._seen[sid] = (connection, set())
        return entry[1]


def echo_fields(
    session: Session, message: FixMessage
) -> tuple[list[tuple[int, FieldValue]], list[tuple[int, FieldValue]]]:
    """The header fields kept and the body, in QuickFIX's order, of an echo of ``message``."""
    fields = message.fields
    static = {tag for tag, _ in session.header.static}
    header: list[tuple[int, FieldValue]] = [
        (tag, value)
        for tag, value in fields
        if tag in HEADER_TAGS and tag not in _NOT_ECHOED_HEADER and tag not in static
    ]
    dictionary = session.dictionary
    msg_type = message.msg_type
    with_groups = isinstance(dictionary, DataDictionary)
    # Each top-level body field, or group count field with its entries, as one block.
    blocks: list[tuple[int, list[tuple[int, bytes]]]] = []
    index = 0
    end = len(fields)
    while index < end:
        tag = fields[index][0]
        group = dictionary.group(msg_type, tag) if with_groups else None  # type: ignore[attr-defined]
        stop = group_end(fields, index, group) if group is not None else index + 1
        if tag not in HEADER_TAGS and tag not in _TRAILER_TAGS:
            blocks.append((tag, fields[index:stop]))
        index = stop
    blocks.sort(key=_block_tag)  # stable: a repeated tag keeps its wire order
    body: list[tuple[int, FieldValue]] = [field for _, block in blocks for field in block]
    return header, body


def _block_tag(block: tuple[int, list[tuple[int, bytes]]]) -> int:
    return block[0]

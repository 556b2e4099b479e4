"""The application layer the hosting glue hands validated application messages to.

Until order entry exists, every application message is answered with a
BusinessMessageReject (35=j) with BusinessRejectReason 380=3 "Unsupported Message Type".
Order entry replaces ``UnsupportedMessageApplication`` with its own ``Application``; the
composition root picks one through its ``application_factory``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from fixserver.codec import FixMessage
    from fixserver.session import Session

BUSINESS_MESSAGE_REJECT = "j"
UNSUPPORTED_MESSAGE_TYPE = 3  # BusinessRejectReason (380)


class Application(Protocol):
    """Receives each application message of a logged-on session, in sequence order."""

    def on_message(self, session: Session, message: FixMessage, now_ns: int) -> None: ...


class UnsupportedMessageApplication:
    """Rejects every application message: BusinessMessageReject, 380=3."""

    def on_message(self, session: Session, message: FixMessage, now_ns: int) -> None:
        msg_type = message.msg_type.decode("latin-1")
        fields: list[tuple[int, bytes | str | int]] = [
            (45, message.get(34, b"0") or b"0"),  # RefSeqNum
            (372, msg_type),  # RefMsgType
            (380, UNSUPPORTED_MESSAGE_TYPE),
            (58, "Unsupported Message Type"),
        ]
        session.send(BUSINESS_MESSAGE_REJECT, fields, now_ns)

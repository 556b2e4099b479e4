"""The application layer the hosting glue hands validated application messages to.

``UnsupportedMessageApplication`` answers every application message with a
BusinessMessageReject (35=j) with BusinessRejectReason 380=3 "Unsupported Message Type"; it is
what a session without order entry gets. The composition root picks the application through
its ``application_factory`` (order entry and the conformance ``EchoApplication`` are others).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from fixserver.admin_messages import business_reject_fields

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
        # 45, 58, 372, 380 in that order: what QuickFIX sends and conformance suites compare.
        fields = business_reject_fields(message, UNSUPPORTED_MESSAGE_TYPE)
        session.send(BUSINESS_MESSAGE_REJECT, fields, now_ns, reply_to=message)

"""Building the messages the session layer sends: header, admin messages, rejects, resends.

Field order
-----------
Outbound messages start ``8, 9, 35`` (the codec adds 8 and 9), then the other header fields
in ascending tag order (34, 43, 49, 50, 52, 56, 57, 97, 115, 116, 122, 128, 129, 144, 145...),
then the body in the order given, then ``10``. The FIX spec only fixes the first three
fields; ascending order is what QuickFIX emits, and conformance suites written against
QuickFIX compare field by field, so we produce the same order.

Reject texts are the standard SessionRejectReason descriptions (QuickFIX uses the same).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from fixserver.codec import FieldValue, FixMessage, encode, frame_body, parse
from fixserver.settings import SessionSettings
from fixserver.timeutil import format_utc_timestamp

ADMIN_MSG_TYPES = frozenset({b"0", b"1", b"2", b"3", b"4", b"5", b"A"})

#: the FIX 4.4 standard header tags (used to split a stored message into header and body).
HEADER_TAGS = frozenset(
    {
        8,
        9,
        35,
        49,
        56,
        115,
        128,
        90,
        91,
        34,
        50,
        142,
        57,
        143,
        116,
        144,
        129,
        145,
        43,
        97,
        52,
        122,
        212,
        213,
        347,
        369,
        627,
        628,
        629,
        630,
    }
)

#: inbound routing tag -> the tag that carries its value on our reply
#: (OnBehalfOf* <-> DeliverTo*, for CompID, SubID and LocationID).
REVERSE_ROUTE = {115: 128, 116: 129, 144: 145, 128: 115, 129: 116, 145: 144}


class RejectReason:
    """SessionRejectReason (373) values."""

    INVALID_TAG_NUMBER = 0
    REQUIRED_TAG_MISSING = 1
    TAG_NOT_DEFINED_FOR_MSG_TYPE = 2
    UNDEFINED_TAG = 3
    TAG_WITHOUT_VALUE = 4
    VALUE_INCORRECT = 5
    INCORRECT_DATA_FORMAT = 6
    DECRYPTION_PROBLEM = 7
    SIGNATURE_PROBLEM = 8
    COMPID_PROBLEM = 9
    SENDING_TIME_ACCURACY = 10
    INVALID_MSG_TYPE = 11
    TAG_APPEARS_MORE_THAN_ONCE = 13
    TAG_OUT_OF_ORDER = 14
    GROUP_FIELDS_OUT_OF_ORDER = 15
    INCORRECT_NUM_IN_GROUP = 16
    FIELD_DELIMITER_IN_VALUE = 17
    OTHER = 99


REJECT_REASON_TEXT = {
    0: "Invalid tag number",
    1: "Required tag missing",
    2: "Tag not defined for this message type",
    3: "Undefined Tag",
    4: "Tag specified without a value",
    5: "Value is incorrect (out of range) for this tag",
    6: "Incorrect data format for value",
    7: "Decryption problem",
    8: "Signature problem",
    9: "CompID problem",
    10: "SendingTime accuracy problem",
    11: "Invalid MsgType",
    13: "Tag appears more than once",
    14: "Tag specified out of required order",
    15: "Repeating group fields out of order",
    16: "Incorrect NumInGroup count for repeating group",
    17: "Non-data value includes field delimiter (SOH character)",
    99: "Other",
}

UNSUPPORTED_MESSAGE_TYPE = 3  # BusinessRejectReason (380)
UNSUPPORTED_MESSAGE_TYPE_TEXT = "Unsupported Message Type"

Fields = Sequence[tuple[int, FieldValue]]


def reply_routing(message: FixMessage) -> list[tuple[int, bytes]]:
    """Routing header fields for a reply to ``message``: its OnBehalfOf* values come back as
    DeliverTo* and vice versa; empty values are not reversed."""
    route = []
    for tag, value in message.fields:
        out_tag = REVERSE_ROUTE.get(tag)
        if out_tag is not None and value:
            route.append((out_tag, value))
    return route


class HeaderBuilder:
    """Encodes complete outbound messages for one configured session."""

    __slots__ = ("_after_52", "_before_52", "begin_string", "static")

    def __init__(self, settings: SessionSettings) -> None:
        self.begin_string = settings.begin_string.encode("latin-1")
        static: list[tuple[int, FieldValue]] = [(49, settings.sender_comp_id)]
        if settings.sender_sub_id:
            static.append((50, settings.sender_sub_id))
        static.append((56, settings.target_comp_id))
        if settings.target_sub_id:
            static.append((57, settings.target_sub_id))
        self.static = static
        # The usual message has no extra header fields: its header is 35, 34, then these
        # constant fields around SendingTime (52), already in tag order and as bytes.
        as_bytes = [(tag, _latin1(value)) for tag, value in static]
        self._before_52 = [f for f in as_bytes if f[0] < 52]
        self._after_52 = [f for f in as_bytes if f[0] > 52]

    def encode(
        self,
        msg_type: bytes | str,
        seq: int,
        sending_time: bytes,
        body: Iterable[tuple[int, FieldValue]] = (),
        header: Iterable[tuple[int, FieldValue]] = (),
    ) -> bytes:
        if not header:
            fields: list[tuple[int, FieldValue]] = [(35, msg_type), (34, seq), *self._before_52,
                                                    (52, sending_time), *self._after_52]
            fields.extend(body)
            return encode(fields, self.begin_string)
        fields = [(34, seq), (52, sending_time), *self.static]
        fields.extend(header)
        fields.sort(key=_tag_of)
        fields.insert(0, (35, msg_type))
        fields.extend(body)
        return encode(fields, self.begin_string)


def _tag_of(field: tuple[int, FieldValue]) -> int:
    return field[0]


def _latin1(value: FieldValue) -> FieldValue:
    return value.encode("latin-1") if isinstance(value, str) else value


def reject_fields(
    ref_seq: int | None, ref_msg_type: bytes, reason: int, ref_tag: int | None, text: str | None
) -> list[tuple[int, FieldValue]]:
    """Body of a session-level Reject (35=3), tags in ascending order."""
    body: list[tuple[int, FieldValue]] = []
    if ref_seq is not None:
        body.append((45, ref_seq))
    body.append((58, text or REJECT_REASON_TEXT.get(reason, "Rejected")))
    if ref_tag is not None:
        body.append((371, ref_tag))
    if ref_msg_type:
        body.append((372, ref_msg_type))
    body.append((373, reason))
    return body


def business_reject_fields(
    message: FixMessage, reason: int = UNSUPPORTED_MESSAGE_TYPE, text: str | None = None
) -> list[tuple[int, FieldValue]]:
    """Body of a BusinessMessageReject (35=j) answering ``message`` (send it with
    ``session.send("j", fields, now_ns, reply_to=message)``)."""
    body: list[tuple[int, FieldValue]] = []
    seq = message.get(34)
    if seq:
        body.append((45, seq))
    if text is None and reason == UNSUPPORTED_MESSAGE_TYPE:
        text = UNSUPPORTED_MESSAGE_TYPE_TEXT
    if text:
        body.append((58, text))
    body.append((372, message.msg_type))
    body.append((380, reason))
    return body


#: header tags as they appear on the wire -> the tag
_HEADER_TAG_OF = {b"%d" % tag: tag for tag in HEADER_TAGS}
#: header data fields: their values may hold SOH, so a header with one is parsed properly
_HEADER_DATA_TAGS = frozenset({90, 91, 212, 213})


def rewrite_for_resend(raw: bytes, now_ns: int, sending_time: bytes | None = None) -> bytes:
    """A stored message as a retransmission: same MsgSeqNum and body, PossDupFlag=Y,
    OrigSendingTime = its original SendingTime, SendingTime = now (``sending_time``, when
    given, is ``now_ns`` already formatted: a resend chunk formats it once).

    The header is rebuilt field by field; the body is copied as it is (split and joined at
    SOH, which keeps data fields with SOH inside intact). A message of another shape goes
    through the parser (``_rewrite_parsed``, same result)."""
    if sending_time is None:
        sending_time = format_utc_timestamp(now_ns)
    parts = raw.split(b"\x01")
    # parts: 8=, 9=, 35=, header..., body..., 10=, b"" (after the last SOH)
    last = len(parts) - 2
    if (
        last < 3
        or parts[-1]
        or not parts[2].startswith(b"35=")
        or not parts[last].startswith(b"10=")
    ):
        return _rewrite_parsed(raw, sending_time)
    header: list[tuple[int, bytes]] = []
    orig_sending_time = b""
    index = 3
    tag_of = _HEADER_TAG_OF.get
    while index < last:
        field = parts[index]
        tag = tag_of(field[: field.find(b"=")])
        if tag is None:
            break  # the first body field
        if tag == 52:
            orig_sending_time = field[3:]
        elif tag in _HEADER_DATA_TAGS:
            return _rewrite_parsed(raw, sending_time)
        elif tag != 43 and tag != 122:
            header.append((tag, field))
        index += 1
    header.append((43, b"43=Y"))
    header.append((52, b"52=" + sending_time))
    if orig_sending_time:
        header.append((122, b"122=" + orig_sending_time))
    header.sort()
    fields = [parts[2], *[field for _, field in header], *parts[index:last], b""]
    return frame_body(b"\x01".join(fields), parts[0][2:])


def _rewrite_parsed(raw: bytes, sending_time: bytes) -> bytes:
    """``rewrite_for_resend`` through the codec's parser (any message shape)."""
    message = parse(raw)
    fields = message.fields
    header: list[tuple[int, FieldValue]] = []
    body_start = len(fields)
    orig_sending_time = b""
    msg_type = b""
    for index, (tag, value) in enumerate(fields):
        if tag == 35:
            msg_type = value
        elif tag in (8, 9, 43, 122):
            continue
        elif tag == 52:
            orig_sending_time = value
        elif tag in HEADER_TAGS:
            header.append((tag, value))
        else:
            body_start = index
            break
    header.append((43, b"Y"))
    header.append((52, sending_time))
    if orig_sending_time:
        header.append((122, orig_sending_time))
    header.sort(key=_tag_of)
    body = [(t, v) for t, v in fields[body_start:] if t != 10]
    out: list[tuple[int, FieldValue]] = [(35, msg_type), *header, *body]
    return encode(out, message.begin_string)

"""FIX tag=value codec: framing a TCP byte stream into messages, parsing and encoding.

Theory of operation
-------------------
A FIX message on the wire is ``8=BeginString|9=BodyLength|...body...|10=CheckSum|`` where
BodyLength counts the bytes after the ``9=`` field up to and including the SOH before ``10=``
and CheckSum is the byte sum of everything before ``10=`` modulo 256, as three digits.

``FrameDecoder`` is sans-IO: ``feed(bytes)`` queues bytes, ``next_message()`` returns a
``FixMessage``, a ``GarbledMessage`` (bytes that cannot be trusted: garbage before a frame, a
bad BodyLength, a bad CheckSum, an oversize frame, a malformed field) or ``None`` when more
bytes are needed. Every returned object consumes exactly its ``raw`` bytes from the front of
the stream, so the raws of everything returned plus what is still buffered is the input. After
a frame whose header does not check out the decoder resynchronises on the next ``8=`` after
that frame's start, so a good message behind a broken one is still found. A frame whose
BodyLength does not end at a CheckSum field is dropped the way QuickFIX drops it: up to the
first ``<SOH>10=...<SOH>`` at or after where BodyLength says the body ends, which with a
too-long BodyLength swallows the next message too (the conformance suites expect that). Garbled
frames are reported so the session can log them; per the FIX session protocol they are ignored
and never consume a sequence number.

Waiting is bounded: the header must fit in a few dozen bytes and the frame size announced by
BodyLength is checked against ``max_message_size`` before any body byte is awaited, so an
oversize BodyLength is rejected at once. Fed bytes are queued and only joined into the scan
buffer once enough have arrived to complete the awaited part, so a frame dribbled in one byte
at a time costs linear, not quadratic, copying.

Parsing has a fast path built from a handful of C-level bytes operations (translate, replace,
split, slicing, one set test) and no per-field Python code. It applies when the separators
strictly alternate ``=`` and SOH (no ``=`` inside a value), every tag is a canonical number
below 10000 and no length tag of a data field is present; anything else goes to the careful
parser, which reads data fields (which may contain SOH) by their length. Like QuickFIX, the
careful parser reads a tag as a signed 32-bit number, so ``0=x`` and ``-1=x`` parse (the
dictionary rejects those tags with Reject 373=0); a tag that is not a number garbles the
frame. ``FixMessage`` keeps the fields in wire order (repeating groups are walked by the
dictionary) and builds its tag index and the ``(int, bytes)`` field list only when first asked.

The CheckSum is summed by ``zlib.adler32``: its low half is ``1 + sum(bytes) mod 65521``, which
is the exact byte sum for chunks short enough never to reach 65521 (256 bytes, or 515 bytes of
ASCII), about ten times faster than ``sum()`` over the bytes.

On CPython the optional C extension ``fixserver._codec_accel`` (built by setup.py where a
compiler is available) takes over the two hot paths: the stream fast path (header, BodyLength,
trailer, CheckSum and the field split in one call, tags shared from a table instead of
allocated) and ``encode``/``frame_body``. It accepts exactly what the pure fast paths accept
and returns None for everything else, which then goes through the same careful Python code, so
the pure code is the reference: tests check both give identical results. Setting the
environment variable ``FIXSERVER_PURE_CODEC=1`` (or running on PyPy, or without the built
extension) uses the pure code only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Union
from zlib import adler32

try:
    if os.environ.get("FIXSERVER_PURE_CODEC", "") not in ("", "0"):
        raise ImportError("FIXSERVER_PURE_CODEC is set")
    from fixserver import _codec_accel
except ImportError:
    _codec_accel = None  # type: ignore[assignment]  # PyPy, no compiler, or pure asked for

#: Whether the C accelerator is in use (FrameDecoder's default, and encode/frame_body).
ACCELERATED = _codec_accel is not None

SOH = b"\x01"

#: length tag -> data tag, for the standard FIX 4.4 ``data`` fields.
STANDARD_DATA_TAGS: dict[int, int] = {
    90: 91,  # SecureDataLen / SecureData
    93: 89,  # SignatureLength / Signature
    95: 96,  # RawDataLength / RawData
    212: 213,  # XmlDataLen / XmlData
    348: 349,  # EncodedIssuerLen
    350: 351,  # EncodedSecurityDescLen
    352: 353,  # EncodedListExecInstLen
    354: 355,  # EncodedTextLen
    356: 357,  # EncodedSubjectLen
    358: 359,  # EncodedHeadlineLen
    360: 361,  # EncodedAllocTextLen
    362: 363,  # EncodedUnderlyingIssuerLen
    364: 365,  # EncodedUnderlyingSecurityDescLen
    445: 446,  # EncodedListStatusTextLen
    618: 619,  # EncodedLegIssuerLen
    621: 622,  # EncodedLegSecurityDescLen
}

DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024

#: Longest ``8=...<SOH>`` field accepted while looking for the header ("8=FIXT.1.1" is 11).
MAX_BEGIN_STRING_FIELD = 32
#: Most BodyLength digits accepted before the value is known to be oversize anyway.
MAX_BODY_LENGTH_DIGITS = 9
#: ``10=nnn<SOH>``
TRAILER_SIZE = 7

FieldValue = Union[bytes, str, int]

# Tags below this bound have their canonical decimal bytes precomputed.
_TAG_TABLE_SIZE = 10000
_TAG_BYTES: tuple[bytes, ...] = tuple(b"%d" % tag for tag in range(_TAG_TABLE_SIZE))
_TAG_INT: dict[bytes, int] = {key: tag for tag, key in enumerate(_TAG_BYTES)}
_ALL_BUT_SEPARATORS = bytes(b for b in range(256) if b not in (0x01, 0x3D))
_CHECKSUM_FIELDS: tuple[bytes, ...] = tuple(b"10=%03d\x01" % value for value in range(256))
#: ``10=nnn<SOH>`` -> nnn for the values a CheckSum can have; one dict lookup checks a trailer.
_TRAILER_VALUES: dict[bytes, int] = {field: value for value, field in enumerate(_CHECKSUM_FIELDS)}
#: The fast path's header: BeginString and BodyLength exactly as the careful path accepts them.
_match_header = re.compile(
    rb"8=[^\x01]{1,%d}\x019=([0-9]{1,%d})\x01"
    % (MAX_BEGIN_STRING_FIELD - 3, MAX_BODY_LENGTH_DIGITS)
).match
#: Byte sum of the trailer ``10=nnn<SOH>`` by its declared value nnn (0-999).
_TRAILER_SUMS: tuple[int, ...] = tuple(sum(b"10=%03d\x01" % value) for value in range(1000))


class FixCodecError(Exception):
    """A byte string is not a well-formed FIX message."""


_TAG_KEYS: dict[int, bytes] = dict(enumerate(_TAG_BYTES))


def _tag_key(tag: int) -> bytes:
    """The canonical wire bytes of a tag number (the key of a message's tag index)."""
    return _TAG_KEYS.get(tag) or b"%d" % tag


class FixMessage:
    """A parsed FIX message: its fields in wire order.

    ``fields`` is the list of ``(tag, value_bytes)`` pairs (read-only by convention); ``get``
    returns the first occurrence of a tag; repeating groups are walked by the dictionary over
    ``fields``. Internally the tags are kept as their canonical decimal bytes next to the
    values; the tag index and the ``fields`` list are built on first use.
    """

    __slots__ = ("_fields", "_index", "_tags", "_values", "raw")

    def __init__(self, fields: list[tuple[int, bytes]], raw: bytes = b"") -> None:
        self._fields: list[tuple[int, bytes]] | None = fields
        self._index: dict[bytes, bytes] | None = None
        self._tags = [_tag_key(tag) for tag, _ in fields]
        self._values = [value for _, value in fields]
        self.raw = raw

    @property
    def fields(self) -> list[tuple[int, bytes]]:
        fields = self._fields
        if fields is not None:
            return fields
        try:
            ints = list(map(_TAG_INT.__getitem__, self._tags))
        except KeyError:
            ints = list(map(int, self._tags))
        fields = self._fields = list(zip(ints, self._values))
        return fields

    def _build_index(self) -> dict[bytes, bytes]:
        # Reversed so that the first occurrence of a repeated tag is the one kept.
        index = self._index = dict(zip(reversed(self._tags), reversed(self._values)))
        return index

    def get(self, tag: int, default: bytes | None = None) -> bytes | None:
        index = self._index
        if index is None:
            index = self._build_index()
        return index.get(_TAG_KEYS.get(tag) or b"%d" % tag, default)

    def get_str(self, tag: int, default: str | None = None) -> str | None:
        value = self.get(tag)
        return default if value is None else value.decode("latin-1")

    def get_int(self, tag: int, default: int | None = None) -> int | None:
        """The tag's value as an int; ``default`` when absent. Raises ValueError if not an int."""
        value = self.get(tag)
        if value is None:
            return default
        if not value.isdigit() and not (value[:1] == b"-" and value[1:].isdigit()):
            # int() would also take " 1", "+1" and "1_0", none of which FIX allows.
            raise ValueError(f"tag {tag} value {value!r} is not an integer")
        return int(value)

    def __contains__(self, tag: object) -> bool:
        if not isinstance(tag, int):
            return False
        return self.get(tag) is not None

    def get_all(self, tag: int) -> list[bytes]:
        """Every occurrence of a tag, in wire order."""
        key = _tag_key(tag)
        return [value for t, value in zip(self._tags, self._values) if t == key]

    @property
    def msg_type(self) -> bytes:
        return self.get(35, b"")  # type: ignore[return-value]

    @property
    def begin_string(self) -> bytes:
        return self.get(8, b"")  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self._tags)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FixMessage):
            return NotImplemented
        return self._tags == other._tags and self._values == other._values

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        body = "|".join(
            f"{t.decode('ascii')}={v.decode('latin-1')}" for t, v in zip(self._tags, self._values)
        )
        return f"FixMessage({body})"


_new_message = object.__new__


class _WireMessage(FixMessage):
    """A FixMessage straight off the wire: split tag bytes (canonical) and values, no copying."""

    __slots__ = ()

    def __init__(self, tags: list[bytes], values: list[bytes], raw: bytes) -> None:
        self._tags = tags
        self._values = values
        self._fields = None
        self._index = None
        self.raw = raw


class GarbledMessage:
    """Bytes that failed framing checks; the session ignores them (no sequence number used)."""

    __slots__ = ("raw", "reason")

    def __init__(self, reason: str, raw: bytes) -> None:
        self.reason = reason
        self.raw = raw

    def __repr__(self) -> str:
        return f"GarbledMessage({self.reason!r}, {self.raw[:60]!r})"


def _byte_sum(data: bytes) -> int:
    """The exact sum of the bytes of ``data`` (see the module docstring for the adler32 trick)."""
    size = len(data)
    chunk = 515 if data.isascii() else 256
    if size <= chunk:
        return (adler32(data) & 0xFFFF) - 1
    view = memoryview(data)
    total = 0
    for start in range(0, size, chunk):
        total += (adler32(view[start : start + chunk]) & 0xFFFF) - 1
    return total


def checksum(data: bytes) -> int:
    """The FIX CheckSum of ``data``: its byte sum modulo 256."""
    return _byte_sum(data) & 0xFF


_FAST_TAG_SETS: dict[frozenset[int], frozenset[bytes]] = {}
_FAST_TAG_TABLES: dict[frozenset[bytes], tuple[bytes | None, ...]] = {}


def _fast_tag_set(data_tags: dict[int, int]) -> frozenset[bytes]:
    """Tags the fast parser accepts: canonical numbers except the data-length tags (cached)."""
    length_tags = frozenset(data_tags)
    fast_tags = _FAST_TAG_SETS.get(length_tags)
    if fast_tags is None:
        fast_tags = frozenset(_TAG_BYTES[1:]) - {_tag_key(tag) for tag in length_tags}
        _FAST_TAG_SETS[length_tags] = fast_tags
    return fast_tags


def _fast_tag_table(fast_tags: frozenset[bytes]) -> tuple[bytes | None, ...]:
    """The C accelerator's form of a fast tag set: tag number -> its canonical bytes or None."""
    table = _FAST_TAG_TABLES.get(fast_tags)
    if table is None:
        table = tuple(key if key in fast_tags else None for key in _TAG_BYTES)
        _FAST_TAG_TABLES[fast_tags] = table
    return table


_MIN_TAG = -(2**31)
_MAX_TAG = 2**31 - 1


def _split_careful(raw: bytes, data_tags: dict[int, int]) -> tuple[list[bytes], list[bytes]]:
    """Split ``tag=value<SOH>`` fields one by one, reading data fields by their length.

    Returns canonical tag bytes and values. Raises FixCodecError for a field without ``=``, a
    tag that is not a (possibly negative) 32-bit number, a bad data length or a missing final
    SOH.
    """
    tags: list[bytes] = []
    values: list[bytes] = []
    pos = 0
    end = len(raw)
    pending_data: dict[int, int] = {}
    while pos < end:
        eq = raw.find(b"=", pos)
        if eq < 0:
            raise FixCodecError(f"field without '=' at offset {pos}")
        tag_bytes = raw[pos:eq]
        if not tag_bytes.isdigit() and not (tag_bytes[:1] == b"-" and tag_bytes[1:].isdigit()):
            raise FixCodecError(f"tag {tag_bytes[:20]!r} is not a number at offset {pos}")
        # A signed 32-bit number, as QuickFIX reads tags: "0" and "-1" are parsed (the
        # dictionary rejects them as invalid tag numbers, 373=0); larger ones cannot be tags.
        # Leading zeros go first: int() refuses strings of thousands of digits.
        digits = tag_bytes.lstrip(b"-").lstrip(b"0") or b"0"
        tag = int(digits) if len(digits) <= 10 else _MAX_TAG + 1
        if tag_bytes[:1] == b"-":
            tag = -tag
        if not _MIN_TAG <= tag <= _MAX_TAG:
            raise FixCodecError(f"tag {tag_bytes[:20]!r} is out of range at offset {pos}")
        start = eq + 1
        length = pending_data.pop(tag, None)
        if length is not None:
            stop = start + length
            if raw[stop : stop + 1] != SOH:
                raise FixCodecError(f"data field {tag} is not {length} bytes long")
        else:
            stop = raw.find(SOH, start)
            if stop < 0:
                raise FixCodecError(f"field {tag} is not terminated by SOH")
        value = raw[start:stop]
        tags.append(_tag_key(tag))
        values.append(value)
        data_tag = data_tags.get(tag)
        if data_tag is not None:
            if not value.isdigit():
                raise FixCodecError(f"length field {tag} has non-numeric value {value!r}")
            pending_data[data_tag] = int(value)
        pos = stop + 1
    return tags, values


def _split(
    raw: bytes, data_tags: dict[int, int], fast_tags: frozenset[bytes]
) -> tuple[list[bytes], list[bytes]]:
    """Split wire fields: the C-level fast path when it provably applies, else the careful one."""
    separators = raw.translate(None, _ALL_BUT_SEPARATORS)
    if separators == b"=\x01" * (len(separators) >> 1):
        # Every field is tag=value<SOH> with no '=' in a value, so after turning '=' into SOH
        # the pieces alternate tag, value (and a final empty piece after the last SOH).
        parts = raw.replace(b"=", SOH).split(SOH)
        tags = parts[0:-1:2]
        if fast_tags.issuperset(tags):
            return tags, parts[1::2]
    return _split_careful(raw, data_tags)


def parse_fields(
    body: bytes, data_tags: dict[int, int] = STANDARD_DATA_TAGS
) -> list[tuple[int, bytes]]:
    """Split ``tag=value<SOH>`` pairs, reading length-prefixed data fields by their length.

    Raises FixCodecError for a field without ``=``, a tag that is not a number or a bad data
    length.
    """
    tags, values = _split_careful(body, data_tags)
    return list(zip(map(int, tags), values))


def parse(raw: bytes, data_tags: dict[int, int] = STANDARD_DATA_TAGS) -> FixMessage:
    """Split one complete message into fields; raises FixCodecError.

    BodyLength and CheckSum are not verified here; ``FrameDecoder`` does that.
    """
    tags, values = _split(raw, data_tags, _fast_tag_set(data_tags))
    return _WireMessage(tags, values, raw)


def _awaits(buf: bytes, at: int, expected: bytes) -> bool:
    """True if the bytes from ``at`` to the end are a proper prefix of ``expected``."""
    tail = buf[at:]
    return len(tail) < len(expected) and expected.startswith(tail)


class FrameDecoder:
    """Frames a byte stream into FIX messages (sans-IO).

    ``feed(data)`` as bytes arrive, then call ``next_message()`` until it returns ``None``.
    """

    def __init__(
        self,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        data_tags: dict[int, int] = STANDARD_DATA_TAGS,
        accelerated: bool | None = None,
    ) -> None:
        """``accelerated``: use the C fast path (default: when it is available); False forces
        the pure-Python code, True raises ValueError where the extension is not available."""
        self.max_message_size = max_message_size
        self.data_tags = data_tags
        self._fast_tags = _fast_tag_set(data_tags)
        if accelerated is None:
            accelerated = _codec_accel is not None
        if accelerated and _codec_accel is None:
            raise ValueError("the C codec accelerator is not available")
        self._next_frame = _codec_accel.next_frame if accelerated else None
        self._fast_table = _fast_tag_table(self._fast_tags) if accelerated else ()
        # Scan buffer and the offset of its first unconsumed byte.
        self._buf = b""
        self._pos = 0
        # Bytes fed but not yet joined into the scan buffer, and how many bytes past _pos
        # must be available before scanning again can make progress.
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._need = 0

    def feed(self, data: bytes) -> None:
        if data:
            self._pending.append(bytes(data))
            self._pending_size += len(data)

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet returned in a message."""
        return len(self._buf) - self._pos + self._pending_size

    def _absorb_pending(self) -> None:
        pending = self._pending
        if self._pos == len(self._buf) and len(pending) == 1:
            self._buf = pending[0]
        else:
            pending.insert(0, self._buf[self._pos :])
            self._buf = b"".join(pending)
        self._pos = 0
        self._pending = []
        self._pending_size = 0
        self._need = 0

    def next_message(self) -> FixMessage | GarbledMessage | None:
        """The next message, garbled frame or junk; None until more bytes are fed."""
        if self._pending:
            if len(self._buf) - self._pos + self._pending_size < self._need:
                return None
            self._absorb_pending()
        next_frame = self._next_frame
        if next_frame is not None:
            # The pure fast path below, in C; None for everything that path does not take.
            found = next_frame(self._buf, self._pos, self.max_message_size, self._fast_table)
            if found is None:
                return self._next_careful()
            msg = _new_message(_WireMessage)
            self._pos, msg.raw, msg._tags, msg._values = found
            msg._fields = None
            msg._index = None
            return msg
        # Fast path: a complete, well-formed frame whose fields the C-level split can take.
        # Everything it does not return is left to _next_careful, which decides from scratch.
        buf = self._buf
        pos = self._pos
        header = _match_header(buf, pos)
        if header is not None:
            end = header.end() + int(header.group(1)) + TRAILER_SIZE
            size = end - pos
            if end <= len(buf) and size <= self.max_message_size:
                raw = buf[pos:end]
                declared = _TRAILER_VALUES.get(raw[-TRAILER_SIZE:])
                if declared is not None:
                    if size <= 256 or (size <= 515 and raw.isascii()):
                        total = (adler32(raw) & 0xFFFF) - 1
                    else:
                        total = _byte_sum(raw)
                    if (total - _TRAILER_SUMS[declared]) & 0xFF == declared:
                        separators = raw.translate(None, _ALL_BUT_SEPARATORS)
                        if separators == b"=\x01" * (len(separators) >> 1):
                            parts = raw.replace(b"=", SOH).split(SOH)
                            tags = parts[0:-1:2]
                            if self._fast_tags.issuperset(tags):
                                self._pos = end
                                # Built inline: a constructor call costs a Python frame.
                                msg = _new_message(_WireMessage)
                                msg._tags = tags
                                msg._values = parts[1::2]
                                msg._fields = None
                                msg._index = None
                                msg.raw = raw
                                return msg
        return self._next_careful()

    def _next_careful(self) -> FixMessage | GarbledMessage | None:
        """The framing rules spelled out step by step, with every way of waiting or failing."""
        buf = self._buf
        pos = self._pos
        size = len(buf)
        if pos == size:
            return None
        if not buf.startswith(b"8=", pos):
            return self._skip_junk()
        # Header: 8=<BeginString><SOH>9=<BodyLength><SOH>
        soh1 = buf.find(SOH, pos + 2, pos + MAX_BEGIN_STRING_FIELD)
        if soh1 < 0:
            if size - pos < MAX_BEGIN_STRING_FIELD:
                self._need = size - pos + 1
                return None
            return self._drop_frame("BeginString (8) is too long or not terminated")
        if not buf.startswith(b"9=", soh1 + 1):
            if _awaits(buf, soh1 + 1, b"9="):
                self._need = size - pos + 1
                return None
            return self._drop_frame("BodyLength (9) is not the second field")
        digits_start = soh1 + 3
        digits_stop = digits_start + MAX_BODY_LENGTH_DIGITS + 1
        soh2 = buf.find(SOH, digits_start, digits_stop)
        length_digits = buf[digits_start : soh2 if soh2 >= 0 else digits_stop]
        if not length_digits.isdigit():
            if soh2 < 0 and not length_digits:
                self._need = size - pos + 1
                return None
            return self._drop_frame(f"BodyLength (9) {length_digits!r} is not a number")
        if soh2 < 0:
            if size - digits_start <= MAX_BODY_LENGTH_DIGITS:
                self._need = size - pos + 1
                return None
            return self._drop_frame("BodyLength (9) has too many digits")
        end = soh2 + 1 + int(length_digits) + TRAILER_SIZE
        if end - pos > self.max_message_size:
            return self._drop_frame(
                f"message of {end - pos} bytes exceeds the maximum of {self.max_message_size}"
            )
        if size < end:
            self._need = end - pos
            return None
        # Trailer: 10=<three digits><SOH> exactly where BodyLength says the body ends.
        trailer = end - TRAILER_SIZE
        checksum_digits = buf[trailer + 3 : end - 1]
        if not (
            buf.startswith(b"10=", trailer) and buf[end - 1] == 1 and checksum_digits.isdigit()
        ):
            return self._drop_misframed(trailer, length_digits)
        raw = buf[pos:end]
        self._pos = end
        declared = int(checksum_digits)
        # Summing the whole frame and taking the trailer off saves slicing the frame.
        actual = (_byte_sum(raw) - _TRAILER_SUMS[declared]) & 0xFF
        if declared != actual:
            return GarbledMessage(
                f"CheckSum (10) {checksum_digits.decode('ascii')} is wrong, expected {actual:03d}",
                raw,
            )
        try:
            tags, values = _split(raw, self.data_tags, self._fast_tags)
        except FixCodecError as exc:
            return GarbledMessage(str(exc), raw)
        return _WireMessage(tags, values, raw)

    def _drop_misframed(self, trailer: int, length_digits: bytes) -> GarbledMessage | None:
        """Drop a frame whose BodyLength does not end at its CheckSum, as QuickFIX does.

        QuickFIX's parser takes a frame to end at the first ``<SOH>10=...<SOH>`` found from the
        SOH where BodyLength says the body ends: a too-short BodyLength drops the message up to
        its own CheckSum, a too-long one also swallows the message after it (the acceptance
        test 2m_BodyLengthValueNotCorrect expects exactly that). The frame must still fit in
        ``max_message_size``; when no trailer can end it within that bound, the frame is
        dropped up to the next ``8=`` instead. While the trailer is awaited every new byte
        rescans (bounded by ``max_message_size``; only a broken frame pays this).
        """
        buf = self._buf
        pos = self._pos
        limit = pos + self.max_message_size
        found = buf.find(b"\x0110=", trailer - 1, limit)
        if found >= 0:
            stop = buf.find(SOH, found + 4, limit)
            if stop >= 0:
                self._pos = stop + 1
                return GarbledMessage(
                    f"BodyLength (9) {length_digits.decode('ascii')} does not end at a "
                    "CheckSum (10) field; dropped up to the next CheckSum",
                    buf[pos : stop + 1],
                )
        if len(buf) >= limit:
            return self._drop_frame(
                "BodyLength (9) does not end at a CheckSum (10) field and no CheckSum ends "
                f"a frame within {self.max_message_size} bytes"
            )
        self._need = len(buf) - pos + 1
        return None

    def _consume(self, stop: int, reason: str) -> GarbledMessage | None:
        """Report the bytes from the scan position to ``stop`` as garbled and drop them."""
        start = self._pos
        if stop == start:
            return None
        self._pos = stop
        return GarbledMessage(reason, self._buf[start:stop])

    def _resync_point(self, after: int) -> int:
        """Where the next possible frame starts at or after ``after``.

        A final lone ``8`` may be the start of ``8=`` still in flight, so it is kept.
        """
        buf = self._buf
        nxt = buf.find(b"8=", after)
        if nxt >= 0:
            return nxt
        if buf.endswith(b"8") and len(buf) - 1 >= after:
            return len(buf) - 1
        return len(buf)

    def _skip_junk(self) -> GarbledMessage | None:
        garbled = self._consume(self._resync_point(self._pos), "data before BeginString (8)")
        if garbled is None:
            self._need = len(self._buf) - self._pos + 1
            return None
        return garbled

    def _drop_frame(self, reason: str) -> GarbledMessage | None:
        """Drop a frame that cannot be trusted, up to the next ``8=`` after its start."""
        return self._consume(self._resync_point(self._pos + 1), reason)


def _to_bytes(value: FieldValue) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("latin-1")
    if isinstance(value, int):
        return b"%d" % value
    raise TypeError(f"FIX field value must be bytes, str or int, not {type(value).__name__}")


_HEADER_PREFIXES: dict[bytes, bytes] = {}


def _header_prefix(begin_string: bytes) -> bytes:
    """``8=<BeginString><SOH>9=`` (cached per BeginString)."""
    prefix = _HEADER_PREFIXES.get(begin_string)
    if prefix is None:
        prefix = _HEADER_PREFIXES[begin_string] = b"8=%s\x019=" % begin_string
    return prefix


def frame_body(body: bytes, begin_string: bytes = b"FIX.4.4") -> bytes:
    """Wrap an encoded body (``35=...<SOH>...<SOH>``) with BeginString, BodyLength, CheckSum."""
    prefix = _HEADER_PREFIXES.get(begin_string) or _header_prefix(begin_string)
    if _codec_accel is not None:
        framed = _codec_accel.frame_body(prefix, body)
        if framed is not None:
            return framed
    head = b"%s%d\x01" % (prefix, len(body))
    return b"%s%s%s" % (head, body, _CHECKSUM_FIELDS[(_byte_sum(head) + _byte_sum(body)) & 0xFF])


def encode_body(fields: Iterable[tuple[int, FieldValue]]) -> bytes:
    """Encode fields as ``tag=value<SOH>...``; values may be bytes, str (latin-1) or int.

    Values are not checked for SOH: only data fields may contain it, by design of the caller.
    """
    if not isinstance(fields, (list, tuple)):
        fields = list(fields)
    try:
        # Fast path: every tag an int and every value already bytes.
        return b"".join(map(b"%d=%s\x01".__mod__, fields))
    except TypeError:
        return b"".join(b"%d=%s\x01" % (tag, _to_bytes(value)) for tag, value in fields)


def encode(fields: Iterable[tuple[int, FieldValue]], begin_string: bytes = b"FIX.4.4") -> bytes:
    """Encode a message from its fields (starting with 35, without 8, 9 and 10).

    Adds BeginString, BodyLength and CheckSum.
    """
    if _codec_accel is not None:
        # One C pass for a list or tuple of (int, bytes | latin-1 str | int) tuples; None for
        # any other shape, which the pure code converts or rejects.
        message = _codec_accel.encode_message(
            _HEADER_PREFIXES.get(begin_string) or _header_prefix(begin_string), fields
        )
        if message is not None:
            return message
    return frame_body(encode_body(fields), begin_string)

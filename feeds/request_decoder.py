"""Decoding client requests with bounded nesting, sans-IO.

Python's ``json`` decoder recurses once per ``[``/``{`` and raises :class:`RecursionError`
(not a ``ValueError``) on deep input such as 2,000 ``[``; msgpack's pure-Python fallback
(PyPy) recurses the same way. So the nesting depth is measured *before* decoding, without
building anything, and a request deeper than the limit is refused with
:class:`RequestTooDeep`. A real request nests two levels (an object holding a list).

- JSON (text frames, UTF-8 per RFC 6455): the text is decoded as UTF-8 first and the
  decoder is given the ``str``, never the bytes (``json.loads`` would otherwise guess
  UTF-16/32 from NUL bytes, and a scan of the UTF-8 reading would not match what it
  parses). One linear pass skips string literals and counts brackets: on valid JSON it
  gives the exact depth, on invalid JSON an upper bound of what the decoder reaches before
  it fails.
  A frame with no more brackets than the limit cannot be too deep and is not scanned.
- msgpack (binary frames): a walk over the type headers with an explicit stack of how many
  items each open container still holds. It stops at the limit, and leaves malformed or
  truncated input for the decoder to report.
"""

from __future__ import annotations

import json
import re
import struct
from typing import Any

from feeds.encoding import decode

# A string literal (an unterminated one runs to the end: the decoder stops there, and no
# retry from every later quote makes the scan quadratic) or a bracket.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)


class RequestTooDeep(ValueError):
    """A request nests containers deeper than the limit."""


def decode_request(data: bytes, is_binary: bool, max_depth: int) -> Any:
    """Decode one request frame (binary: msgpack, text: JSON) nesting at most ``max_depth``.

    Raises :class:`RequestTooDeep` for deeper input and ``ValueError`` for undecodable input.
    """
    if is_binary:
        if msgpack_too_deep(data, max_depth):
            raise RequestTooDeep(f"request nests deeper than {max_depth} levels")
        return decode(data, True)
    text = data.decode("utf-8")  # UnicodeDecodeError is a ValueError
    if json_too_deep(text, max_depth):
        raise RequestTooDeep(f"request nests deeper than {max_depth} levels")
    return json.loads(text)


def json_too_deep(text: str, max_depth: int) -> bool:
    """True if the JSON text opens more than ``max_depth`` arrays/objects at once."""
    if text.count("[") + text.count("{") <= max_depth:
        return False
    depth = 0
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token == "[" or token == "{":
            depth += 1
            if depth > max_depth:
                return True
        elif depth and (token == "]" or token == "}"):
            depth -= 1
    return False


# msgpack type byte -> (length of its size field, fixed extra bytes) for the variable-size
# scalars, and (payload bytes) for the fixed-size ones.
_SIZED = {0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0),  # bin 8/16/32
          0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1),  # ext 8/16/32 (+ type byte)
          0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0)}  # str 8/16/32
_FIXED = {0xC0: 0, 0xC2: 0, 0xC3: 0,  # nil, false, true
          0xCA: 4, 0xCB: 8,  # float 32/64
          0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,  # uint 8..64
          0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8,  # int 8..64
          0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17}  # fixext 1..16 (+ type byte)
_CONTAINERS = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}  # array/map 16/32
_UINT = {1: struct.Struct(">B"), 2: struct.Struct(">H"), 4: struct.Struct(">I")}


def msgpack_too_deep(data: bytes, max_depth: int) -> bool:
    """True if the msgpack data opens more than ``max_depth`` arrays/maps at once.

    Malformed or truncated data gives False: the decoder reports it.
    """
    if len(data) <= max_depth:
        return False  # every level takes at least one byte
    pending: list[int] = []  # items still expected by each open container, innermost last
    pos = 0
    end = len(data)
    while pos < end:
        b = data[pos]
        pos += 1
        items = -1  # for a container that starts here: how many items it holds
        # positive (0x00-0x7F) and negative (0xE0-0xFF) fixints match no branch: a whole
        # item in their one byte
        if 0x80 <= b <= 0x8F:
            items = 2 * (b & 0x0F)  # fixmap
        elif 0x90 <= b <= 0x9F:
            items = b & 0x0F  # fixarray
        elif 0xA0 <= b <= 0xBF:
            pos += b & 0x1F  # fixstr
        elif b in _FIXED:
            pos += _FIXED[b]
        elif b in _SIZED:
            width, extra = _SIZED[b]
            if pos + width > end:
                return False
            pos += width + extra + _UINT[width].unpack_from(data, pos)[0]
        elif b in _CONTAINERS:
            width, per_entry = _CONTAINERS[b]
            if pos + width > end:
                return False
            items = per_entry * _UINT[width].unpack_from(data, pos)[0]
            pos += width
        elif b == 0xC1:
            return False  # never used
        if items >= 0:
            if len(pending) >= max_depth:
                return True  # this container is one level deeper than the limit
            if items:
                pending.append(items)
                continue
        # a complete item fills a slot of its container, which may complete that one too
        while pending:
            pending[-1] -= 1
            if pending[-1]:
                break
            pending.pop()
    return False

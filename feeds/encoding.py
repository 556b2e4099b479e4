"""Wire formats: each feed message is encoded once per format, never per subscriber.

JSON goes out as UTF-8 text frames (compact separators), msgpack as binary frames. Payloads
are plain dicts, lists, strings, ints, bools and None, so both encoders take them as is.
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Any

import msgpack

_json_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode
_packb = msgpack.Packer(use_bin_type=True).pack


class WireFormat(str, Enum):
    """A connection's wire format; the value is what ``?format=`` and the format op take."""

    JSON = "json"
    MSGPACK = "msgpack"

    @property
    def is_binary(self) -> bool:
        """True for formats sent as binary WebSocket frames."""
        return self is WireFormat.MSGPACK


def encode(payload: Any, fmt: WireFormat) -> bytes:
    """Encode ``payload`` in ``fmt``."""
    if fmt is WireFormat.JSON:
        return _json_dumps(payload).encode("ascii")
    return _packb(payload)


def decode(data: bytes, is_binary: bool) -> Any:
    """Decode a frame: binary frames are msgpack, text frames JSON (raises ValueError)."""
    if is_binary:
        try:
            return msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises several unrelated exception types
            raise ValueError(f"invalid msgpack: {exc}") from exc
    return json.loads(data)  # JSONDecodeError and UnicodeDecodeError are ValueErrors

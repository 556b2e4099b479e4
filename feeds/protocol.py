"""The subscription protocol of one WebSocket connection, sans-IO.

:meth:`ClientSession.handle` takes one inbound frame and returns what to do, in order:
:class:`Reply` (send this control message to the client), :class:`Subscribe` and
:class:`Unsubscribe` (register with the hub). A subscribe's ``Reply`` (the ack) comes before
its ``Subscribe``, so the client sees ``subscribed`` before the channel's snapshot. The
session keeps the set of subscribed channels; it never raises on client input. The wire
format is fixed per connection (``?format=`` in the URL). See spec/websocket-feed.md.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any, NamedTuple, Union

from feeds.channels import Channel, ChannelError, ErrorCode, parse_channel
from feeds.encoding import WireFormat
from feeds.request_decoder import RequestTooDeep, decode_request

MAX_CHANNELS_PER_REQUEST = 50
MAX_REQUEST_DEPTH = 8  # a real request nests 2 levels (an object holding a list)


class Reply(NamedTuple):
    """A control message for the client."""

    payload: dict


class Subscribe(NamedTuple):
    """Register the connection on a channel (the hub then sends its snapshot)."""

    channel: Channel


class Unsubscribe(NamedTuple):
    """Remove the connection from a channel."""

    channel: Channel


Action = Union[Reply, Subscribe, Unsubscribe]


def error(code: ErrorCode, message: str, request_id: Any = None, **extra: Any) -> Reply:
    """An ``{"event":"error"}`` reply."""
    payload = {"event": "error", "code": int(code), "message": message, "id": request_id}
    payload.update(extra)
    return Reply(payload)


def parse_format(value: str | None) -> WireFormat:
    """The wire format named by a ``format`` URL parameter (None: JSON); raises ValueError."""
    if value is None:
        return WireFormat.JSON
    return WireFormat(value.lower())


class ClientSession:
    """Subscription state of one connection."""

    def __init__(
        self,
        symbols: Container[str],
        wire_format: WireFormat = WireFormat.JSON,
        max_subscriptions: int = 100,
    ) -> None:
        self.symbols = symbols
        self.wire_format = wire_format
        self.max_subscriptions = max_subscriptions
        self.subscriptions: dict[str, Channel] = {}  # canonical name -> channel

    def handle(self, data: bytes, is_binary: bool) -> list[Action]:
        """Actions answering one inbound frame."""
        try:
            request = decode_request(data, is_binary, MAX_REQUEST_DEPTH)
        except RequestTooDeep as exc:
            return [error(ErrorCode.BAD_REQUEST, str(exc))]
        except ValueError as exc:
            kind = "msgpack" if is_binary else "JSON"
            return [error(ErrorCode.BAD_JSON, f"request is not valid {kind}: {str(exc)[:120]}")]
        if not isinstance(request, dict):
            return [error(ErrorCode.BAD_REQUEST, "request must be an object")]
        request_id = request.get("id")
        if request_id is not None and (
            isinstance(request_id, bool) or not isinstance(request_id, (int, str))
        ):
            return [error(ErrorCode.BAD_REQUEST, "id must be an integer or a string")]
        op = request.get("op")
        if not isinstance(op, str):
            return [error(ErrorCode.BAD_REQUEST, 'missing "op"', request_id)]
        if op == "subscribe":
            return self._channels_op(request, request_id, self._subscribe)
        if op == "unsubscribe":
            return self._channels_op(request, request_id, self._unsubscribe)
        if op == "ping":
            return [Reply({"event": "pong", "id": request_id})]
        if op == "list":
            return [Reply({"event": "subscriptions", "channels": list(self.subscriptions),
                           "id": request_id})]
        return [error(ErrorCode.UNKNOWN_OP, f"unknown op {op[:40]!r}: expected subscribe, "
                      "unsubscribe, ping or list", request_id)]

    def _channels_op(self, request: dict, request_id: Any, one: Any) -> list[Action]:
        channels = request.get("channels")
        if not isinstance(channels, list) or not channels:
            return [error(ErrorCode.BAD_REQUEST, '"channels" must be a non-empty list',
                          request_id)]
        if len(channels) > MAX_CHANNELS_PER_REQUEST:
            return [error(ErrorCode.BAD_REQUEST,
                          f"at most {MAX_CHANNELS_PER_REQUEST} channels per request", request_id)]
        actions: list[Action] = []
        for name in channels:
            try:
                channel = parse_channel(name, self.symbols)
            except ChannelError as exc:
                shown = name[:100] if isinstance(name, str) else None
                actions.append(error(exc.code, exc.message, request_id, channel=shown))
                continue
            actions.extend(one(channel, request_id))
        return actions

    def _subscribe(self, channel: Channel, request_id: Any) -> list[Action]:
        name = channel.name
        if name in self.subscriptions:
            return [error(ErrorCode.ALREADY_SUBSCRIBED, f"already subscribed to {name}",
                          request_id, channel=name)]
        if len(self.subscriptions) >= self.max_subscriptions:
            return [error(ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                          f"at most {self.max_subscriptions} subscriptions per connection",
                          request_id, channel=name)]
        self.subscriptions[name] = channel
        return [Reply({"event": "subscribed", "channel": name, "id": request_id}),
                Subscribe(channel)]

    def _unsubscribe(self, channel: Channel, request_id: Any) -> list[Action]:
        name = channel.name
        if self.subscriptions.pop(name, None) is None:
            return [error(ErrorCode.NOT_SUBSCRIBED, f"not subscribed to {name}", request_id,
                          channel=name)]
        return [Unsubscribe(channel),
                Reply({"event": "unsubscribed", "channel": name, "id": request_id})]

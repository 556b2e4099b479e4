"""The subscription protocol acknowledges good requests and names what is wrong in bad ones."""

from __future__ import annotations

import json

import msgpack
import pytest

from feeds.channels import ErrorCode
from feeds.encoding import WireFormat
from feeds.protocol import ClientSession, Reply, Subscribe, Unsubscribe, parse_format

SYMBOLS = frozenset({"BTC-PERP", "ETH-PERP"})


def handle(session, request):
    """Send a JSON request (a str is sent as is) and return the actions."""
    data = request if isinstance(request, str) else json.dumps(request)
    return session.handle(data.encode(), False)


def test_subscribe_acks_then_subscribes_each_channel():
    """Each channel gets a 'subscribed' ack (canonical name, id echoed) before its Subscribe."""
    s = ClientSession(SYMBOLS)
    channels = ["orderbook@BTC-PERP@20", "orderbook@ETH-PERP", "kline@BTC-PERP@4h"]
    actions = handle(s, {"op": "subscribe", "id": 1, "channels": channels})
    assert [type(a) for a in actions] == [Reply, Subscribe] * 3
    assert actions[0].payload == {
        "event": "subscribed", "channel": "orderbook@BTC-PERP@20", "id": 1}
    assert actions[1].channel.param == 20
    assert actions[2].payload["channel"] == "orderbook@ETH-PERP@full"
    assert set(s.subscriptions) == {"orderbook@BTC-PERP@20", "orderbook@ETH-PERP@full",
                                    "kline@BTC-PERP@4h"}
    un = handle(s, {"op": "unsubscribe", "id": "x", "channels": ["kline@BTC-PERP@4h"]})
    assert [type(a) for a in un] == [Unsubscribe, Reply]
    assert un[1].payload == {"event": "unsubscribed", "channel": "kline@BTC-PERP@4h", "id": "x"}


@pytest.mark.parametrize(
    "request_, code",
    [
        ("{not json", ErrorCode.BAD_JSON),
        ("\"just a string\"", ErrorCode.BAD_REQUEST),
        ({"channels": ["trades@BTC-PERP"]}, ErrorCode.BAD_REQUEST),
        ({"op": "subscribe", "channels": []}, ErrorCode.BAD_REQUEST),
        ({"op": "subscribe", "channels": "trades@BTC-PERP"}, ErrorCode.BAD_REQUEST),
        ({"op": "subscribe", "channels": ["trades@BTC-PERP"], "id": [1]}, ErrorCode.BAD_REQUEST),
        ({"op": "subscribe", "channels": [7]}, ErrorCode.BAD_REQUEST),
        ({"op": "dance"}, ErrorCode.UNKNOWN_OP),
        ({"op": "subscribe", "channels": ["weather@BTC-PERP"]}, ErrorCode.UNKNOWN_CHANNEL),
        ({"op": "subscribe", "channels": ["trades"]}, ErrorCode.UNKNOWN_CHANNEL),
        ({"op": "subscribe", "channels": ["trades@BTC-PERP@5"]}, ErrorCode.UNKNOWN_CHANNEL),
        ({"op": "subscribe", "channels": ["trades@DOGE-PERP"]}, ErrorCode.UNKNOWN_SYMBOL),
        ({"op": "subscribe", "channels": ["orderbook@BTC-PERP@7"]}, ErrorCode.BAD_DEPTH),
        ({"op": "subscribe", "channels": ["kline@BTC-PERP"]}, ErrorCode.BAD_INTERVAL),
        ({"op": "subscribe", "channels": ["kline@BTC-PERP@2m"]}, ErrorCode.BAD_INTERVAL),
        ({"op": "unsubscribe", "channels": ["ticker@BTC-PERP"]}, ErrorCode.NOT_SUBSCRIBED),
    ],
)
def test_bad_requests_get_one_error_with_code(request_, code):
    """A bad request gets exactly one error reply with the right code and no subscription."""
    s = ClientSession(SYMBOLS)
    actions = handle(s, request_)
    assert len(actions) == 1 and isinstance(actions[0], Reply)
    p = actions[0].payload
    assert p["event"] == "error" and p["code"] == code and p["message"]
    assert not s.subscriptions


def test_error_echoes_id_and_channel_and_good_channels_still_subscribe():
    """In a mixed request the bad channel errors (with id and channel) and the good one works."""
    s = ClientSession(SYMBOLS)
    actions = handle(s, {"op": "subscribe", "id": 9, "channels": ["trades@XRP", "trades@BTC-PERP"]})
    assert actions[0].payload == {"event": "error", "code": ErrorCode.UNKNOWN_SYMBOL,
                                  "message": "unknown symbol 'XRP'", "id": 9,
                                  "channel": "trades@XRP"}
    assert isinstance(actions[2], Subscribe)


def test_duplicate_and_limit():
    """Subscribing twice errors; the per-connection subscription limit is enforced."""
    s = ClientSession(SYMBOLS, max_subscriptions=2)
    handle(s, {"op": "subscribe", "channels": ["trades@BTC-PERP", "ticker@BTC-PERP"]})
    dup = handle(s, {"op": "subscribe", "channels": ["trades@BTC-PERP"]})
    assert dup[0].payload["code"] == ErrorCode.ALREADY_SUBSCRIBED
    over = handle(s, {"op": "subscribe", "channels": ["trades@ETH-PERP"]})
    assert over[0].payload["code"] == ErrorCode.TOO_MANY_SUBSCRIPTIONS


def test_msgpack_requests_ping_and_list():
    """Binary frames are msgpack requests; ping answers pong, list the subscriptions."""
    s = ClientSession(SYMBOLS, WireFormat.MSGPACK)
    sub = s.handle(msgpack.packb({"op": "subscribe", "channels": ["ticker@ETH-PERP"]}), True)
    assert isinstance(sub[1], Subscribe)
    assert s.handle(msgpack.packb({"op": "ping", "id": 3}), True)[0].payload == {
        "event": "pong", "id": 3}
    assert s.handle(b'{"op":"list"}', False)[0].payload["channels"] == ["ticker@ETH-PERP"]
    bad = s.handle(b"\xc1", True)
    assert bad[0].payload["code"] == ErrorCode.BAD_JSON


def test_parse_format():
    """The URL format parameter selects JSON (default) or msgpack and rejects others."""
    assert parse_format(None) is WireFormat.JSON
    assert parse_format("MsgPack") is WireFormat.MSGPACK
    with pytest.raises(ValueError):
        parse_format("xml")

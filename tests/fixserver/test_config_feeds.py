"""The market-data keys of [DEFAULT] (WebSocket feed, batch interval, Redis) parse with
defaults, and each wrong use is a ConfigError naming the setting and its line."""

from __future__ import annotations

import pytest

from fixserver.config import ConfigError, parse_config

EXCHANGE = """\
[DEFAULT]
BeginString=FIX.4.4
SenderCompID=EXCH
SocketAcceptPort=9876
JournalPath=journal
{extra}
[FIRM]
Firm=ACME
Accounts=A1
[SESSION]
TargetCompID=CLIENT1
Firm=ACME
"""


def config(extra: str = "", text: str = EXCHANGE):
    return parse_config(text.format(extra=extra), source="x.cfg")


def test_market_data_is_off_unless_configured():
    """Without the keys: no WebSocket feed, no Redis, 10 ms batches, the feed's limits."""
    c = config()
    assert c.websocket_port is None and c.redis_url is None
    assert c.feed_batch_interval_ms == 10.0
    assert c.websocket_address == "127.0.0.1"
    assert c.websocket_max_connections_per_address == 100
    assert c.websocket_max_buffer_bytes == 4 * 1024 * 1024
    assert c.redis_key_prefix == "md"


def test_every_market_data_key_is_read():
    """Each key sets its ServerConfig field (keys are case-insensitive, as all keys are)."""
    c = config("WebSocketAddress=0.0.0.0\nwebsocketport=9200\nFeedBatchInterval=2.5\n"
               "WebSocketMaxConnectionsPerAddress=7\nWebSocketMaxBufferBytes=65536\n"
               "RedisURL=redis://127.0.0.1:6379/3\nRedisKeyPrefix=exch1")
    assert (c.websocket_address, c.websocket_port, c.feed_batch_interval_ms) == (
        "0.0.0.0", 9200, 2.5)
    assert (c.websocket_max_connections_per_address, c.websocket_max_buffer_bytes) == (7, 65536)
    assert (c.redis_url, c.redis_key_prefix) == ("redis://127.0.0.1:6379/3", "exch1")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("WebSocketPort=70000", r"x.cfg:6: WebSocketPort='70000' in \[DEFAULT\].*0..65535"),
        ("FeedBatchInterval=0", r"x.cfg:6: FeedBatchInterval='0'.*> 0"),
        ("FeedBatchInterval=fast", r"x.cfg:6: FeedBatchInterval='fast'"),
        ("WebSocketPort=1\nWebSocketMaxBufferBytes=0",
         r"x.cfg:7: WebSocketMaxBufferBytes='0'.*> 0"),
        ("WebSocketPort=1\nWebSocketMaxConnectionsPerAddress=-1",
         r"x.cfg:7: WebSocketMaxConnectionsPerAddress='-1'"),
        ("WebSocketAddress=127.0.0.1", r"x.cfg:6: WebSocketAddress is set.*WebSocketPort is not"),
        ("WebSocketMaxBufferBytes=1024", r"x.cfg:6: WebSocketMaxBufferBytes is set"),
        ("RedisURL=127.0.0.1:6379", r"x.cfg:6: RedisURL='127.0.0.1:6379'.*redis://"),
        ("RedisKeyPrefix=md", r"x.cfg:6: RedisKeyPrefix is set.*RedisURL is not"),
        ("RedisURL=redis://h/0\nRedisKeyPrefix=a b", r"x.cfg:7: RedisKeyPrefix='a b'"),
        ("WebSocketPort=9200\nApplication=echo", r"x.cfg:6: WebSocketPort: market data"),
    ],
)
def test_wrong_market_data_settings_name_the_setting_and_line(extra, expected):
    """A bad value, a key without the one it belongs to, or a feed without an order book."""
    with pytest.raises(ConfigError, match=expected):
        config(extra)


def test_a_feed_without_firms_is_an_error():
    """The feed shows the exchange's book: without [FIRM]s (no order entry) there is none."""
    text = EXCHANGE.replace("[FIRM]\nFirm=ACME\nAccounts=A1\n", "").replace("Firm=ACME\n", "")
    with pytest.raises(ConfigError, match=r"x.cfg:6: RedisURL: market data .*\[FIRM\]"):
        config("RedisURL=redis://127.0.0.1:6379/0", text)

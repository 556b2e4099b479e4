"""The hub encodes each batch message once per format and fans the same object out."""

from __future__ import annotations

import json

import msgpack

from engine.enums import Side
from engine.events import LevelChanged
from engine.instruments import demo_instruments
from feeds.channels import parse_channel
from feeds.core import FeedCore
from feeds.encoding import WireFormat
from feeds.hub import FeedHub


class Collector:
    """A subscriber that keeps what it is given."""

    def __init__(self, fmt=WireFormat.JSON):
        self.wire_format = fmt
        self.frames = []

    def deliver(self, frame):
        self.frames.append(frame)


class Sink:
    """A batch sink that keeps the batches."""

    def __init__(self):
        self.batches = []

    def on_batch(self, messages):
        self.batches.append(messages)


def make_hub():
    """A hub over the demo instruments, with a counting framer."""
    core = FeedCore(demo_instruments())
    framed = []

    def framer(data, is_binary):
        framed.append((data, is_binary))
        return (data, is_binary)

    return FeedHub(core, framer=framer, wall_ns=lambda: 0), framed


def test_same_frame_object_for_every_subscriber_of_a_format():
    """Subscribers sharing a format get the identical framed object; framing once per format."""
    hub, framed = make_hub()
    ch = parse_channel("orderbook@BTC-PERP@5", hub.core.symbols)
    subs = [Collector() for _ in range(3)] + [Collector(WireFormat.MSGPACK) for _ in range(2)]
    for s in subs:
        hub.subscribe(s, ch)
    assert all(len(s.frames) == 1 for s in subs), "each got the snapshot"
    assert json.loads(subs[0].frames[0][0])["type"] == "snapshot"
    framed.clear()
    hub.publish([LevelChanged(7, "BTC-PERP", Side.BUY, 600000, 5, 1)])
    hub.flush()
    depth5 = [f for f in framed if b"orderbook@BTC-PERP@5" in f[0]]
    assert sorted(f[1] for f in depth5) == [False, True], "framed once per format"
    json_frames = {id(s.frames[1]) for s in subs[:3]}
    assert len(json_frames) == 1
    assert subs[3].frames[1] is subs[4].frames[1]
    payload = msgpack.unpackb(subs[3].frames[1][0])
    assert payload["u"] == 7 and payload["pu"] == 0 and payload["bids"] == [["60000.0", "0.005", 1]]
    assert subs[3].frames[1][1] is True and subs[0].frames[1][1] is False


def test_sinks_get_every_channel_and_unsubscribed_get_nothing():
    """Sinks see the whole batch; an unsubscribed subscriber receives no more messages."""
    hub, _ = make_hub()
    sink = Sink()
    hub.add_sink(sink)
    ch = parse_channel("orderbook@ETH-PERP", hub.core.symbols)
    s = Collector()
    hub.subscribe(s, ch)
    hub.unsubscribe(s, ch)
    assert hub.subscriber_count(ch.name) == 0
    hub.publish([LevelChanged(3, "ETH-PERP", Side.SELL, 300000, 2, 1)])
    batch = hub.flush()
    assert sink.batches == [batch]
    assert {m.channel for m in batch} >= {"orderbook@ETH-PERP@5", "orderbook@ETH-PERP@20",
                                          "orderbook@ETH-PERP@full", "ticker@ETH-PERP"}
    assert len(s.frames) == 1, "only the snapshot, nothing after unsubscribe"
    assert hub.book_snapshot("ETH-PERP").update_id == 3
    assert hub.flush() == [] and len(sink.batches) == 1, "an empty batch is not handed out"

"""The Redis sink writes the engine's books, trades, tickers and klines after every batch."""

from __future__ import annotations

import pytest
import pytest_twisted
from prometheus_client import REGISTRY

from feeds.channels import KLINE, TICKER, Channel
from feeds.checksum import book_checksum
from feeds.diffs import FULL_DEPTH
from feeds.encoding import WireFormat
from feeds.kline import INTERVALS
from feeds.redis_keys import BATCH, SYNC, parse_meta, unpack_envelope
from feeds.redis_relay import parse_book
from tests.feeds.redisutil import (
    FMT,
    INSTRUMENTS,
    SHARED_URL,
    Exchange,
    decode,
    delete_prefix,
    free_port,
    shared_redis_or_skip,
    sorted_levels,
    unique_keys,
    until,
)

pytestmark = pytest.mark.integration
TOP = 20


@pytest.fixture
def exchange():
    """An exchange rig writing under a unique prefix of the shared Redis; keys removed after."""
    client = shared_redis_or_skip()
    keys = unique_keys()
    ex = Exchange(SHARED_URL, keys, recent_trades=50)
    ex.client = client
    ex.sink.start()
    yield ex
    ex.sink.stop()
    delete_prefix(client, keys)
    client.close()


def check_redis_equals_engine(ex: Exchange) -> None:
    """Every symbol's stored book, top 20, ticker, klines and trades match the engine's."""
    client, keys = ex.client, ex.keys
    meta = parse_meta(client.hgetall(keys.meta))
    assert meta is not None and meta.seq == ex.sink.seq and meta.epoch == ex.sink.epoch
    for inst in INSTRUMENTS:
        sym = inst.symbol
        price, qty = FMT[sym]
        book = parse_book(client.hgetall(keys.book(sym)))
        bids, asks = ex.levels(sym)
        assert sorted_levels(book.bids, True) == bids
        assert sorted_levels(book.asks, False) == asks
        assert book.ids[FULL_DEPTH] == ex.last_level_seq[sym]
        for depth in (5, 20):
            assert book.ids[depth] == ex.core.book_snapshot(sym, depth).update_id
        top = decode(client.get(keys.top(sym)))
        top_bids, top_asks = ex.levels(sym, TOP)
        assert [tuple(lv) for lv in top["bids"]] == top_bids
        assert [tuple(lv) for lv in top["asks"]] == top_asks
        assert top["u"] == ex.core.book_snapshot(sym, TOP).update_id
        assert top["checksum"] == book_checksum(top_bids, top_asks)
        ticker = decode(client.get(keys.ticker(sym)))
        expected = ex.core.snapshot_message(Channel(TICKER, sym, None)).payload
        assert {k: v for k, v in ticker.items() if k != "ts"} == {
            k: v for k, v in expected.items() if k != "ts"}
        klines = client.hgetall(keys.kline(sym))
        for interval in INTERVALS:
            current = ex.core.snapshot_message(Channel(KLINE, sym, interval))
            if current is None:
                assert interval.encode() not in klines
            else:
                stored = decode(klines[interval.encode()])
                assert stored["data"][-1] == current.payload["data"][-1]
        stored_trades = [decode(t) for t in client.lrange(keys.trades(sym), 0, -1)]
        recent = ex.trades[sym][-50:]
        assert [t["id"] for t in stored_trades] == [t.exec_id for t in recent]
        assert [(t["price"], t["qty"]) for t in stored_trades] == [
            (price(t.price), qty(t.qty)) for t in recent]


@pytest_twisted.inlineCallbacks
def test_redis_state_equals_engine_after_random_flow(exchange):
    """After random order flow, Redis holds each engine book (levels, ids, checksum) and more."""
    ex = exchange
    for i in range(150):
        ex.batch(1 + i % 7)
        if i % 25 == 0:
            yield ex.sink.flushed()
            check_redis_equals_engine(ex)
    yield ex.sink.flushed()
    check_redis_equals_engine(ex)
    assert any(ex.trades.values()), "the flow should have traded"


@pytest_twisted.inlineCallbacks
def test_each_batch_is_published_once_with_the_websocket_bytes(exchange):
    """Each batch is one envelope on the channel whose payloads are the batch's encoded bytes."""
    ex = exchange
    yield ex.sink.flushed()  # the start-up sync, before we subscribe
    pubsub = ex.client.pubsub()
    pubsub.subscribe(ex.keys.updates)
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    batches = [ex.batch(5) for _ in range(20)]
    yield ex.sink.flushed()
    envelopes = []
    while len(envelopes) < 20:
        m = pubsub.get_message(timeout=5)
        assert m is not None, f"only {len(envelopes)} envelopes arrived"
        if m["type"] == "message":
            envelopes.append(unpack_envelope(m["data"]))
    pubsub.close()
    for n, (env, messages) in enumerate(zip(envelopes, batches), start=1):
        assert (env.kind, env.epoch, env.seq, env.format) == (
            BATCH, ex.sink.epoch, n, WireFormat.MSGPACK)
        assert env.messages == [
            (m.channel, m.kind, m.encoded(WireFormat.MSGPACK)) for m in messages]


@pytest_twisted.inlineCallbacks
def test_json_sink_stores_and_publishes_json():
    """A sink in JSON format stores and publishes the JSON bytes subscribers get."""
    client = shared_redis_or_skip()
    keys = unique_keys()
    ex = Exchange(SHARED_URL, keys, wire_format=WireFormat.JSON)
    ex.sink.start()
    try:
        messages = [m for _ in range(10) for m in ex.batch(5)]
        yield ex.sink.flushed()
        meta = parse_meta(client.hgetall(keys.meta))
        assert meta is not None and meta.format is WireFormat.JSON
        ticker = [m for m in messages if m.kind == TICKER][-1]
        assert client.get(keys.ticker(ticker.payload["symbol"])) == ticker.encoded(
            WireFormat.JSON)
    finally:
        ex.sink.stop()
        delete_prefix(client, keys)
        client.close()


@pytest_twisted.inlineCallbacks
def test_sink_with_redis_unreachable_never_raises_and_reports_it():
    """With nothing listening, batches are dropped, counted and the gauge says disconnected."""
    keys = unique_keys()
    ex = Exchange(f"redis://127.0.0.1:{free_port()}/0", keys, backoff_initial=0.01,
                  backoff_max=0.02)
    failures = REGISTRY.get_sample_value("redis_sink_failures_total") or 0.0
    dropped = REGISTRY.get_sample_value("redis_sink_dropped_batches_total") or 0.0
    ex.sink.start()
    try:
        for _ in range(20):
            ex.batch(5)  # matching and the hub go on; on_batch must not raise
        yield until(lambda: ex.sink.consecutive_failures >= 2, "two failed writes")
        assert not ex.sink.connected
        assert REGISTRY.get_sample_value("redis_sink_connected") == 0
        assert REGISTRY.get_sample_value("redis_sink_failures_total") >= failures + 2
        assert REGISTRY.get_sample_value("redis_sink_dropped_batches_total") >= dropped + 20
        assert "ConnectionError" in (ex.sink.last_error or "")
    finally:
        ex.sink.stop()


@pytest_twisted.inlineCallbacks
def test_queue_overflow_coalesces_into_one_sync(exchange):
    """More batches than the queue holds while a write is in flight become one full sync."""
    ex = exchange
    yield ex.sink.flushed()
    ex.sink.max_pending_batches = 3
    syncs = REGISTRY.get_sample_value("redis_sink_syncs_total")
    pubsub = ex.client.pubsub()
    pubsub.subscribe(ex.keys.updates)
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    for _ in range(10):  # all on the reactor thread: the first write is still in flight
        ex.batch(3)
    yield ex.sink.flushed()
    assert REGISTRY.get_sample_value("redis_sink_syncs_total") == syncs + 1
    check_redis_equals_engine(ex)
    kinds = []
    while True:
        m = pubsub.get_message(timeout=0.5)
        if m is None:
            break
        if m["type"] == "message":
            env = unpack_envelope(m["data"])
            kinds.append((env.kind, env.seq))
    pubsub.close()
    assert kinds[-1] == (SYNC, 10), kinds
    assert kinds[0] == (BATCH, 1), kinds


@pytest_twisted.inlineCallbacks
def test_sync_rewrites_a_book_that_was_tampered_with(exchange):
    """A sync (as after a reconnect) replaces whatever Redis held with the core's full state."""
    ex = exchange
    for _ in range(30):
        ex.batch(5)
    yield ex.sink.flushed()
    sym = INSTRUMENTS[0].symbol
    ex.client.hset(ex.keys.book(sym), "b:1.0", "9:9")
    ex.client.delete(ex.keys.ticker(sym))
    ex.sink.request_sync()  # what a failed write leads to
    ex.batch(1)
    yield ex.sink.flushed()
    check_redis_equals_engine(ex)
    assert b"b:1.0" not in ex.client.hgetall(ex.keys.book(sym))


"""The demo index feeder: a deterministic bounded random walk per margined instrument, posted
through the admin API of a real in-process exchange on loopback (journaled SetIndexPrice);
failures are counted and logged, never fatal; usage errors exit 2."""

from __future__ import annotations

import random

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import Factory

from engine.commands import SetIndexPrice
from fixserver.config import parse_config
from fixserver.index_feeder import IndexFeeder, IndexWalk, admin_url, main, walks
from fixserver.journal_file import JournalDirectory
from tests.fixserver.admin.exchange import TOKEN, admin_config, base_url
from tests.fixserver.admin.risk_exchange import RISK_CONFIG, start_margined


def _prices(seed: int, n: int = 500) -> list[int]:
    walk = IndexWalk(600_000, 500, 20_000, random.Random(seed))
    return [walk.step() for _ in range(n)]


def test_the_walk_is_deterministic_given_the_seed():
    """Same seed, same prices; another seed, other prices."""
    assert _prices(7) == _prices(7)
    assert _prices(7) != _prices(8)


def test_the_walk_stays_in_its_band_with_bounded_steps():
    """Every step moves at most step_ppm of the reference (>= 1 tick) and stays within
    reference +- band, reflecting at the edges (which a long walk reaches)."""
    prices = _prices(3, 20_000)
    assert all(600_000 - 12_000 <= p <= 600_000 + 12_000 for p in prices)
    previous = 600_000
    for p in prices:
        assert abs(p - previous) <= 300
        previous = p
    # steps as large as the band: the walk hits both edges and is reflected back inside
    narrow = IndexWalk(1_000, 100_000, 50_000, random.Random(3))
    seen = [narrow.step() for _ in range(2_000)]
    assert min(seen) == 950 and max(seen) == 1_050
    assert all(abs(b - a) <= 100 for a, b in zip([1_000, *seen], seen))
    tiny = IndexWalk(10, 1, 0, random.Random(1))  # step rounds up to one tick, no band
    assert {tiny.step() for _ in range(10)} == {10}
    with pytest.raises(ValueError):
        IndexWalk(0, 1, 1, random.Random(1))


def test_walks_cover_margined_instruments_each_with_its_own_stream():
    """Only margined instruments with a reference; one symbol's stream does not depend on
    which other symbols are configured."""
    config = parse_config(admin_config("/tmp", extra=RISK_CONFIG.format(stale=30)))
    both = walks(config.instruments, 5, 5, 200)
    assert sorted(both) == ["BTC-PERP", "ETH-PERP"]
    eth_only = walks([i for i in config.instruments if i.symbol == "ETH-PERP"], 5, 5, 200)
    assert [both["ETH-PERP"].step() for _ in range(50)] == \
        [eth_only["ETH-PERP"].step() for _ in range(50)]
    assert both["BTC-PERP"].max_step == 300  # 5 bps of 60,000.0 in ticks of 0.1
    unmargined = parse_config(admin_config("/tmp"))
    assert walks(unmargined.instruments, 5, 5, 200) == {}
    assert admin_url(config) == "http://127.0.0.1:0"


@pytest_twisted.inlineCallbacks
def test_the_feeder_posts_index_prices_the_exchange_journals(tmp_path):
    """Three rounds: every post answered 200, the exchange's durable index is the walk's
    last price, and the journal holds the SetIndexPrice commands with the feeder's token."""
    server = start_margined(tmp_path)
    try:
        config = server.config
        paths = walks(config.instruments, 11, 5, 200)
        expected = walks(config.instruments, 11, 5, 200)  # the same walk, to compare
        feeder = IndexFeeder(reactor, base_url(server), TOKEN, config.instruments, paths, 1.0)
        for _ in range(3):
            yield feeder.post_all()
        assert (feeder.posted, feeder.failed) == (6, 0), feeder.last_error
        want = {s: [w.step() for _ in range(3)] for s, w in expected.items()}
        monitor = server.application.risk
        for symbol, prices in want.items():
            inst = monitor.instruments[symbol]
            assert monitor.index[symbol] == prices[-1]
            assert monitor.marks(symbol)["index"] == inst.ticks_to_price(prices[-1])
        assert monitor.stale_symbols() == []
    finally:
        server.application.pipeline.snapshot_on_shutdown = False
        yield server.stop()
    journaled = [(o, c) for rec in JournalDirectory(str(tmp_path / "journal")).read_records()
                 for o, c in rec.entries if type(c) is SetIndexPrice]
    assert {o for o, _ in journaled} == {("", "A", "ops", "index-price")}
    assert sorted((c.symbol, c.price) for _, c in journaled) == sorted(
        (s, p) for s, prices in want.items() for p in prices)


@pytest_twisted.inlineCallbacks
def test_refusals_and_an_unreachable_server_are_counted_not_fatal(tmp_path):
    """A wrong token: every post fails with the server's reason; no server: status 0."""
    server = start_margined(tmp_path)
    try:
        config = server.config
        feeder = IndexFeeder(reactor, base_url(server), "wrong-token-0123456789",
                             config.instruments, walks(config.instruments, 1, 5, 200), 1.0)
        yield feeder.post_all()
        assert (feeder.posted, feeder.failed) == (0, 2)
        assert "HTTP 403" in feeder.last_error and "not valid" in feeder.last_error
        port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")  # a free port
        free = port.getHost().port
        yield port.stopListening()
        gone = IndexFeeder(reactor, f"http://127.0.0.1:{free}", TOKEN, config.instruments,
                           walks(config.instruments, 1, 5, 200), 1.0)
        code = yield gone.post("BTC-PERP", "60000.0")
        assert code == 0 and gone.failed == 1 and "cannot reach" in gone.last_error
        assert gone.in_flight == set()
    finally:
        yield server.stop()


def test_usage_errors_exit_2(tmp_path, capsys, monkeypatch):
    """No token, or a config without margined instruments: exit 2 with the reason."""
    monkeypatch.delenv("FIXSERVER_ADMIN_TOKEN", raising=False)
    path = tmp_path / "x.cfg"
    path.write_text(admin_config(tmp_path, extra=RISK_CONFIG.format(stale=30)))
    assert main(["--config", str(path)]) == 2
    assert "need an admin token" in capsys.readouterr().err
    path.write_text(admin_config(tmp_path))
    assert main(["--config", str(path), "--token", TOKEN]) == 2
    assert "no margined [INSTRUMENT]" in capsys.readouterr().err

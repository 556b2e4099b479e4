"""The index feeder's --shock: one jump of a symbol's index at a given time, the walk going on
from the new level (deterministic with task.Clock); posted to a real exchange it is the
journaled index; bad shocks are usage errors."""

from __future__ import annotations

import random

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from engine.commands import SetIndexPrice
from fixserver.config import parse_config
from fixserver.index_feeder import IndexFeeder, IndexWalk, Shock, main, parse_shock, walks
from fixserver.journal_file import JournalDirectory
from tests.fixserver.admin.exchange import TOKEN, admin_config, base_url
from tests.fixserver.admin.risk_exchange import RISK_CONFIG, start_margined

CONFIG = parse_config(admin_config("/tmp", extra=RISK_CONFIG.format(stale=30)))


def test_shock_syntax():
    """SYMBOL:PCT%[@SECONDS]: signs, decimals and the % are optional as written, SECONDS
    defaults to 60; anything else is refused with the reason."""
    assert parse_shock("BTC-PERP:-8%@30") == Shock("BTC-PERP", -80_000, 30.0)
    assert parse_shock("BTC-PERP:-8%") == Shock("BTC-PERP", -80_000, 60.0)
    assert parse_shock(" ETH-PERP:+2.5@0.5 ") == Shock("ETH-PERP", 25_000, 0.5)
    assert parse_shock("ETH-PERP:0.0001%@0") == Shock("ETH-PERP", 1, 0.0)
    for text, reason in (("BTC-PERP", "expected SYMBOL:PCT%"), ("BTC-PERP:-8%@-1", "expected"),
                         ("BTC-PERP:x%", "expected"), (":-8%", "expected"),
                         ("BTC-PERP:-8.00001%", "4 decimal places"),
                         ("BTC-PERP:-100%", "above -100%"), ("BTC-PERP:0%", "not zero"),
                         ("BTC-PERP:1001%", "at most +1000%")):
        with pytest.raises(ValueError) as exc:
            parse_shock(text)
        assert reason in str(exc.value), text


def test_a_shocked_walk_goes_on_around_the_new_level():
    """-8% of 60,000.0 is 55,200.0 (ticks rounded down); the band moves with it, so the walk
    stays near the new level (bounded steps) instead of reflecting back up; the same seed
    gives the same prices after the shock as a walk started at the new level would."""
    walk = IndexWalk(600_000, 500, 20_000, random.Random(4))
    assert walk.shock(-80_000) == 552_000
    assert (walk.reference, walk.low, walk.high) == (552_000, 540_000, 564_000)
    prices = [walk.step() for _ in range(5_000)]
    assert all(540_000 <= p <= 564_000 for p in prices)
    assert abs(prices[0] - 552_000) <= walk.max_step
    odd = IndexWalk(333, 500, 20_000, random.Random(1))
    assert odd.shock(-80_000) == 306  # 333 * 0.92 = 306.36: down to the tick
    assert IndexWalk(5, 0, 0, random.Random(1)).shock(-999_999) == 1, "at least one tick"
    up = IndexWalk(600_000, 500, 20_000, random.Random(1))
    assert up.shock(25_000) == 615_000 and up.low == 603_000


class RecordingFeeder(IndexFeeder):
    """The feeder with its HTTP post replaced by a record of what it would post (answered
    at once), so a task.Clock drives it without a network."""

    def __init__(self, clock: task.Clock, shocks: list[Shock]) -> None:
        super().__init__(clock, "http://127.0.0.1:1", TOKEN, CONFIG.instruments,
                         walks(CONFIG.instruments, 9, 5, 200), 1.0, shocks)
        self.sent: list[tuple[float, str, str]] = []

    def post(self, symbol: str, price: str) -> defer.Deferred:
        self.sent.append((self.reactor.seconds(), symbol, price))
        return defer.succeed(200)


def test_the_shock_lands_in_the_first_round_at_or_after_its_time():
    """Rounds every second from t=0 (task.Clock): BTC jumps -8% in the round at t=3 (the
    shock is due at 2.5 s), ETH's walk is untouched; each shock happens once; the posted
    prices after it continue from the shocked price by at most one step per round."""
    clock = task.Clock()
    feeder = RecordingFeeder(clock, [Shock("BTC-PERP", -80_000, 2.5)])
    plain = walks(CONFIG.instruments, 9, 5, 200)  # the same walks without the shock
    feeder.start()
    clock.pump([1.0] * 8)
    feeder.stop()
    btc = [(t, float(p)) for t, s, p in feeder.sent if s == "BTC-PERP"]
    eth = [p for _, s, p in feeder.sent if s == "ETH-PERP"]
    assert [t for t, _ in btc] == [float(i) for i in range(9)]
    expected_before = [plain["BTC-PERP"].step() / 10 for _ in range(3)]
    assert [p for _, p in btc[:3]] == expected_before
    shocked = btc[3][1]
    assert shocked == int(expected_before[-1] * 10 * 92 // 100) / 10
    step = feeder.walks["BTC-PERP"].max_step / 10
    assert all(abs(b - a) <= step for (_, a), (_, b) in zip(btc[3:], btc[4:]))
    assert all(p < expected_before[-1] * 0.95 for _, p in btc[3:]), "stays down"
    inst = {i.symbol: i for i in CONFIG.instruments}["ETH-PERP"]
    assert eth == [inst.ticks_to_price(plain["ETH-PERP"].step()) for _ in range(9)]
    assert feeder.shocks == [], "applied once"


def test_a_shock_due_while_the_symbol_is_in_flight_waits_for_the_next_round():
    """A post still unanswered skips the symbol's round; the due shock is the next price."""
    clock = task.Clock()
    feeder = RecordingFeeder(clock, [Shock("BTC-PERP", -50_000, 0.0)])
    feeder.in_flight.add("BTC-PERP")
    feeder.post_all()
    assert [s for _, s, _ in feeder.sent] == ["ETH-PERP"] and feeder.shocks
    feeder.in_flight.clear()
    before = feeder.walks["BTC-PERP"].price
    clock.advance(1.0)
    feeder.post_all()
    (btc,) = [p for _, s, p in feeder.sent if s == "BTC-PERP"]
    assert btc == f"{before * 95 // 100 / 10:.1f}" and feeder.shocks == []


@pytest_twisted.inlineCallbacks
def test_the_shocked_price_is_the_exchanges_journaled_index(tmp_path):
    """Against a real in-process exchange: a shock due at once is the first price posted and
    journaled for BTC-PERP (the other symbol's walk as usual)."""
    server = start_margined(tmp_path)
    try:
        config = server.config
        feeder = IndexFeeder(reactor, base_url(server), TOKEN, config.instruments,
                             walks(config.instruments, 2, 5, 200), 1.0,
                             [Shock("BTC-PERP", -80_000, 0.0)])
        yield feeder.post_all()
        assert (feeder.posted, feeder.failed) == (2, 0), feeder.last_error
        monitor = server.application.risk
        assert monitor.index["BTC-PERP"] == feeder.walks["BTC-PERP"].price
    finally:
        server.application.pipeline.snapshot_on_shutdown = False
        yield server.stop()
    journaled = {c.symbol: c.price for rec in JournalDirectory(str(tmp_path / "journal"))
                 .read_records() for _, c in rec.entries if type(c) is SetIndexPrice}
    reference = {i.symbol: i.reference_price for i in config.instruments}["BTC-PERP"]
    assert journaled["BTC-PERP"] == feeder.walks["BTC-PERP"].price
    assert journaled["BTC-PERP"] < reference * 0.93


def test_bad_shocks_exit_2(tmp_path, capsys):
    """A malformed --shock or one naming a symbol the feeder does not walk: exit 2."""
    path = tmp_path / "x.cfg"
    path.write_text(admin_config(tmp_path, extra=RISK_CONFIG.format(stale=30)))
    assert main(["--config", str(path), "--token", TOKEN, "--shock", "BTC-PERP:oops"]) == 2
    assert "expected SYMBOL:PCT%" in capsys.readouterr().err
    assert main(["--config", str(path), "--token", TOKEN, "--shock", "DOGE-PERP:-8%"]) == 2
    assert "DOGE-PERP: not a walked symbol" in capsys.readouterr().err

"""Funding on markPrice@SYMBOL: predicted rate and next instant, the funding applied, seeding."""

from __future__ import annotations

from engine.commands import SetIndexPrice, Tick
from engine.events import FundingApplied, MarkPriceUpdated
from engine.instruments import demo_instruments
from engine.matcher import MatchingEngine
from feeds.channels import MARK_PRICE, Channel
from feeds.core import FeedCore
from feeds.mark import MarkFeed
from feeds.numbers import UnitFormatter
from fixserver.feeds_wiring import seed_from_engine
from tests.engine.riskutil import BTC, BUY, ETH, SECOND, SELL, RiskDriver, margined_instruments

INSTRUMENTS = margined_instruments()
MARK_BTC = Channel(MARK_PRICE, BTC, None)
T0 = 1_700_000_000 * SECOND
EIGHT_HOURS = 28_800 * SECOND
FUNDING_KEYS = ("funding_rate", "next_funding_ts", "last_funding_rate", "last_funding_ts")


def funding_of(payload: dict) -> tuple:
    return tuple(payload[k] for k in FUNDING_KEYS)


def marks_of(batch: list) -> list[dict]:
    return [m.payload for m in batch if m.kind == MARK_PRICE]


def test_rates_render_as_eight_decimal_strings_and_no_funding_is_null():
    """10,000 e8 is "0.00010000", negative rates keep their sign, a rate of 0 with a next
    instant is a real "0.00000000"; a mark without a next instant (no funding) is all null."""
    feed = MarkFeed(BTC, "markPrice@BTC-PERP", UnitFormatter("0.1"))
    assert funding_of(feed.snapshot()) == (None, None, None, None)
    for rate, text in ((10_000, "0.00010000"), (-25_000, "-0.00025000"), (0, "0.00000000"),
                       (375_000, "0.00375000")):
        feed.on_mark(1, T0, 600_000, 600_010, rate, T0 + EIGHT_HOURS)
        assert funding_of(feed.take_update() or {}) == (text, T0 + EIGHT_HOURS, None, None)
    feed.on_mark(2, T0 + 1, 600_000, 600_020, 0, 0)
    assert funding_of(feed.take_update() or {}) == (None, None, None, None)


def test_funding_applied_publishes_the_rate_applied_and_the_next_instant():
    """A FundingApplied publishes with its own u and ts: last_funding_* say the rate applied
    and when, next_funding_ts moves on, the prediction is null until the next mark gives one;
    index and mark stay those of the last mark computation."""
    core = FeedCore(INSTRUMENTS)
    instant = T0 + EIGHT_HOURS
    core.apply([MarkPriceUpdated(5, instant - SECOND, BTC, 600_000, 600_050, 12_345, instant)])
    (before,) = marks_of(core.flush())
    assert funding_of(before) == ("0.00012345", instant, None, None)
    core.apply([FundingApplied(9, instant + 7, BTC, "USDT", 12_000, 600_050, 5, 4, 1, 2,
                               instant + EIGHT_HOURS)])
    (applied,) = marks_of(core.flush())
    assert funding_of(applied) == (None, instant + EIGHT_HOURS, "0.00012000", instant + 7)
    assert (applied["u"], applied["ts"]) == (9, instant + 7)
    assert (applied["index"], applied["mark"]) == (before["index"], before["mark"])
    snap = core.snapshot_message(MARK_BTC)
    assert snap is not None and snap.payload == applied
    core.apply([MarkPriceUpdated(11, instant + SECOND, BTC, 600_100, 600_120, 10_000,
                                 instant + EIGHT_HOURS)])
    (after,) = marks_of(core.flush())
    assert funding_of(after) == ("0.00010000", instant + EIGHT_HOURS, "0.00012000",
                                 instant + 7), "the last funding stays until the next one"


def test_engine_funding_reaches_the_mark_channel():
    """The engine's funding scenario (tests/engine/test_liquidation.py): the mark carries the
    predicted rate and 08:00 UTC; the funding tick publishes the 0.01% applied, next 16:00,
    and at once the new interval's prediction (no samples yet: the interest rate)."""
    d = RiskDriver(price_band_ppm=200_000)
    core = FeedCore(INSTRUMENTS)
    core.apply(d.index(600_000))
    core.apply(d.index(300_000, ETH))
    core.apply(d.tick())
    core.apply(d.deposit("A", 10_000))
    core.apply(d.deposit("B", 1_000_000))
    core.apply(d.order("B", SELL, 7, 600_000))
    core.apply(d.order("A", BUY, 7, 600_000))
    core.apply(d.index(600_001))
    core.apply(d.tick())
    (mark,) = [p for p in marks_of(core.flush()) if p["symbol"] == BTC]
    assert funding_of(mark)[:2] == ("0.00010000", EIGHT_HOURS)
    d.ts = 28_799 * SECOND - SECOND
    core.apply(d.tick())
    events = d.tick()
    (fa,) = [e for e in events if type(e) is FundingApplied and e.symbol == BTC]
    core.apply(events)
    (published,) = [p for p in marks_of(core.flush()) if p["symbol"] == BTC]
    assert funding_of(published) == ("0.00010000", 2 * EIGHT_HOURS, "0.00010000", fa.ts)
    assert published["u"] == fa.seq


def test_restart_seeds_the_prediction_from_the_recovered_engine():
    """seed_from_engine gives the snapshot the engine's predicted rate and next instant (u and
    ts 0, no last funding known); an unmargined engine's marks seed null funding."""
    d = RiskDriver(price_band_ppm=200_000)
    d.index(600_000)
    (mark,) = [e for e in d.tick() if type(e) is MarkPriceUpdated and e.symbol == BTC]
    core = FeedCore(INSTRUMENTS)
    seed_from_engine(core, d.eng, d.seq)
    snap = core.snapshot_message(MARK_BTC)
    assert snap is not None
    assert funding_of(snap.payload) == ("0.00010000", mark.next_funding_ts, None, None)
    assert mark.next_funding_ts == EIGHT_HOURS
    assert (snap.payload["u"], snap.payload["ts"], snap.payload["mark"]) == (0, 0, "60000.0")
    assert marks_of(core.flush()) == [], "a seed is state, not news"
    # the unmargined demo engine: marks but no funding
    plain = MatchingEngine(demo_instruments())
    plain.process(SetIndexPrice(1, T0, BTC, 600_000))
    plain.process(Tick(2, T0 + 1))
    core = FeedCore(demo_instruments())
    seed_from_engine(core, plain, 2)
    snap = core.snapshot_message(MARK_BTC)
    assert snap is not None and snap.payload["mark"] == "60000.0"
    assert funding_of(snap.payload) == (None, None, None, None)

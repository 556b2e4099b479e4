"""Market-data messages as real sessions send them are valid under the exchange dictionary
(with the RptSeq addition spec/market-data.md documents), and decimal strings follow ticks."""

from __future__ import annotations

import pytest

from engine.enums import InstrumentStatus
from engine.instruments import Instrument
from fixserver.dictionary import DataDictionary
from fixserver.marketdata.messages import InstrumentFormat, security_entry
from fixserver.session import ApplicationMessageReceived, Session
from fixserver.settings import SessionRole, SessionSettings
from fixserver.store import MemoryMessageStore
from tests.fixserver.marketdata.harness import Market, market_data_dictionary
from tests.fixserver.session_helpers import T0, Peer

CANCEL_ONLY = InstrumentStatus.CANCEL_ONLY


@pytest.fixture(scope="module")
def dictionary(tmp_path_factory) -> DataDictionary:
    return DataDictionary.load(market_data_dictionary(str(tmp_path_factory.mktemp("dd"))))


def logged_on_peer(dictionary: DataDictionary) -> Peer:
    settings = SessionSettings("FIX.4.4", "ISLD", "TW44", role=SessionRole.MARKET_DATA)
    peer = Peer(Session(settings, MemoryMessageStore(T0), dictionary), now_ns=T0)
    peer.logon()
    return peer


def deliver(peer: Peer, market: Market, msg_type: bytes, body: list) -> None:
    """Send a client message through the session and hand what it passes up to the app."""
    peer.send(msg_type, body)
    for event in peer.take_events():
        if isinstance(event, ApplicationMessageReceived):
            market.app.on_message(event.session, event.message, peer.now)


def test_every_market_data_message_validates(dictionary):
    """W, X (book and trades), Y and y pass the dictionary's message and group validation."""
    market = Market(seed=21)
    market.now = T0
    market.run(80)
    peer = logged_on_peer(dictionary)
    deliver(peer, market, b"V", [(262, "r1"), (263, "1"), (264, 0), (267, 3), (269, "0"),
                                 (269, "1"), (269, "2"), (146, 2), (55, "BTC-PERP"),
                                 (55, "ETH-PERP")])
    deliver(peer, market, b"V", [(262, "r2"), (263, "1"), (264, 3), (267, 1), (269, "0"),
                                 (146, 1), (55, "BTC-PERP")])
    deliver(peer, market, b"V", [(262, "r3"), (263, "1"), (264, 0), (267, 1), (269, "2"),
                                 (146, 1), (55, "ETH-PERP")])
    deliver(peer, market, b"x", [(320, "s1"), (559, 4)])
    deliver(peer, market, b"x", [(320, "s2"), (559, 0), (55, "NOPE")])
    market.run(300)
    received = peer.received()
    kinds = [m.get_str(35) for m in received]
    assert {"W", "X", "Y", "y"} <= set(kinds), kinds
    for message in received:
        if message.get_str(35) != "A":
            dictionary.validate(message)


def test_prices_and_sizes_are_decimal_strings_on_the_instrument_grid():
    """Ticks and lots render with the tick and lot size's places, never floats."""
    fmt = InstrumentFormat(Instrument("X", tick_size="0.5", lot_size="10"))
    assert fmt.levels([(7, 3, 2), (1, 1, 1)]) == [(b"3.5", b"30", b"2"), (b"0.5", b"10", b"1")]
    fmt = InstrumentFormat(Instrument("Y", tick_size="0.01", lot_size="0.001"))
    assert fmt.levels([(300_000, 1, 1)]) == [(b"3000.00", b"0.001", b"1")]
    entry = dict(security_entry(Instrument("Y", tick_size="0.01", lot_size="0.001",
                                           min_qty=5, max_qty=2000, multiplier=10),
                                CANCEL_ONLY))
    assert (entry[969], entry[561], entry[562], entry[1140], entry[231], entry[326]) == (
        b"0.01", b"0.001", b"0.005", b"2.000", b"10", b"18")

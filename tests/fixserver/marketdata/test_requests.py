"""MarketDataRequest and SecurityListRequest parsing: what is served, and each refusal reason."""

from __future__ import annotations

import pytest

from fixserver.marketdata.requests import (
    MarketDataRequest,
    Refused,
    SecurityListQuery,
    Unsubscribe,
    parse_market_data_request,
    parse_security_list_request,
)
from tests.fixserver.marketdata.harness import md_request, msg

SYMBOLS = {"BTC-PERP", "ETH-PERP"}


def test_snapshot_plus_updates_request_is_parsed():
    """Depth, entry types and symbols (deduplicated, in order) come out of a valid V."""
    got = parse_market_data_request(
        md_request("r1", "1", 5, ("1", "0", "0"), ("ETH-PERP", "BTC-PERP", "ETH-PERP")), SYMBOLS)
    assert got == MarketDataRequest("r1", "1", 5, frozenset({"0", "1"}),
                                    ("ETH-PERP", "BTC-PERP"))


def test_unsubscribe_names_the_request_id():
    """SubscriptionRequestType 2 is an Unsubscribe of its MDReqID."""
    assert parse_market_data_request(md_request("r9", "2"), SYMBOLS) == Unsubscribe("r9")


def test_incremental_update_type_is_accepted():
    """MDUpdateType 1 (incremental) is served; 0 is refused only for subscriptions."""
    ok = parse_market_data_request(md_request("r1", "1", 0, ("0",), ("BTC-PERP",), (265, 1)),
                                   SYMBOLS)
    assert isinstance(ok, MarketDataRequest)
    snapshot = parse_market_data_request(
        md_request("r1", "0", 0, ("0",), ("BTC-PERP",), (265, 0)), SYMBOLS)
    assert isinstance(snapshot, MarketDataRequest)


@pytest.mark.parametrize(
    ("request_msg", "reason"),
    [
        (md_request("r", "1", 0, ("0",), ("DOGE-PERP",)), "0"),
        (md_request("r", "5"), "4"),
        (md_request("r", "1", 10), "5"),
        (md_request("r", "1", 1), "5"),
        (md_request("r", "1", 0, ("0",), ("BTC-PERP",), (265, 0)), "6"),
        (md_request("r", "1", 0, ("0",), ("BTC-PERP",), (266, "N")), "7"),
        (md_request("r", "1", 0, ("0", "4")), "8"),
        (md_request("r", "1", 0, ()), "8"),
        (md_request("r", "1", 0, ("0",), ()), "0"),
    ],
    ids=["unknown-symbol", "subscription-type", "depth-10", "depth-1", "full-refresh",
         "not-aggregated", "entry-type", "no-entry-type", "no-symbol"],
)
def test_unsupported_requests_are_refused_with_their_reason(request_msg, reason):
    """Each unsupported part of a request maps to its MDReqRejReason, with a text."""
    got = parse_market_data_request(request_msg, SYMBOLS)
    assert isinstance(got, Refused)
    assert (got.md_req_id, got.reason) == ("r", reason)
    assert got.text


def test_security_list_all_one_unknown_and_unsupported():
    """559=4 lists all, 559=0 one symbol (560=2 if unknown), other types and subscriptions 560=1."""
    assert parse_security_list_request(msg("x", (320, "s"), (559, 4)), SYMBOLS) == \
        SecurityListQuery("s", None, "0")
    assert parse_security_list_request(msg("x", (320, "s"), (559, 0), (55, "ETH-PERP")),
                                       SYMBOLS) == SecurityListQuery("s", "ETH-PERP", "0")
    assert parse_security_list_request(msg("x", (320, "s"), (559, 0), (55, "X")),
                                       SYMBOLS).result == "2"
    assert parse_security_list_request(msg("x", (320, "s"), (559, 1)), SYMBOLS).result == "1"
    assert parse_security_list_request(msg("x", (320, "s"), (559, 4), (263, 1)),
                                       SYMBOLS).result == "1"

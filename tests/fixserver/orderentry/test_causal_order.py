"""Each session's requests take effect and are answered in the order they were sent, whatever
the client's timing: bursts behave exactly as requests sent one at a time."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .harness import Exchange, ShadowStore, msg, new_order

KEY = ((55, "BTC-PERP"), (54, "1"), (60, "20240101-00:00:00"))


def kinds(received: list) -> list[tuple[str, str]]:
    """(MsgType, ExecType or '') of each message received, in order."""
    return [(m, f.get(150, "")) for m, f in received]


def test_cancel_right_behind_its_order_cancels_it() -> None:
    """D then F in one burst (before the ack): New ack, then the cancel, in that order."""
    x = Exchange()
    x.send(x.acme, new_order("C1"))
    x.send(x.acme, msg("F", (41, "C1"), (11, "X1"), *KEY))
    assert x.acme.take() == [], "nothing may be answered before the order is durable"
    x.settle()
    got = x.acme.take()
    assert kinds(got) == [("8", "0"), ("8", "4")], got
    assert got[1][1][11] == "X1" and got[1][1][41] == "C1"
    assert not x.engine.orders


def test_replace_right_behind_its_order_replaces_it() -> None:
    """D then G in one burst: New ack, then Replaced."""
    x = Exchange()
    x.send(x.acme, new_order("C1"))
    x.send(x.acme, msg("G", (41, "C1"), (11, "C2"), (1, "A1"), *KEY, (38, "0.002"),
                       (40, "2"), (44, "60000")))
    x.settle()
    got = x.acme.take()
    assert kinds(got) == [("8", "0"), ("8", "5")], got
    assert got[1][1][151] == "0.002"


def test_status_right_behind_its_order_finds_it() -> None:
    """D then H in one burst: New ack, then a status of the live order (not 'unknown')."""
    x = Exchange()
    x.send(x.acme, new_order("C1"))
    x.send(x.acme, msg("H", (11, "C1"), *KEY))
    x.settle()
    got = x.acme.take()
    assert kinds(got) == [("8", "0"), ("8", "I")], got
    assert got[1][1][39] == "0" and got[1][1][11] == "C1"


def test_mass_cancel_right_behind_an_order_cancels_it() -> None:
    """D then q (all orders) in one burst: New ack, the cancel, then the q report."""
    x = Exchange()
    x.send(x.acme, new_order("C1"))
    x.send(x.acme, msg("q", (11, "M1"), (530, "7"), (60, "20240101-00:00:00")))
    x.settle()
    got = x.acme.take()
    assert kinds(got) == [("8", "0"), ("8", "4"), ("r", "")], got
    assert got[2][1][533] == "1"
    assert not x.engine.orders


def test_reduce_only_after_a_fill_in_the_same_burst() -> None:
    """A buy that fills, then a reduce-only sell in the same burst: the sell closes the
    position (it is not moved ahead of the buy and rejected as increasing it)."""
    x = Exchange()
    x.run(x.beta, new_order("S1", side="2", qty="0.002", account="B1"))
    x.send(x.acme, new_order("B1", side="1", qty="0.002"))
    x.send(x.acme, new_order("RO", "2", "0.002", "59000", "2", "BTC-PERP", "A1",
                             (18, "E")))
    x.pipeline.tick()  # one tick: both in the same batch
    x.settle()
    got = x.acme.take()
    assert [(f[11], f[150]) for m, f in got if m == "8"][:2] == [("B1", "0"), ("B1", "F")]
    ro = [f for m, f in got if m == "8" and f[11] == "RO"]
    assert ro and ro[0][150] == "0", ro


def test_refusal_waits_for_the_earlier_orders_ack() -> None:
    """An order refused at once (bad tick) while an earlier order is in flight is answered
    after that order's ack, not before it."""
    x = Exchange()
    x.send(x.acme, new_order("C1"))
    x.send(x.acme, new_order("C2", price="60000.05"))
    assert x.acme.take() == []
    x.settle()
    got = x.acme.take()
    assert [(f[11], f[150]) for _, f in got] == [("C1", "0"), ("C2", "8")]


def test_new_orders_stream_without_waiting() -> None:
    """NewOrderSingles behind unreleased ones go to the sequencer at once (one tick)."""
    x = Exchange()
    for i in range(5):
        x.send(x.acme, new_order(f"C{i}", price=f"5990{i}"))
    assert x.pipeline.sequencer.pending == 5
    x.pipeline.tick()
    assert [f[11] for _, f in x.acme.take()] == [f"C{i}" for i in range(5)]


def test_other_sessions_are_not_held_up() -> None:
    """A session waiting for its release does not delay another session's answers."""
    x = Exchange()
    x.send(x.acme, new_order("C1"))
    x.send(x.acme, msg("H", (11, "C1"), *KEY))
    x.send(x.beta, msg("H", (11, "NOPE"), *KEY))
    (status,) = x.beta.take()
    assert status[1][39] == "8"
    assert x.acme.take() == []


def test_cancel_is_not_moved_ahead_of_its_own_sessions_order() -> None:
    """A protective request is prioritised across firms only: within a firm the order holds,
    across firms a cancel still goes first."""
    x = Exchange()
    x.run(x.beta, new_order("R1", side="2", qty="0.001", account="B1"))
    x.run(x.acme, new_order("R2", side="2", qty="0.001", price="60000.1"))
    x.send(x.acme2, new_order("N1", side="1", qty="0.001", price="60000.1", account="A2"))
    x.send(x.acme, msg("F", (41, "R2"), (11, "X"), *KEY))  # ACME: stays behind N1
    x.send(x.beta, msg("F", (41, "R1"), (11, "Y"), *KEY))  # BETA: goes first
    x.pipeline.tick()
    x.settle()
    # N1 (60000.1) would have met R1 (60000.0) first; BETA's cancel went ahead of it, so it
    # traded with R2 instead, which was then too late to cancel.
    assert any(f[150] == "4" and f[11] == "Y" for _, f in x.beta.take())
    acme = x.acme.take()
    assert [m for m, _ in acme][-1] == "9", acme


# -- property: bursts == one at a time ---------------------------------------------------------

#: sessions that do not interact: ACME1 trades BTC with itself (A1 buys, A2 sells), BETA1 and
#: ACME2 trade ETH at prices that never cross each other's
PLAN = {
    "acme": ("BTC-PERP", ("A1", "A2"), ("60000.0", "60000.1", "60000.2"),
             ("60000.0", "60000.1", "60000.2"), ("0.001", "0.002", "0.003")),
    "beta": ("ETH-PERP", ("B1", "B1"), ("3000.00", "3000.01"), ("3000.01", "3000.02"),
             ("0.01", "0.02")),
    "acme2": ("ETH-PERP", ("A2", "A2"), ("2990.00", "2990.01"), ("3010.00", "3010.01"),
              ("0.01", "0.03")),
}
ACTION = st.tuples(
    st.sampled_from(sorted(PLAN)),
    st.sampled_from(["D", "D", "D", "F", "G", "H", "q", "Dbad"]),
    st.integers(0, 9),  # which earlier ClOrdID (F, G, H) / which price, side, qty
    st.booleans(),  # tick after this message (burst mode only)
)


def _messages(actions: list) -> list[tuple[str, Any]]:
    used: dict[str, list[str]] = {name: [] for name in PLAN}
    out = []
    for n, (who, kind, pick, _) in enumerate(actions):
        symbol, accounts, bids, asks, qtys = PLAN[who]
        side = "1" if pick % 2 == 0 else "2"
        prices = bids if side == "1" else asks
        cl = f"{who}-{n}"
        earlier = used[who][pick % len(used[who])] if used[who] else "NONE"
        key = ((55, symbol), (54, side), (60, "20240101-00:00:00"))
        if kind == "D":
            m = new_order(cl, side, qtys[pick % len(qtys)], prices[pick % len(prices)], "2",
                          symbol, accounts[0 if side == "1" else 1])
            used[who].append(cl)
        elif kind == "Dbad":  # refused before the engine: off-tick price
            m = new_order(cl, side, qtys[0], prices[0] + "5", "2", symbol, accounts[0])
        elif kind == "F":
            m = msg("F", (41, earlier), (11, cl), *key)
        elif kind == "G":
            m = msg("G", (41, earlier), (11, cl), (1, accounts[0 if side == "1" else 1]), *key,
                    (38, qtys[-1]), (40, "2"), (44, prices[-1]))
            used[who].append(cl)
        elif kind == "H":
            m = msg("H", (11, earlier), *key)
        else:
            m = msg("q", (11, cl), (530, "1"), (55, symbol), (60, "20240101-00:00:00"))
        out.append((who, m))
    return out


#: fields compared: ids that depend on the global interleaving (ExecID, OrderID) and times
#: are left out
COMPARED = (11, 41, 150, 39, 14, 151, 32, 31, 58, 103, 102, 434, 530, 531, 532, 533, 54, 55)


def _normalise(received: list) -> list[tuple]:
    return [(m, tuple(f.get(t) for t in COMPARED)) for m, f in received]


def _sessions(x: Exchange) -> dict[str, Any]:
    return {"acme": x.acme, "beta": x.beta, "acme2": x.acme2}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ACTION, min_size=1, max_size=30))
def test_bursts_answer_as_requests_sent_one_at_a_time(actions: list) -> None:
    """Random bursts of D/F/G/H/q over three sessions give every session the same reports,
    in the same order, as sending each request only after the previous one was answered."""
    messages = _messages(actions)
    one = Exchange()
    for who, m in messages:
        one.send(_sessions(one)[who], m)
        one.settle()
    burst = Exchange()
    for (who, m), (_, _, _, tick) in zip(messages, actions):
        burst.send(_sessions(burst)[who], m)
        if tick:
            burst.pipeline.tick()
    burst.settle()
    for name in PLAN:
        expected = _normalise(_sessions(one)[name].take())
        got = _normalise(_sessions(burst)[name].take())
        assert got == expected, name


#: without F and G (which do not read the store: an order that left memory is unknown to them,
#: so what they answer depends on when other sessions' orders pushed it out)
STORE_ACTION = st.tuples(
    st.sampled_from(sorted(PLAN)),
    st.sampled_from(["D", "D", "D", "H", "H", "q", "Dbad"]),
    st.integers(0, 9),
    st.booleans(),  # tick (and answer the status reads waiting) after this message
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(STORE_ACTION, min_size=1, max_size=30))
def test_bursts_with_status_reads_answer_as_one_at_a_time(actions: list) -> None:
    """No ended order kept in memory, status requests read from a store answering later:
    random bursts give every session the same reports, in the same order, as sending each
    request only after the previous one was answered."""
    messages = _messages(actions)
    one = Exchange(max_ended_orders=0)
    ShadowStore(one)
    for who, m in messages:
        one.send(_sessions(one)[who], m)
        one.settle()
    burst = Exchange(max_ended_orders=0)
    store = ShadowStore(burst)
    for (who, m), (_, _, _, tick) in zip(messages, actions):
        burst.send(_sessions(burst)[who], m)
        if tick:
            store.complete()
            burst.pipeline.tick()
    burst.settle()
    for name in PLAN:
        expected = _normalise(_sessions(one)[name].take())
        got = _normalise(_sessions(burst)[name].take())
        assert got == expected, name

"""A burst of requests that must wait behind a session's earlier ones (cancels streamed right
after the orders they cancel) costs work linear in the burst, and is answered in order."""

from __future__ import annotations

from .harness import Exchange, msg, new_order

KEY = ((55, "BTC-PERP"), (54, "1"), (60, "20240101-00:00:00"))


def test_a_burst_of_waiting_cancels_is_handled_again_linearly_and_in_order() -> None:
    x = Exchange()
    burst = 200
    for i in range(burst):  # none matched yet: every cancel has to wait in the lane
        x.send(x.acme, new_order(f"N{i}", price="59000"))
    for i in range(burst):
        x.send(x.acme, msg("F", (41, f"N{i}"), (11, f"C{i}"), *KEY))
    arrivals = 0
    arrive = x.app._arrive

    def counting(session, message, now_ns):
        nonlocal arrivals
        arrivals += 1
        arrive(session, message, now_ns)

    x.app._arrive = counting
    x.settle(limit=10 * burst)
    # each cancel is handled again once when it can go, plus once per release at most for
    # the one at the front: linear (the old way re-queued every waiting one per release)
    assert arrivals <= 3 * burst, arrivals
    canceled = [f[11] for t, f in x.acme.take() if t == "8" and f.get(150) == "4"]
    assert canceled == [f"C{i}" for i in range(burst)]

"""Dry run of matching, for fill-or-kill and minimum quantity.

Theory of operation
-------------------
:func:`executable_qty` answers "how much would this taker fill right now, up to ``need``?"
without changing anything, by replaying exactly what :meth:`MatchingEngine._match` does:
levels best first while they cross the limit, orders in time priority, each trade taking at
most the maker's visible quantity, an exhausted iceberg going to the back of its level with
a fresh display, self-trade prevention by the taker's mode (CANCEL_OLDEST skips its own
orders; any other mode ends the taker's fills there) and resting reduce-only makers clamped
to their account's position as it changes fill by fill. Because it is the same walk,
"executable >= qty" guarantees that the real match fills the whole FOK order.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from engine.enums import Side, StpMode


def executable_qty(eng: Any, m: Any, t: Any, limit: int, need: int) -> int:
    """Quantity taker ``t`` would fill against market ``m`` up to ``limit``, capped at need."""
    mode = eng._stp_mode(t)
    buy = t.side is Side.BUY
    opp = Side.SELL if buy else Side.BUY
    positions = m.positions
    sim_pos: dict[str, int] = {}
    got = 0
    for level in m.book.iter_crossing(opp, limit):
        queue = deque([o, o.visible, o.leaves] for o in level)
        while queue:
            o, vis, lv = queue.popleft()
            a = o.account
            if a == t.account:
                if mode is StpMode.CANCEL_OLDEST:
                    continue
                return got
            pos = sim_pos[a] if a in sim_pos else positions.get(a, 0)
            if o.spec.reduce_only:
                room = -pos if o.side is Side.BUY else pos
                if room <= 0:
                    continue
                if lv > room:
                    lv = room
                    if vis > lv:
                        vis = lv
            q = need - got
            if q > vis:
                q = vis
            got += q
            if got >= need:
                return got
            lv -= q
            sim_pos[a] = pos + q if o.side is Side.BUY else pos - q
            if lv:
                queue.append([o, min(o.spec.display, lv), lv])
    return got

"""Mark thresholds: which accounts a mark move could put under maintenance margin.

Theory of operation
-------------------
A mark update must cost O(log n) when nobody is near liquidation, however many accounts
hold the instrument. So each account (cross: per settlement asset; isolated: per position)
is *armed* with one trigger price per position: a long fires when the mark falls to or
below its trigger, a short when it rises to or above it. Triggers are kept in two sorted
lists per instrument, and a mark update takes only the fired ends of them (two bisects).

The trigger is conservative: the account's headroom H = equity - maintenance margin at the
current marks is split evenly over its k positions, and a position of s lots may move
``delta = (H // k) * PPM // (s * v * (PPM + mmr_max))`` ticks against it before it fires
(a tick against it costs at most s*v of equity plus s*v*mmr_max of maintenance margin).
So while no trigger has fired, no position has used its share and H is still positive.
A fired account is valued exactly and re-armed (or reported as breached): firing early
costs a recompute, never a missed breach. Accounts are also re-armed whenever a command
changes their positions or collateral.
"""

from __future__ import annotations

from sortedcontainers import SortedList

PPM = 1_000_000


class Thresholds:
    """Trigger prices of one instrument: ``longs`` fire at mark <= price, ``shorts`` at >=.

    Entries are ``(price, owner)`` where owner is ``(account, isolated)``.
    """

    __slots__ = ("longs", "shorts")

    def __init__(self) -> None:
        self.longs: SortedList = SortedList()
        self.shorts: SortedList = SortedList()

    def fired(self, mark: int) -> list:
        """Remove and return the owners of every entry the mark has reached."""
        out: list = []
        longs = self.longs
        if longs and longs[-1][0] >= mark:
            i = longs.bisect_left((mark,))
            out.extend(owner for _p, owner in longs[i:])
            del longs[i:]
        shorts = self.shorts
        if shorts and shorts[0][0] <= mark:
            j = shorts.bisect_right((mark, (chr(0x10FFFF), True)))
            out.extend(owner for _p, owner in shorts[:j])
            del shorts[:j]
        return out

    def __len__(self) -> int:
        return len(self.longs) + len(self.shorts)


def trigger_distance(headroom_share: int, size: int, v: int, mmr_max_ppm: int) -> int:
    """Ticks a position of ``size`` lots may move against it using at most its share."""
    if headroom_share <= 0:
        return 0
    per_tick = abs(size) * v * (PPM + mmr_max_ppm)
    return headroom_share * PPM // per_tick


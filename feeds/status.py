"""Instrument trading status as the feed publishes it: names, and one symbol's state.

Theory of operation
-------------------
The engine emits ``InstrumentStatusChanged`` when a ``SetInstrumentStatus`` command is
processed; the feed core hands each released one to the symbol's :class:`StatusFeed`
(:meth:`StatusFeed.on_change`) and asks it at every flush for the news
(:meth:`StatusFeed.take_update`). Like every other channel, a status is published once per
batch at most: the message says the status in force at the end of the batch, with the update
id ``u`` (the engine command seq) and engine time ``ts`` of the command that set it. The
status a symbol starts with is its instrument's ``status`` (the composition root builds the
core with each instrument's current status, so after a restart the recovered one), with
``u`` and ``ts`` 0: when it was set is not known. A batch whose status ends where the last
published one was (set again to the same value, or changed and changed back within one
batch) publishes nothing.

A new subscriber gets :meth:`StatusFeed.snapshot`, the published state, so the next update it
sees is the next change after it. Every status message is complete (no diff to apply).
"""

from __future__ import annotations

from engine.enums import InstrumentStatus

#: the wire names of the statuses (the spellings of the exchange's configuration)
STATUS_NAMES: dict[InstrumentStatus, str] = {
    InstrumentStatus.TRADING: "trading",
    InstrumentStatus.HALTED: "halted",
    InstrumentStatus.CANCEL_ONLY: "cancel-only",
    InstrumentStatus.POST_ONLY: "post-only",
}


class StatusFeed:
    """One symbol's trading status: the latest released, and the one last published."""

    __slots__ = ("channel", "published", "status", "symbol", "ts", "u")

    def __init__(self, symbol: str, channel: str, status: InstrumentStatus) -> None:
        self.symbol = symbol
        self.channel = channel
        self.status = InstrumentStatus(status)  # latest applied (released) status
        self.u = 0  # command seq that set it (0: in force since the core was built)
        self.ts = 0  # its engine time
        #: (status, u, ts) as last published: what a new subscriber is told
        self.published = (self.status, 0, 0)

    def on_change(self, seq: int, ts: int, status: InstrumentStatus) -> None:
        """A released status change (engine order)."""
        self.status, self.u, self.ts = InstrumentStatus(status), seq, ts

    def take_update(self) -> dict | None:
        """The payload to publish in this batch, or None if the status is the published one."""
        if self.status == self.published[0]:
            return None
        self.published = (self.status, self.u, self.ts)
        return self.snapshot()

    def snapshot(self) -> dict:
        """The published status as a ``status`` message payload."""
        status, u, ts = self.published
        return {"channel": self.channel, "type": "status", "symbol": self.symbol,
                "status": STATUS_NAMES[status], "u": u, "ts": ts}

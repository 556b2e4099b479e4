"""Routes market-data messages (V, x, e) to the market-data application, the rest elsewhere.

The composition root hands one ``Application`` to the session host; with order entry and
market data both present it hands this router, built around both. Everything else the
server or the host looks up on its application (``host_class``, ``start``, ``stop``,
``on_logon``, ``admin_resource``) is the other application's, so the router can stand in
for it without the server knowing.
"""

from __future__ import annotations

from typing import Any

from fixserver.codec import FixMessage
from fixserver.marketdata.application import MarketDataApplication


class MarketDataRouter:
    """An ``Application``: V, x and e to ``market_data``, everything else to ``other``."""

    def __init__(self, market_data: MarketDataApplication, other: Any) -> None:
        self.market_data = market_data
        self.other = other

    def on_message(self, session: Any, message: FixMessage, now_ns: int) -> None:
        """Hand ``message`` to the application that serves its MsgType."""
        if self.market_data.handles(message.msg_type):
            self.market_data.on_message(session, message, now_ns)
        else:
            self.other.on_message(session, message, now_ns)

    def on_logout(self, session: Any, now_ns: int) -> None:
        """Tell both applications that the session's connection ended."""
        self.market_data.on_logout(session, now_ns)
        on_logout = getattr(self.other, "on_logout", None)
        if on_logout is not None:
            on_logout(session, now_ns)

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes the router lacks: they are the other application's.
        if name in ("market_data", "other"):
            raise AttributeError(name)
        return getattr(self.other, name)

"""An in-process exchange with margined instruments and funded accounts, for the risk admin
API tests (the admin exchange of :mod:`tests.fixserver.admin.exchange` plus config)."""

from __future__ import annotations

from typing import Any

from fixserver.server import FixServer

from .exchange import start

#: BTC-PERP and ETH-PERP margined in USDT (Binance-like tiers); A1 and B1 funded 1,000,000
RISK_CONFIG = """\
IndexStaleSeconds={stale}
[INSTRUMENT]
Symbol=BTC-PERP
TickSize=0.1
LotSize=0.001
ReferencePrice=60000
MaxLeverage=100
RiskTiers=50000:0.4%:100, 250000:0.5%:75, 1000000:1%:50, 10000000:2.5%:20
[INSTRUMENT]
Symbol=ETH-PERP
TickSize=0.01
LotSize=0.01
ReferencePrice=3000
MaxLeverage=50
DefaultLeverage=10
RiskTiers=100000:0.5%:50, 1000000:1%:25, 10000000:2.5%:10
[FUNDING]
Accounts=A1,B1
Asset=USDT
Amount=1000000
"""


def start_margined(tmp: Any, stale: float = 30.0, extra: str = "") -> FixServer:
    """The admin exchange with RISK_CONFIG (started on the global reactor); ``extra`` are
    more [DEFAULT] lines."""
    return start(tmp, extra=extra + "\n" + RISK_CONFIG.format(stale=stale))

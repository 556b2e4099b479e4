"""FIX market data: MarketDataRequest, SecurityListRequest and SecurityStatusRequest in,
W/X/Y, y and f out (spec/market-data.md)."""

from __future__ import annotations

from fixserver.marketdata.application import MarketDataApplication, build_market_data_application

__all__ = ["MarketDataApplication", "build_market_data_application"]

"""Prometheus metrics of the WebSocket feed (prometheus-client's default registry).

Label values are closed sets (channel kinds, wire formats, close causes), so no client can
grow the label space.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ACTIVE_CONNECTIONS = Gauge("active_websocket_connections", "Open WebSocket feed connections")
MESSAGES_SENT = Counter(
    "websocket_messages_sent_total",
    "Feed messages sent to WebSocket subscribers (one per subscriber per message)",
    ["kind", "format"],
)
LATENCY_MS = Histogram(
    "websocket_latency_ms",
    "Milliseconds from a trade's event ts (oldest trade of the batch) to its send to subscribers",
    buckets=(0.5, 1, 2, 5, 10, 15, 20, 30, 50, 100, 250, 1000),
)
BATCH_SECONDS = Histogram(
    "websocket_batch_seconds",
    "Time to build, encode and hand out one feed batch",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1),
)
CLOSED_CONNECTIONS = Counter(
    "websocket_closed_total", "WebSocket connections closed by the server, by cause", ["cause"]
)
REJECTED_CONNECTIONS = Counter(
    "websocket_rejected_total", "WebSocket handshakes refused, by cause", ["cause"]
)
CLIENT_ERRORS = Counter(
    "websocket_client_errors_total", "Error replies to client requests, by code", ["code"]
)

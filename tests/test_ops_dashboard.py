"""The Grafana dashboard in ops/ charts only metrics the server really exports."""

from __future__ import annotations

import importlib
import json
import pathlib
import re

from prometheus_client import REGISTRY

DASHBOARD = pathlib.Path(__file__).resolve().parents[1] / "ops" / "dashboards" / "fixexchange.json"
METRIC_MODULES = (
    "fixserver.metrics", "fixserver.pipeline", "fixserver.pg.writer", "feeds.metrics",
    "feeds.redis_sink",
)
SUFFIXES = ("_bucket", "_total", "_count", "_sum")
FUNCTIONS = {"rate", "sum", "by", "le", "histogram_quantile", "kind", "reason"}


def test_every_dashboard_expression_names_an_exported_metric():
    """Each metric named in a panel query is registered by the server's modules."""
    for module in METRIC_MODULES:
        importlib.import_module(module)
    exported = {family.name for family in REGISTRY.collect()}
    dashboard = json.loads(DASHBOARD.read_text())
    named = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = re.sub(r"\[[0-9a-z]+\]", "", target["expr"])
            for word in re.findall(r"[a-z_][a-z0-9_]*", expr):
                if word not in FUNCTIONS:
                    named.add(word)
    assert named, "the dashboard has queries"
    for name in sorted(named):
        base = name
        for suffix in SUFFIXES:
            if base.endswith(suffix):
                base = base[: -len(suffix)]
                break
        assert base in exported, f"dashboard charts {name}, which nothing exports"

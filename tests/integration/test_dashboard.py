"""The Grafana dashboard's structure, and that it and the alerts only name metrics we export."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ratelimitd.core.providers import Bucket
from ratelimitd.daemon.config import Config
from ratelimitd.ops.metrics import Metrics

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
ROWS = (
    "Overview",
    "Learned rate against baseline",
    "Streaks and pauses",
    "Feature gates",
    "Daemon health",
)
# Grafana's built-in variables; not defined in `templating`.
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range"}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DASHBOARDS / "ratelimitd.json").read_text())
    return loaded


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows and the panels inside collapsed rows included."""
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def test_panel_ids_are_unique(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), sorted(ids)
    assert all(isinstance(i, int) for i in ids)


def test_datasource_is_the_variable_everywhere(dashboard: dict[str, Any]) -> None:
    for panel in all_panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"] == DATASOURCE, (panel["title"], target["refId"])
    for variable in variables(dashboard).values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]
    # No hard-coded datasource uid anywhere (the built-in annotation is Grafana's own).
    uids = re.findall(r'"uid":\s*"([^"]*)"', json.dumps(dashboard))
    assert set(uids) <= {"${datasource}", "-- Grafana --", dashboard["uid"]}


def test_datasource_provider_and_bucket_variables(dashboard: dict[str, Any]) -> None:
    found = variables(dashboard)
    assert found["datasource"]["type"] == "datasource"
    assert found["datasource"]["query"] == "prometheus"
    for name in ("provider", "bucket"):
        assert found[name]["type"] == "query"
        query = found[name]["query"]["query"]
        assert query.startswith("label_values("), query
        assert query.endswith(f", {name})"), query
        assert found[name]["definition"] == query


def test_every_template_variable_is_used(dashboard: dict[str, Any]) -> None:
    text = json.dumps({"panels": dashboard["panels"], "variables": dashboard["templating"]["list"]})
    for name, variable in variables(dashboard).items():
        # A variable's own definition does not count as a use.
        others = text.replace(json.dumps(variable), "")
        used = f"${name}" in others or f"${{{name}}}" in others
        assert used, f"template variable {name} is never used"


def test_every_referenced_variable_is_defined(dashboard: dict[str, Any]) -> None:
    defined = set(variables(dashboard)) | BUILTIN_VARIABLES
    referenced = set(re.findall(r"\$\{?(\w+)", json.dumps(dashboard["panels"])))
    assert referenced <= defined


def test_panels_have_title_unit_description_and_target(dashboard: dict[str, Any]) -> None:
    rows = [p["title"] for p in all_panels(dashboard) if p["type"] == "row"]
    assert rows == list(ROWS)
    panels = [p for p in all_panels(dashboard) if p["type"] != "row"]
    assert len(panels) >= 20
    for panel in panels:
        assert panel["title"].strip(), panel["id"]
        assert len(panel["description"]) > 20, panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
    titles = [p["title"] for p in panels]
    assert len(titles) == len(set(titles))


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: set[tuple[int, int]] = set()
    for panel in all_panels(dashboard):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {
            (x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not mine & cells, panel["title"]
        cells |= mine


def exported_metric_names() -> set[str]:
    """Every sample name a running daemon exposes (from a fresh registry with one provider)."""
    registry = CollectorRegistry()
    metrics = Metrics(registry, version="0", max_providers=1)
    metrics.on_granted(Bucket("p", "default", Config().provider_for("p"), 0.0), 0.0)
    names = {sample.name for family in registry.collect() for sample in family.samples}
    # The service-dependent families, named as metrics.py defines them (checked by test_metrics).
    names |= {
        "ratelimitd_permits_granted_total",
        "ratelimitd_reports_total",
        "ratelimitd_rate_changes_total",
        "ratelimitd_pauses_total",
        "ratelimitd_paused_seconds_total",
        "ratelimitd_resets_total",
        "ratelimitd_bucket_last_change_timestamp_seconds",
        "ratelimitd_bucket_fill_ratio",
        "ratelimitd_malformed_headers_total",
        "ratelimitd_bucket_rate_per_second",
        "ratelimitd_bucket_baseline_per_second",
        "ratelimitd_bucket_rate_ratio",
        "ratelimitd_bucket_shadow_rate_per_second",
        "ratelimitd_bucket_streak",
        "ratelimitd_bucket_waiters",
        "ratelimitd_bucket_state",
        "ratelimitd_bucket_pause_remaining_seconds",
    }
    return names


def referenced_metric_names(text: str) -> set[str]:
    return set(re.findall(r"\b((?:ratelimitd|process)_[a-z_]+)\b", text))


def test_dashboard_and_alerts_name_only_exported_metrics(dashboard: dict[str, Any]) -> None:
    exported = exported_metric_names()
    exprs = [t["expr"] for p in all_panels(dashboard) for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in variables(dashboard).values() if v["type"] == "query"]
    assert referenced_metric_names("\n".join(exprs)) <= exported
    alerts = (DASHBOARDS / "alerts.yml").read_text()
    assert referenced_metric_names(alerts) <= exported

"""The real daemon logs one line per learning event, as JSON with `--log-format json`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daemons import DaemonFactory

CONFIG = """
[providers.api]
rate = "10/second"
burst = 10
"""


def test_a_cut_is_one_json_line_with_provider_bucket_reason_and_rate(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(CONFIG, env={"RATELIMITD_FEATURE_LEARNING": "1"}, args=["--log-format", "json"])
    with daemon.client() as client:
        for _ in range(3):
            permit = client.request("acquire", provider="api", timeout=0)["permit"]
            client.request("report", provider="api", status=429, permit=permit)
    daemon.wait_for_log('"event":"cut"')
    records = [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]
    assert records, daemon.log()
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    (cut,) = [r for r in records if r.get("event") == "cut"]
    assert (cut["provider"], cut["bucket"], cut["reason"], cut["rate"]) == ("api", "default", "429s", 9.0)
    assert cut["level"] == "info"

"""A provider created on first use and idle for `idle_ttl` is dropped; what it learned comes back."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from daemons import DaemonFactory

CONFIG = """
[server]
idle_ttl = 1.0

[persist]
path = "{state}"
save_interval = 60.0

[defaults]
rate = "10/second"
burst = 10
"""


def test_an_idle_provider_is_dropped_and_its_learned_rate_restored(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    daemon = daemon_factory(
        CONFIG.format(state=tmp_path / "state.json"),
        env={"RATELIMITD_FEATURE_LEARNING": "1", "RATELIMITD_FEATURE_PERSIST": "1"},
    )
    with daemon.client() as client:
        for _ in range(3):
            permit = client.request("acquire", provider="typo", timeout=0)["permit"]
            client.request("report", provider="typo", status=429, permit=permit)
        assert (
            client.request("status", provider="typo")["providers"]["typo"]["buckets"]["default"]["factor"]
            < 1.0
        )
        daemon.wait_for_log("dropped 1 providers idle for 1 s: typo")
        assert "typo" not in client.request("status")["providers"]
        client.request("acquire", provider="typo", timeout=0)
        bucket = client.request("status", provider="typo")["providers"]["typo"]["buckets"]["default"]
    assert bucket["factor"] < 1.0  # learned before the drop, kept in the state store

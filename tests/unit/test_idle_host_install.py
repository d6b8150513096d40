"""The documented systemd install keeps /metrics up on an idle host: the service is enabled too.

With only the socket enabled, the daemon (and its HTTP endpoints) would start on the first
client's connection, and Prometheus would see every idle host as down.
"""

from __future__ import annotations

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENABLE = "systemctl enable --now ratelimitd.socket ratelimitd.service"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string((ROOT / "systemd" / name).read_text())
    return parser


def test_the_service_starts_at_boot_when_enabled() -> None:
    service = unit("ratelimitd.service")
    assert service["Install"]["WantedBy"] == "multi-user.target"
    assert service["Install"]["Also"] == "ratelimitd.socket"
    assert "ratelimitd.socket" in service["Unit"]["Requires"]


def test_every_documented_install_enables_the_service() -> None:
    docs = (ROOT / "docs" / "systemd.md").read_text()
    assert f"sudo {ENABLE}" in docs
    assert ENABLE in (ROOT / "systemd" / "ratelimitd.socket").read_text().replace("\n# ", " ")
    assert ENABLE in (ROOT / "ratelimitd" / "ops" / "install.py").read_text().replace('"\n            " ', "")

"""The documented configuration example is real: it loads, and the doc shows it verbatim."""

from __future__ import annotations

from pathlib import Path

from ratelimitd.daemon.config import load_config

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_example_config_loads_with_every_section() -> None:
    config = load_config(DOCS / "example-config.toml", {})
    assert set(config.providers) == {"openai", "crossref", "github"}
    openai = config.providers["openai"]
    assert openai.buckets == ("key-a", "key-b")
    assert {lim.unit: lim.rate_per_second for lim in openai.limits} == {
        "requests": 500 / 60,
        "tokens": 200000 / 60,
    }
    assert config.providers["github"].limits[0].period == 3600.0


def test_configuration_doc_embeds_the_example_verbatim() -> None:
    example = (DOCS / "example-config.toml").read_text()
    assert example in (DOCS / "configuration.md").read_text()

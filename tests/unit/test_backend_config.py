"""The `[backend]` table: defaults, credentials from the URL or the environment, never shown."""

from __future__ import annotations

import pytest

from ratelimitd.core.errors import ConfigError
from ratelimitd.daemon.backend_config import display_url
from ratelimitd.daemon.config import parse_config


def test_the_default_backend_is_memory() -> None:
    config = parse_config({}, {}, "t")
    assert config.backend.kind == "memory"


def test_a_redis_backend_with_credentials_in_the_url() -> None:
    config = parse_config(
        {
            "backend": {
                "kind": "redis",
                "url": "rediss://app:s%40cret@cache.internal:6380/2",
                "expected_hosts": 4,
            }
        },
        {},
        "t",
    )
    backend = config.backend
    assert (backend.username, backend.password) == ("app", "s@cret")
    assert backend.fallback_share == 0.25
    assert backend.display_url == "rediss://app:***@cache.internal:6380/2"
    assert "cret" not in repr(config)


def test_the_environment_gives_credentials_and_beats_the_url() -> None:
    environ = {"RATELIMITD_REDIS_USERNAME": "ratelimitd", "RATELIMITD_REDIS_PASSWORD": "from-env"}
    config = parse_config({"backend": {"kind": "redis", "url": "redis://:old@127.0.0.1/0"}}, environ, "t")
    assert (config.backend.username, config.backend.password) == ("ratelimitd", "from-env")
    assert "from-env" not in repr(config)


def test_host_id_defaults_to_the_host_name_and_fallback_share_wins_over_expected_hosts() -> None:
    config = parse_config({"backend": {"kind": "redis", "expected_hosts": 4, "fallback_share": 0.5}}, {}, "t")
    assert config.backend.host_id
    assert config.backend.fallback_share == 0.5


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:pw@127.0.0.1:6379", "redis://:***@127.0.0.1:6379"),
        ("rediss://user:pw@[::1]:6380/1", "rediss://user:***@[::1]:6380/1"),
        ("unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
    ],
)
def test_display_url_masks_the_password(url: str, shown: str) -> None:
    assert display_url(url) == shown


def test_a_bad_url_is_named_without_its_password() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"backend": {"kind": "redis", "url": "redis://u:topsecret@host:99999"}}, {}, "t")
    assert "topsecret" not in str(info.value)
    assert "backend.url" in str(info.value)


@pytest.mark.parametrize(
    ("url", "kept", "shown"),
    [
        ("unix://app@/run/redis.sock", "unix:///run/redis.sock", "unix://app@/run/redis.sock"),
        (
            "unix://app:pw@/run/redis.sock?db=2",
            "unix:///run/redis.sock?db=2",
            "unix://app:***@/run/redis.sock?db=2",
        ),
        ("redis://app:pw@10.0.0.5:6379/1", "redis://10.0.0.5:6379/1", "redis://app:***@10.0.0.5:6379/1"),
    ],
)
def test_the_secret_is_kept_apart_from_the_url(url: str, kept: str, shown: str) -> None:
    backend = parse_config({"backend": {"kind": "redis", "url": url}}, {}, "t").backend
    assert backend.url == kept
    assert backend.display_url == shown

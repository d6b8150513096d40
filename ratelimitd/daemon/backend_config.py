"""The `[backend]` table: where buckets live (this process, or a Redis shared by many hosts).

Parsed by `config.py` (which owns reading the file and the environment); every problem is
reported with its key path. Credentials come from the URL or from
`RATELIMITD_REDIS_USERNAME` / `RATELIMITD_REDIS_PASSWORD` and are never shown: `display_url`
is the URL with its password masked, for logs, `status` and `check-config`.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from ratelimitd.core.config_fields import apply_fields, check_keys

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ratelimitd.core.config_fields import Problems

__all__ = ("SCHEMES", "BackendConfig", "display_url", "parse_backend")

SCHEMES = ("redis", "rediss", "unix")
BackendKind = Literal["memory", "redis"]
DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_EXPECTED_HOSTS = 2

_FIELDS = {
    "kind": "choice:memory|redis",
    "url": "str",
    "key_prefix": "str",
    "host_id": "str",
    "cluster": "bool",
    "timeout": "positive",
    "connect_timeout": "positive",
    "lease_time": "positive",
    "lease_max_share": "positive",
    "expected_hosts": "int",
    "fallback_share": "positive",
    "reconnect_min": "positive",
    "reconnect_max": "positive",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendConfig:
    kind: BackendKind = "memory"
    url: str = DEFAULT_URL
    # Kept out of repr: a Config is logged and printed in places.
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    key_prefix: str = "ratelimitd:"
    host_id: str = ""
    cluster: bool = False
    # Seconds for one Redis call; later counts as Redis being down. 0.5 s: the p99 of a call on
    # a loaded 2-core host is ~90 ms and its worst ~110 ms (bench/redis_round_trip.py), so 0.1 s
    # fell back on a busy host now and then; a hung Redis is noticed 0.4 s later instead.
    timeout: float = 0.5
    connect_timeout: float = 1.0
    lease_time: float = 0.075  # a lease is about this many seconds of the host's grant rate
    lease_max_share: float = 0.1  # ... and never more than this share of the burst
    expected_hosts: int = DEFAULT_EXPECTED_HOSTS
    fallback_share: float = 0.5  # of the rate, per host, while Redis is unreachable
    reconnect_min: float = 0.1
    reconnect_max: float = 5.0

    @property
    def display_url(self) -> str:
        """The URL as logs and `status` show it: the user, never the password."""
        if self.password is None and self.username is None:
            return self.url
        scheme, _, rest = self.url.partition("://")
        secret = ":***" if self.password is not None else ""
        return f"{scheme}://{self.username or ''}{secret}@{rest}"


def display_url(url: str) -> str:
    """`url` with any password replaced by `***` (safe to log and show)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


def parse_backend(raw: Mapping[str, Any], environ: Mapping[str, str], problems: Problems) -> BackendConfig:
    """The `[backend]` table (already checked to be a table) and the credential variables."""
    values: dict[str, Any] = {}
    check_keys(raw, set(_FIELDS), "backend", problems)
    apply_fields(values, {k: v for k, v in raw.items() if k in _FIELDS}, _FIELDS, "backend", problems)
    url = values.get("url", DEFAULT_URL)
    username, password = _check_url(url, problems)
    values["url"] = _without_userinfo(url)  # the secret is kept apart, out of every repr
    username = environ.get("RATELIMITD_REDIS_USERNAME") or username
    password = environ.get("RATELIMITD_REDIS_PASSWORD") or password
    values.setdefault("host_id", socket.gethostname() or "localhost")
    if not values["host_id"].strip():
        problems.add("backend.host_id", "must not be empty")
    expected = values.get("expected_hosts", DEFAULT_EXPECTED_HOSTS)
    if "fallback_share" in values:
        if values["fallback_share"] > 1.0:
            problems.add("backend.fallback_share", f"must be <= 1, got {values['fallback_share']!r}")
    else:
        values["fallback_share"] = 1.0 / expected
    if values.get("lease_max_share", 0.0) > 1.0:
        problems.add("backend.lease_max_share", f"must be <= 1, got {values['lease_max_share']!r}")
    if values.get("reconnect_max", 5.0) < values.get("reconnect_min", 0.1):
        problems.add("backend.reconnect_max", "must be >= backend.reconnect_min")
    return BackendConfig(username=username, password=password, **values)


def _without_userinfo(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    # Built by hand: urlunsplit drops the `//` of an empty host (unix://user@/path).
    rest = url.split("://", 1)[1] if "://" in url else url
    return f"{parts.scheme}://{rest.split('@', 1)[1]}" if "@" in rest.split("/", 1)[0] else url


def _check_url(url: str, problems: Problems) -> tuple[str | None, str | None]:
    """Problems of a Redis URL (named without its password); the credentials it carries."""
    shown = display_url(url)
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port out of range
    except ValueError as exc:
        problems.add("backend.url", f"not a valid URL ({exc}): {shown}")
        return None, None
    if parts.scheme not in SCHEMES:
        problems.add(
            "backend.url",
            f"unknown scheme {parts.scheme + '://' if parts.scheme else '(none)'} in {shown}; "
            "expected redis:// (plain TCP), rediss:// (TLS) or unix:// (a socket path)",
        )
    elif parts.scheme == "unix" and not parts.path:
        problems.add(
            "backend.url", f"unix:// needs a socket path, like unix:///run/redis/redis.sock: {shown}"
        )
    elif parts.scheme != "unix" and not parts.hostname:
        problems.add("backend.url", f"no host in {shown}")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return username, password

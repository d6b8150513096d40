"""Configuration: frozen dataclasses built by one loader, the only reader of env and files.

Precedence, lowest first: embedded defaults < TOML file (`--config`, else
`$RATELIMITD_CONFIG`, else the embedded `default_config.toml`) < `RATELIMITD_*`
environment variables < command-line flags (applied by the caller with
`dataclasses.replace`). Every problem is collected with its dotted key path, so
`ratelimitd check-config` can report them all at once.
"""

from __future__ import annotations

import grp
import math
import pwd
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ratelimitd.core.config_fields import (
    Problems,
    apply_fields,
    check_keys,
    check_number,
    check_table,
)
from ratelimitd.core.errors import ConfigError
from ratelimitd.core.peers import Trust
from ratelimitd.core.rates import parse_period, parse_rate
from ratelimitd.daemon.backend_config import BackendConfig, parse_backend

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = (
    "PROVIDER_NAME",
    "Config",
    "Features",
    "HttpConfig",
    "LearningConfig",
    "LimitConfig",
    "PersistConfig",
    "ProviderConfig",
    "ServerConfig",
    "load_config",
    "parse_config",
)

PROVIDER_NAME = re.compile(r"[A-Za-z0-9._:-]{1,128}")
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]
Selection = Literal["failover", "round_robin", "most_headroom"]
Policy = Literal["static", "streak", "adaptive"]
RetryAfterScope = Literal["auto", "bucket", "request"]
# Old names still accepted, with a note: old -> new.
POLICY_ALIASES = {"seed": "streak"}
FEATURE_NAMES = ("learning", "recovery", "pacing", "persist")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitConfig:
    unit: str
    count: float
    period: float
    burst: float

    @property
    def rate_per_second(self) -> float:
        return self.count / self.period


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderConfig:
    name: str
    limits: tuple[LimitConfig, ...]
    buckets: tuple[str, ...] = ("default",)
    selection: Selection = "failover"
    profile: str | None = None
    trust_headers: frozenset[str] | None = None
    # Peers whose reports and resets change this provider (None: the `[trusted_peers]` default).
    trusted_peers: Trust | None = None
    retry_after_scope: RetryAfterScope = "auto"  # whom a 429's Retry-After holds (docs/learning.md)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    socket: Path | None = None
    socket_mode: int = 0o660
    socket_dir_mode: int = 0o700  # of the socket's directory, when the daemon creates it
    max_line_bytes: int = 65536
    max_providers: int = 1000
    max_connections: int = 1024
    max_connections_per_uid: int = 512  # one user cannot take every connection
    idle_timeout: float = 300.0  # close a connection with nothing in flight this long; 0 = never
    max_waiters: int = 100_000
    default_timeout: float = 30.0
    max_timeout: float = 3600.0
    shutdown_timeout: float = 2.0
    log_level: LogLevel = "info"
    log_format: LogFormat = "text"
    create_providers: bool = True
    # A provider created on first use whose name is a built-in profile (`openai`, ...) gets it.
    profiles_on_first_use: bool = True
    idle_ttl: float = 3600.0  # providers created on first use and idle this long are dropped; 0: never


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9464
    metrics: bool = True
    max_connections: int = 64  # beyond: 503; keeps HTTP from using the socket's descriptors
    idle_timeout: float = 30.0  # close a connection idle (or slow to send its request) this long


@dataclass(frozen=True, slots=True, kw_only=True)
class Features:
    learning: bool = False
    recovery: bool = False
    pacing: bool = False
    persist: bool = False

    def as_dict(self) -> dict[str, bool]:
        return {name: bool(getattr(self, name)) for name in FEATURE_NAMES}


@dataclass(frozen=True, slots=True, kw_only=True)
class LearningConfig:
    policy: Policy = "adaptive"
    max_pause: float = 300.0
    history_size: int = 50
    allow_above_configured: bool = False
    disable_for: float = 600.0  # seconds a bucket stays out after 401/403; 0 = until `reset`


@dataclass(frozen=True, slots=True, kw_only=True)
class PersistConfig:
    path: Path | None = None
    save_interval: float = 30.0
    max_age: float = 7 * 86400.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    source: str = "<embedded default>"
    server: ServerConfig = field(default_factory=ServerConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    features: Features = field(default_factory=Features)
    learning: LearningConfig = field(default_factory=LearningConfig)
    persist: PersistConfig = field(default_factory=PersistConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    notes: tuple[str, ...] = ()  # deprecations: the daemon logs them, check-config prints them
    default_limits: tuple[LimitConfig, ...] = (
        LimitConfig(unit="requests", count=10.0, period=1.0, burst=10.0),
    )
    providers: Mapping[str, ProviderConfig] = field(default_factory=dict)
    # Trusted beside the daemon's uid and root (None: the socket's group); protocol.md.
    trusted_peers: Trust | None = None

    def provider_for(self, name: str) -> ProviderConfig:
        """The configured provider, or one created on demand: the built-in profile of that
        name (its limits and header trust) when `server.profiles_on_first_use`, else the defaults."""
        configured = self.providers.get(name)
        if configured is not None:
            return configured
        if self.server.profiles_on_first_use:
            from ratelimitd.core.headers.profiles import PROFILES

            profile = PROFILES.get(name)
            if profile is not None:
                return ProviderConfig(
                    name=name,
                    limits=tuple(
                        LimitConfig(unit=lim.unit, count=lim.rate, period=lim.period_seconds, burst=lim.burst)
                        for lim in profile.limits
                    ),
                    profile=name,
                    trust_headers=profile.trust_headers,
                )
        return ProviderConfig(name=name, limits=self.default_limits)


def _parse_limit(raw: Any, path: str, problems: Problems) -> LimitConfig | None:
    table = check_table(raw, path, problems)
    check_keys(table, {"unit", "rate", "count", "period", "burst"}, path, problems)
    unit = table.get("unit", "requests")
    if not isinstance(unit, str) or not PROVIDER_NAME.fullmatch(unit):
        problems.add(f"{path}.unit", f"expected a unit name like 'requests' or 'tokens', got {unit!r}")
        return None
    count: float | None
    period: float | None
    if "rate" in table:
        if "count" in table or "period" in table:
            problems.add(path, "give either 'rate' or 'count' and 'period', not both")
            return None
        if not isinstance(table["rate"], str):
            problems.add(f"{path}.rate", f"expected a string like '60/minute', got {table['rate']!r}")
            return None
        try:
            count, period = parse_rate(table["rate"])
        except ValueError as exc:
            problems.add(f"{path}.rate", str(exc))
            return None
    elif "count" in table:
        count = check_number(table["count"], f"{path}.count", problems, strict=True)
        try:
            period = parse_period(table.get("period", 1.0))
        except ValueError as exc:
            problems.add(f"{path}.period", str(exc))
            period = None
        if count is None or period is None:
            return None
    else:
        problems.add(path, "missing 'rate' (like '60/minute') or 'count' and 'period'")
        return None
    rate = count / period
    if not math.isfinite(rate) or rate <= 0:
        # e.g. count = 1e-300 over period = 1e300 underflows to 0: the limiter cannot use it.
        problems.add(path, f"rate {count:g}/{period:g}s is out of range")
        return None
    burst = max(1.0, math.ceil(rate))
    if "burst" in table:
        given = check_number(table["burst"], f"{path}.burst", problems, strict=True)
        if given is None:
            return None
        burst = given
    return LimitConfig(unit=unit, count=count, period=period, burst=burst)


def _parse_limits(table: Mapping[str, Any], path: str, problems: Problems) -> tuple[LimitConfig, ...]:
    """`limits = [{...}, ...]`, or the shorthand `rate`/`burst` for one `requests` limit."""
    if "limits" in table:
        if "rate" in table or "burst" in table:
            problems.add(path, "give either 'limits' or the 'rate'/'burst' shorthand, not both")
        raw = table["limits"]
        if not isinstance(raw, list) or not raw:
            problems.add(f"{path}.limits", "expected a non-empty array of tables")
            return ()
        parsed = [_parse_limit(item, f"{path}.limits[{i}]", problems) for i, item in enumerate(raw)]
    elif "rate" in table:
        parsed = [_parse_limit({k: table[k] for k in ("rate", "burst") if k in table}, path, problems)]
    else:
        problems.add(path, "missing 'rate' or 'limits'")
        return ()
    limits = tuple(limit for limit in parsed if limit is not None)
    units = [limit.unit for limit in limits]
    if len(set(units)) != len(units):
        problems.add(f"{path}.limits", f"each unit may appear once, got {units}")
    return limits


def _parse_provider(name: str, raw: Any, problems: Problems) -> ProviderConfig | None:
    path = f"providers.{name}"
    if not PROVIDER_NAME.fullmatch(name):
        problems.add(path, "provider names are 1-128 characters of A-Z a-z 0-9 . _ - :")
        return None
    table = check_table(raw, path, problems)
    allowed = {
        "limits", "rate", "burst", "buckets", "selection", "profile", "trust_headers", "trusted_peers",
        "retry_after_scope",
    }  # fmt: skip
    check_keys(table, allowed, path, problems)
    profile = table.get("profile")
    base: tuple[LimitConfig, ...] = ()
    if profile is not None:
        base = _profile_limits(profile, f"{path}.profile", problems)
    if "limits" in table or "rate" in table:
        limits = _parse_limits(table, path, problems)
    elif profile is not None:
        limits = base  # an unknown profile was reported above; no second, misleading error
    else:
        limits = _parse_limits(table, path, problems)
    buckets = table.get("buckets", ["default"])
    bad_names = (
        [b for b in buckets if not (isinstance(b, str) and PROVIDER_NAME.fullmatch(b))]
        if isinstance(buckets, list)
        else []
    )
    if not isinstance(buckets, list) or not buckets:
        problems.add(f"{path}.buckets", "expected a non-empty array of bucket names (A-Z a-z 0-9 . _ - :)")
        buckets = ["default"]
    elif bad_names:
        problems.add(
            f"{path}.buckets",
            "bucket names are 1-128 characters of A-Z a-z 0-9 . _ - :, got "
            + ", ".join(map(repr, bad_names)),
        )
        buckets = ["default"]
    elif len(set(buckets)) != len(buckets):
        problems.add(f"{path}.buckets", f"bucket names must be unique, got {buckets}")
    selection = table.get("selection", "failover")
    if selection not in ("failover", "round_robin", "most_headroom"):
        problems.add(
            f"{path}.selection",
            f"expected failover, round_robin or most_headroom, got {selection!r}",
        )
        selection = "failover"
    trust = table.get("trust_headers")
    if trust is not None:
        from ratelimitd.core.headers.parse import FAMILIES

        if not (isinstance(trust, list) and all(isinstance(t, str) for t in trust)):
            problems.add(f"{path}.trust_headers", "expected an array of header family names")
            trust = None
        elif unknown := sorted(set(trust) - FAMILIES):
            problems.add(
                f"{path}.trust_headers",
                f"unknown header families {unknown} (known: {', '.join(sorted(FAMILIES))})",
            )
            trust = None
    elif isinstance(profile, str):
        trust = _profile_trust(profile)
    trusted_peers = (
        _parse_trust(table["trusted_peers"], f"{path}.trusted_peers", problems)
        if "trusted_peers" in table
        else None
    )
    scope = table.get("retry_after_scope", "auto")
    if scope not in ("auto", "bucket", "request"):
        problems.add(f"{path}.retry_after_scope", f"expected auto, bucket or request, got {scope!r}")
        scope = "auto"
    if not limits:
        return None
    return ProviderConfig(
        name=name,
        limits=limits,
        buckets=tuple(buckets),
        selection=selection,
        profile=profile if isinstance(profile, str) else None,
        trust_headers=frozenset(trust) if trust is not None else None,
        trusted_peers=trusted_peers,
        retry_after_scope=scope,
    )


def _parse_trust(raw: Any, path: str, problems: Problems) -> Trust | None:
    """`{uids = [...], gids = [...]}`: numbers, or user and group names resolved now."""
    table = check_table(raw, path, problems)
    check_keys(table, {"uids", "gids"}, path, problems)
    uids = _ids(
        table.get("uids", []), f"{path}.uids", problems, lookup=lambda name: pwd.getpwnam(name).pw_uid
    )
    gids = _ids(
        table.get("gids", []), f"{path}.gids", problems, lookup=lambda name: grp.getgrnam(name).gr_gid
    )
    if uids is None or gids is None:
        return None
    return Trust(uids=uids, gids=gids)


def _ids(raw: Any, path: str, problems: Problems, *, lookup: Callable[[str], int]) -> frozenset[int] | None:
    if not isinstance(raw, list):
        problems.add(path, f"expected an array of ids or names, got {raw!r}")
        return None
    found: set[int] = set()
    for item in raw:
        if isinstance(item, int) and not isinstance(item, bool) and 0 <= item < 2**32 - 1:
            found.add(item)
        elif isinstance(item, str) and item:
            try:
                found.add(lookup(item))
            except KeyError:
                problems.add(path, f"no such {'user' if path.endswith('uids') else 'group'}: {item!r}")
                return None
        else:
            problems.add(path, f"expected an id (0 to 4294967294) or a name, got {item!r}")
            return None
    return frozenset(found)


def _profile_trust(profile: str) -> list[str] | None:
    from ratelimitd.core.headers.profiles import PROFILES

    found = PROFILES.get(profile)
    return None if found is None else sorted(found.trust_headers)


def _profile_limits(profile: Any, path: str, problems: Problems) -> tuple[LimitConfig, ...]:
    from ratelimitd.core.headers.profiles import PROFILES

    if not isinstance(profile, str) or profile not in PROFILES:
        problems.add(path, f"unknown profile {profile!r} (known: {', '.join(sorted(PROFILES))})")
        return ()
    return tuple(
        LimitConfig(unit=lim.unit, count=lim.rate, period=lim.period_seconds, burst=lim.burst)
        for lim in PROFILES[profile].limits
    )


_SERVER = {
    "socket": "path",
    "socket_mode": "mode",
    "socket_dir_mode": "mode",
    "max_line_bytes": "int",
    "max_providers": "int",
    "max_connections": "int",
    "max_connections_per_uid": "int",
    "idle_timeout": "seconds",
    "max_waiters": "int",
    "default_timeout": "seconds",
    "max_timeout": "positive",
    "shutdown_timeout": "seconds",
    "log_level": "choice:debug|info|warning|error",
    "log_format": "choice:text|json",
    "create_providers": "bool",
    "profiles_on_first_use": "bool",
    "idle_ttl": "seconds",
}
_HTTP = {
    "enabled": "bool",
    "host": "str",
    "port": "port",
    "metrics": "bool",
    "max_connections": "int",
    "idle_timeout": "positive",
}
_FEATURES = dict.fromkeys(FEATURE_NAMES, "bool")
_LEARNING = {
    "policy": "choice:static|streak|adaptive",
    "max_pause": "positive",
    "history_size": "int",
    "allow_above_configured": "bool",
    "disable_for": "seconds",
}
_PERSIST = {"path": "path", "save_interval": "positive", "max_age": "positive"}
# Environment variables that override the file: name -> (section, key).
_ENV = {
    "RATELIMITD_SOCKET": ("server", "socket"),
    "RATELIMITD_LOG_LEVEL": ("server", "log_level"),
    "RATELIMITD_LOG_FORMAT": ("server", "log_format"),
    "RATELIMITD_MAX_PROVIDERS": ("server", "max_providers"),
    "RATELIMITD_DEFAULT_TIMEOUT": ("server", "default_timeout"),
    "RATELIMITD_HTTP_ENABLED": ("http", "enabled"),
    "RATELIMITD_HTTP_HOST": ("http", "host"),
    "RATELIMITD_HTTP_PORT": ("http", "port"),
    "RATELIMITD_STATE_PATH": ("persist", "path"),
    "RATELIMITD_POLICY": ("learning", "policy"),
}


def _env_value(raw: str, kind: str) -> Any:
    """Environment strings -> the TOML type the section parser expects."""
    if kind == "bool":
        return _envcheck_bool(raw)
    if kind in ("int", "port"):
        return int(raw) if re.fullmatch(r"-?[0-9]+", raw.strip()) else raw
    if kind in ("seconds", "positive"):
        try:
            return float(raw)
        except ValueError:
            return raw
    return raw


def _envcheck_bool(raw: str) -> bool | str:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return raw


def parse_config(document: Mapping[str, Any], environ: Mapping[str, str], source: str) -> Config:
    """Build a Config from a parsed TOML document and the environment; raise ConfigError."""
    problems = Problems()
    check_keys(
        document,
        {
            "server",
            "http",
            "features",
            "learning",
            "persist",
            "backend",
            "defaults",
            "providers",
            "trusted_peers",
        },
        "",
        problems,
    )
    sections: dict[str, dict[str, Any]] = {}
    specs = {
        "server": _SERVER,
        "http": _HTTP,
        "features": _FEATURES,
        "learning": _LEARNING,
        "persist": _PERSIST,
    }
    notes: list[str] = []

    def policy_alias(value: Any, where: str) -> Any:
        """An old policy name: the new one, and a note."""
        if isinstance(value, str) and value in POLICY_ALIASES:
            new = POLICY_ALIASES[value]
            notes.append(f"{where}: {value!r} is the old name of {new!r}; it still works, but write {new!r}")
            return new
        return value

    for name, spec in specs.items():
        sections[name] = {}
        table = check_table(document.get(name), name, problems)
        if name == "learning" and "policy" in table:
            table = {**table, "policy": policy_alias(table["policy"], "learning.policy")}
        apply_fields(sections[name], table, spec, name, problems)
    for var, (section, key) in _ENV.items():
        if var in environ:
            kind = specs[section][key]
            before = len(problems.items)
            value = _env_value(environ[var], kind)
            if var == "RATELIMITD_POLICY":
                value = policy_alias(value, var)
            apply_fields(sections[section], {key: value}, {key: kind}, var, problems)
            if len(problems.items) > before:  # name the variable, not a dotted key
                problems.items[-1] = problems.items[-1].replace(f"{var}.{key}", var)
    for feature in FEATURE_NAMES:
        var = f"RATELIMITD_FEATURE_{feature.upper()}"
        if var in environ:
            value = _envcheck_bool(environ[var])
            if isinstance(value, bool):
                sections["features"][feature] = value
            else:
                problems.add(var, f"expected 1/true/yes/on or 0/false/no/off, got {environ[var]!r}")

    backend = parse_backend(check_table(document.get("backend"), "backend", problems), environ, problems)
    defaults = check_table(document.get("defaults"), "defaults", problems)
    check_keys(defaults, {"rate", "burst", "limits"}, "defaults", problems)
    default_limits = _parse_limits(defaults, "defaults", problems) if defaults else Config().default_limits

    providers: dict[str, ProviderConfig] = {}
    for name, raw in check_table(document.get("providers"), "providers", problems).items():
        provider = _parse_provider(name, raw, problems)
        if provider is not None:
            providers[name] = provider
    trusted_peers = (
        _parse_trust(document["trusted_peers"], "trusted_peers", problems)
        if "trusted_peers" in document
        else None
    )
    server = ServerConfig(**sections["server"])
    if len(providers) > server.max_providers:
        problems.add(
            "server.max_providers",
            f"{len(providers)} providers configured, more than {server.max_providers}",
        )
    if server.max_line_bytes < 256:
        problems.add("server.max_line_bytes", f"must be >= 256, got {server.max_line_bytes}")
    if problems.items:
        raise ConfigError(source, problems.items)
    return Config(
        source=source,
        server=server,
        http=HttpConfig(**sections["http"]),
        features=Features(**sections["features"]),
        learning=LearningConfig(**sections["learning"]),
        persist=PersistConfig(**sections["persist"]),
        backend=backend,
        default_limits=default_limits,
        providers=providers,
        trusted_peers=trusted_peers,
        notes=tuple(notes),
    )


def load_config(path: str | Path | None, environ: Mapping[str, str]) -> Config:
    """Load `path`, else `$RATELIMITD_CONFIG`, else the embedded default; apply the environment."""
    chosen = path if path is not None else environ.get("RATELIMITD_CONFIG") or None
    if chosen is None:
        text = resources.files("ratelimitd").joinpath("default_config.toml").read_text("utf-8")
        source = "<embedded default>"
    else:
        source = str(chosen)
        try:
            text = Path(chosen).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(source, [f"cannot read: {exc}"]) from exc
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"not valid TOML: {exc}"]) from exc
    return parse_config(document, environ, source)

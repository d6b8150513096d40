"""Configuration loading: one fixture file per failure with its exact messages (envoy style).

Each `config_cases/*.toml` starts with `# expect: <problem>` lines, the full list of problems
the loader must report, in order; an expected line ending in ` ...` matches as a prefix (for
messages that quote tomllib, whose wording depends on the Python version).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ratelimitd.core.errors import ConfigError
from ratelimitd.daemon.config import Config, LimitConfig, ServerConfig, load_config, parse_config

CASES = sorted((Path(__file__).parent / "config_cases").glob("*.toml"))


def _expected(case: Path) -> list[str]:
    return [
        line.removeprefix("# expect: ")
        for line in case.read_text().splitlines()
        if line.startswith("# expect: ")
    ]


def _matches(got: str, expected: str) -> bool:
    return got.startswith(expected[:-3]) if expected.endswith(" ...") else got == expected


def test_there_are_cases() -> None:
    assert len(CASES) >= 20
    assert all(_expected(case) for case in CASES), "every case states what it expects"


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_config_case_reports_exactly_its_problems(case: Path) -> None:
    expected = _expected(case)
    with pytest.raises(ConfigError) as info:
        load_config(case, {})
    problems = info.value.problems
    assert len(problems) == len(expected), problems
    assert all(_matches(got, want) for got, want in zip(problems, expected, strict=True)), problems
    assert info.value.source == str(case)
    assert str(info.value).startswith(f"{case}: {len(expected)} configuration error(s):\n  ")


def test_the_embedded_default_loads_and_creates_providers_on_demand() -> None:
    config = load_config(None, {})
    assert config.source == "<embedded default>"
    assert config.server.create_providers is True
    assert config.server.max_providers == 1000
    assert config.providers == {}
    assert config.default_limits == (LimitConfig(unit="requests", count=10.0, period=1.0, burst=10.0),)
    made = config.provider_for("anything")
    assert made.name == "anything"
    assert made.limits == config.default_limits
    assert made.buckets == ("default",)


def test_ratelimitd_config_names_the_file_and_the_flag_wins(tmp_path: Path) -> None:
    from_env = tmp_path / "env.toml"
    from_env.write_text('[providers.env]\nrate = "1/s"\n')
    from_flag = tmp_path / "flag.toml"
    from_flag.write_text('[providers.flag]\nrate = "1/s"\n')
    assert set(load_config(None, {"RATELIMITD_CONFIG": str(from_env)}).providers) == {"env"}
    assert set(load_config(from_flag, {"RATELIMITD_CONFIG": str(from_env)}).providers) == {"flag"}
    # An empty variable counts as unset.
    assert load_config(None, {"RATELIMITD_CONFIG": ""}).source == "<embedded default>"


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, {})
    assert info.value.problems[0].startswith("cannot read: ")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(binary, {})


FULL = """
[server]
socket = "/run/x/ratelimitd.sock"
socket_mode = "0600"
max_line_bytes = 4096
max_providers = 20
max_connections = 10
max_waiters = 50
default_timeout = 5
max_timeout = 60
shutdown_timeout = 1.5
log_level = "debug"
create_providers = false

[http]
enabled = false
host = "127.0.0.2"
port = 0

[features]
learning = true

[defaults]
rate = "100/10s"

[providers.openai]
limits = [
  { unit = "requests", rate = "60/minute", burst = 5 },
  { unit = "tokens", count = 90000, period = "minute" },
]
buckets = ["k1", "k2"]
selection = "round_robin"

[providers.github]
rate = "5000/hour"
"""


def test_a_full_config_becomes_typed_sections() -> None:
    config = parse_config(_toml(FULL), {}, "full.toml")
    server = config.server
    assert server == ServerConfig(
        socket=Path("/run/x/ratelimitd.sock"),
        socket_mode=0o600,
        max_line_bytes=4096,
        max_providers=20,
        max_connections=10,
        max_waiters=50,
        default_timeout=5.0,
        max_timeout=60.0,
        shutdown_timeout=1.5,
        log_level="debug",
        create_providers=False,
    )
    assert (config.http.enabled, config.http.host, config.http.port) == (False, "127.0.0.2", 0)
    assert config.features.learning is True
    assert config.features.persist is False
    assert config.default_limits == (LimitConfig(unit="requests", count=100.0, period=10.0, burst=10.0),)
    openai = config.providers["openai"]
    assert openai.limits == (
        LimitConfig(unit="requests", count=60.0, period=60.0, burst=5.0),
        LimitConfig(unit="tokens", count=90000.0, period=60.0, burst=1500.0),
    )
    assert openai.limits[1].rate_per_second == 1500.0
    assert openai.buckets == ("k1", "k2")
    assert openai.selection == "round_robin"
    github = config.providers["github"]
    # Without a burst, one second's worth of permits (at least 1).
    assert github.limits == (LimitConfig(unit="requests", count=5000.0, period=3600.0, burst=2.0),)
    assert github.buckets == ("default",)
    assert github.selection == "failover"


def _toml(text: str) -> dict[str, object]:
    import tomllib

    return tomllib.loads(text)


@pytest.mark.parametrize(
    ("variable", "value", "section", "key", "expected"),
    [
        ("RATELIMITD_SOCKET", "/tmp/s.sock", "server", "socket", Path("/tmp/s.sock")),
        ("RATELIMITD_LOG_LEVEL", "warning", "server", "log_level", "warning"),
        ("RATELIMITD_MAX_PROVIDERS", "7", "server", "max_providers", 7),
        ("RATELIMITD_DEFAULT_TIMEOUT", "2.5", "server", "default_timeout", 2.5),
        ("RATELIMITD_HTTP_ENABLED", "off", "http", "enabled", False),
        ("RATELIMITD_HTTP_HOST", "::1", "http", "host", "::1"),
        ("RATELIMITD_HTTP_PORT", "9000", "http", "port", 9000),
        ("RATELIMITD_STATE_PATH", "/var/lib/x.json", "persist", "path", Path("/var/lib/x.json")),
        ("RATELIMITD_POLICY", "static", "learning", "policy", "static"),
    ],
)
def test_environment_variables_override_the_file(
    variable: str, value: str, section: str, key: str, expected: object
) -> None:
    document = _toml("[server]\nmax_providers = 99\nlog_level = 'error'\ndefault_timeout = 9\n")
    config = parse_config(document, {variable: value}, "f.toml")
    assert getattr(getattr(config, section), key) == expected


def test_without_environment_the_file_values_stay() -> None:
    config = parse_config(_toml("[server]\nmax_providers = 99\n"), {}, "f.toml")
    assert config.server.max_providers == 99


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RATELIMITD_MAX_PROVIDERS", "lots", "RATELIMITD_MAX_PROVIDERS: expected an integer, got 'lots'"),
        ("RATELIMITD_MAX_PROVIDERS", "0", "RATELIMITD_MAX_PROVIDERS: must be > 0, got 0"),
        ("RATELIMITD_HTTP_PORT", "70000", "RATELIMITD_HTTP_PORT: must be <= 65535, got 70000"),
        ("RATELIMITD_DEFAULT_TIMEOUT", "soon", "RATELIMITD_DEFAULT_TIMEOUT: expected a number, got 'soon'"),
        ("RATELIMITD_DEFAULT_TIMEOUT", "nan", "RATELIMITD_DEFAULT_TIMEOUT: must be >= 0, got nan"),
        ("RATELIMITD_HTTP_ENABLED", "maybe", "RATELIMITD_HTTP_ENABLED: expected true or false, got 'maybe'"),
        (
            "RATELIMITD_LOG_LEVEL",
            "loud",
            "RATELIMITD_LOG_LEVEL: expected one of debug, info, warning, error, got 'loud'",
        ),
        (
            "RATELIMITD_FEATURE_LEARNING",
            "maybe",
            "RATELIMITD_FEATURE_LEARNING: expected 1/true/yes/on or 0/false/no/off, got 'maybe'",
        ),
        (
            "RATELIMITD_FEATURE_PERSIST",
            "",
            "RATELIMITD_FEATURE_PERSIST: expected 1/true/yes/on or 0/false/no/off, got ''",
        ),
    ],
)
def test_a_bad_environment_value_names_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({}, {variable: value}, "<env>")
    assert info.value.problems == [message]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        (" yes ", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
    ],
)
def test_feature_gates_parse_once_from_the_environment(value: str, expected: bool) -> None:
    names = ("learning", "recovery", "pacing", "persist")
    environ = {f"RATELIMITD_FEATURE_{name.upper()}": value for name in names}
    features = parse_config({}, environ, "<env>").features
    assert features.as_dict() == dict.fromkeys(names, expected)


def test_the_environment_beats_the_file_for_feature_gates() -> None:
    document = _toml("[features]\nlearning = true\n")
    assert parse_config(document, {}, "f").features.learning is True
    assert parse_config(document, {"RATELIMITD_FEATURE_LEARNING": "0"}, "f").features.learning is False


def test_every_problem_is_reported_at_once() -> None:
    document = _toml(
        '[server]\nmax_providers = 0\n[providers.a]\nrate = "x"\n[providers."b c"]\nrate = "1/s"\n'
    )
    with pytest.raises(ConfigError) as info:
        parse_config(document, {"RATELIMITD_FEATURE_PACING": "perhaps"}, "f.toml")
    paths = [problem.split(":")[0] for problem in info.value.problems]
    assert paths == [
        "server.max_providers",
        "RATELIMITD_FEATURE_PACING",
        "providers.a.rate",
        "providers.b c",
    ]


def test_config_sections_are_frozen() -> None:
    config = Config()
    with pytest.raises(AttributeError):
        config.server.max_providers = 5  # type: ignore[misc]


def test_retry_after_scope_per_provider_defaults_to_auto() -> None:
    document = _toml(
        '[providers.a]\nrate = "5/s"\nretry_after_scope = "request"\n[providers.b]\nrate = "5/s"\n'
    )
    config = parse_config(document, {}, "f.toml")
    assert config.providers["a"].retry_after_scope == "request"
    assert config.providers["b"].retry_after_scope == "auto"
    assert config.provider_for("made-on-first-use").retry_after_scope == "auto"


@pytest.mark.parametrize(
    ("document", "environ", "where"),
    [
        ("[learning]\npolicy = 'seed'\n", {}, "learning.policy"),
        ("", {"RATELIMITD_POLICY": "seed"}, "RATELIMITD_POLICY"),
    ],
)
def test_the_old_policy_name_seed_means_streak_with_a_note(
    document: str, environ: dict[str, str], where: str
) -> None:
    config = parse_config(_toml(document), environ, "f.toml")
    assert config.learning.policy == "streak"
    assert config.notes == (
        f"{where}: 'seed' is the old name of 'streak'; it still works, but write 'streak'",
    )


def test_the_streak_policy_has_no_note() -> None:
    config = parse_config(_toml("[learning]\npolicy = 'streak'\n"), {}, "f.toml")
    assert (config.learning.policy, config.notes) == ("streak", ())

"""A real Prometheus scrapes a real daemon; every dashboard and alert expression returns data.

Starts `ratelimitd serve` (HTTP on a free loopback port), drives traffic over its
Unix socket (grants, timeouts, waits, 2xx/3xx/4xx/429/5xx/network_error reports,
protocol errors), starts Debian's `prometheus` scraping it every second with
dashboards/alerts.yml loaded, waits (bounded) for scrapes, then queries every
PromQL expression of the dashboard (template variables substituted) and of the
alert rules through /api/v1/query. Also `promtool check rules`, `promtool test
rules`, and `promtool check metrics` on a real scrape. Needs `prometheus` and
`promtool` (Debian package `prometheus`; `make deps` installs it): a missing tool
fails the test, it is never skipped.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import support
from support import NdjsonClient

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from daemons import DaemonFactory

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
BOUND = 30.0  # seconds: the most any wait below may take; never reached when things work

CONFIG = """
[server]
socket = "{socket}"
max_providers = 10
log_level = "info"

[features]
learning = true
recovery = true
pacing = true
persist = true

[persist]
path = "{state}"
save_interval = 0.5

[providers.openai]
buckets = ["key1", "key2"]
selection = "failover"
limits = [
  {{ unit = "requests", rate = "40/second", burst = 4 }},
  {{ unit = "tokens", rate = "1000/second", burst = 1000 }},
]

[providers.github]
rate = "20/second"
burst = 2

[providers.floor]
rate = "100/second"
burst = 100

[providers.keys]
rate = "10/second"
burst = 10
buckets = ["revoked", "spent"]
"""
RUNBOOK_BASE = "https://runbooks.example.test/ratelimitd"


def tool(name: str) -> str:
    """The path of a Prometheus tool; fails (never skips) when it is not installed."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: install the Debian package `prometheus` "
            "(`make deps` does it, or `apt-get install prometheus`)"
        )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(what: str, check: Callable[[], bool], diagnostics: Callable[[], str] = lambda: "") -> None:
    """Poll `check` (an external process's state) until true, at most BOUND seconds."""
    support.wait_for(check, timeout=BOUND, interval=0.1, what=what, diagnostics=diagnostics)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@dataclass
class Stack:
    daemon_port: int
    prometheus_url: str
    socket_path: Path
    log: Path
    traffic_done: float = 0.0

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.daemon_port}"

    def query(self, expr: str, at: float | None = None) -> dict[str, Any]:
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode(params)
        try:
            answer: dict[str, Any] = get_json(url)
        except urllib.error.HTTPError as exc:  # 400 with Prometheus's error for a bad expression
            answer = json.loads(exc.read())
        return answer

    def vector(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        answer = self.query(expr, at)
        assert answer["status"] == "success", f"{expr}\n{answer}"
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def scrapes(self) -> int:
        result = self.vector('count_over_time(up{job="ratelimitd"}[10m])')
        return int(float(result[0]["value"][1])) if result else 0


def drive_traffic(client: NdjsonClient) -> None:
    """Every kind of event the dashboard and the alerts look at (no waits but one short one)."""
    # More than both buckets' bursts: grants on key1 and key2, then all_buckets_exhausted.
    answers = [client.request("acquire", provider="openai", timeout=0) for _ in range(10)]
    assert {a.get("bucket") for a in answers} >= {"key1", "key2"}
    assert any(a.get("error") == "all_buckets_exhausted" for a in answers)
    assert client.request("acquire", provider="openai", timeout=5)["ok"] is True  # waits for a permit
    # One bucket, burst 2: grants, then timeouts.
    answers = [client.request("acquire", provider="github", timeout=0) for _ in range(4)]
    assert any(a.get("ok") for a in answers)
    assert any(a.get("error") == "timeout" for a in answers)
    too_big = client.request("acquire", provider="openai", cost={"tokens": 5000})
    assert too_big["error"] == "cost_too_large"
    for status in (200, 200, 301, 404, 500, "network_error"):
        assert client.request("report", provider="openai", bucket="key1", status=status)["ok"] is True
    for _ in range(4):
        report = client.request(
            "report", provider="openai", bucket="key2", status=429, headers={"Retry-After": "1"}
        )
        assert report["ok"] is True
    assert client.request("report", provider="github", status=200)["ok"] is True
    # Rounds of 429s down to the rate floor; a revoked key; a spent quota.
    for _ in range(12):
        permit = client.request("acquire", provider="floor", timeout=0)["permit"]
        client.request("report", provider="floor", status=429, permit=permit)
    client.request("report", provider="keys", bucket="revoked", status=401)
    client.request("report", provider="keys", bucket="spent", status=429, reason="insufficient_quota")
    client.send_raw(b"{not json\n")
    assert client.read_response()["error"] == "invalid_json"
    assert client.request("frobnicate")["error"] == "unknown_op"


@pytest.fixture(scope="module")
def stack(module_daemon_factory: DaemonFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = tool("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    # The socket comes from the config file (no --socket flag), in the launcher's short directory.
    socket_path = module_daemon_factory.socket_dir / "ratelimitd.sock"
    config = CONFIG.format(socket=socket_path, state=tmp / "state.json")
    daemon = module_daemon_factory(config, socket_path=socket_path, socket_flag=False, http=True)
    daemon_port = daemon.http_port
    log = daemon.log_path
    processes: list[subprocess.Popen[bytes]] = []
    try:
        wait_for("/readyz", lambda: get_json(f"http://127.0.0.1:{daemon_port}/readyz")["ready"], daemon.log)

        client = NdjsonClient.connect(socket_path, timeout=10)
        drive_traffic(client)

        prometheus_port = free_port()
        (tmp / "prometheus.yml").write_text(
            json.dumps(  # JSON is YAML
                {
                    "global": {
                        "scrape_interval": "1s",
                        "evaluation_interval": "1s",
                        "external_labels": {"runbook_base": RUNBOOK_BASE},
                    },
                    "rule_files": [str(DASHBOARDS / "alerts.yml")],
                    "scrape_configs": [
                        {
                            "job_name": "ratelimitd",
                            "static_configs": [{"targets": [f"127.0.0.1:{daemon_port}"]}],
                        }
                    ],
                }
            )
        )
        prometheus_log = tmp / "prometheus.log"
        with prometheus_log.open("wb") as out:
            processes.append(
                subprocess.Popen(
                    [
                        prometheus,
                        f"--config.file={tmp / 'prometheus.yml'}",
                        f"--storage.tsdb.path={tmp / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{prometheus_port}",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                )
            )
        running = Stack(daemon_port, f"http://127.0.0.1:{prometheus_port}", socket_path, log)

        def prometheus_ready() -> bool:
            assert processes[-1].poll() is None, f"prometheus exited:\n{prometheus_log.read_text()}"
            with contextlib.suppress(OSError, ValueError):  # still starting: not JSON yet
                return running.scrapes() >= 1
            return False

        wait_for("a first scrape", prometheus_ready, prometheus_log.read_text)
        # Traffic between scrapes, so rate() and increase() see counters move.
        drive_traffic(client)
        client.close()
        # A reload that fails: reported, and the daemon stays ready.
        daemon.reload(config.replace("burst = 2", "burts = 2"), outcome="reload failed")
        seen = running.scrapes()
        wait_for("two more scrapes", lambda: running.scrapes() >= seen + 2, prometheus_log.read_text)
        running.traffic_done = time.time()  # recovery climbs later: alerts are judged here
        yield running
    finally:
        for process in reversed(processes):
            stop(process)


# -- expressions ------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DASHBOARDS / "ratelimitd.json").read_text())
    return loaded


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expression) for every target of every panel."""
    found = []
    for panel in dashboard()["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            found += [(inner["title"], target["expr"]) for target in inner.get("targets", [])]
    return found


def alert_rules() -> list[tuple[str, str]]:
    """(alert name, expression) from alerts.yml, read with promtool's own parser's view."""
    text = (DASHBOARDS / "alerts.yml").read_text()
    rules = []
    for block in re.split(r"\n\s*- alert: ", text)[1:]:
        name, rest = block.split("\n", 1)
        expr_match = re.search(r"expr: (\|\n)?(.*?)\n\s+for:", rest, re.DOTALL)
        assert expr_match, name
        expr = " ".join(line.strip() for line in expr_match.group(2).splitlines())
        rules.append((name.strip(), expr))
    return rules


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace Grafana variables (`$name`, `${name}`) the way Grafana does before querying."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"no value for ${name} in {expr}"
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def alert_signal(expr: str) -> str:
    """The left side of the expression's last top-level comparison (what the threshold tests)."""
    depth, quote, cut = 0, "", None
    i = 0
    while i < len(expr):
        char = expr[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = ""
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            for op in ("==", "!=", ">=", "<=", ">", "<"):
                if expr.startswith(op, i):
                    cut = i
                    i += len(op) - 1
                    break
        i += 1
    assert cut is not None, f"no threshold in {expr}"
    return expr[:cut].strip()


def grafana_values(stack: Stack, *, all_selected: bool) -> dict[str, str]:
    values = {"__rate_interval": "30s", "__interval": "15s", "__range": "5m"}
    if all_selected:  # "All" with allValue ".*"
        return {**values, "instance": ".*", "provider": ".*", "bucket": ".*"}
    # Grafana escapes regex metacharacters with a backslash that is itself escaped in PromQL.
    instance = re.escape(stack.instance).replace("\\", "\\\\")
    return {**values, "instance": instance, "provider": "openai", "bucket": "key2"}


def test_expression_helpers() -> None:
    assert alert_signal('sum(rate(x{a="b>c"}[5m])) / sum(y) > 0.1') == 'sum(rate(x{a="b>c"}[5m])) / sum(y)'
    assert alert_signal('up{job="ratelimitd"} == 0') == 'up{job="ratelimitd"}'
    assert substitute(
        'a{p=~"$provider"}[$__rate_interval] ${x}', {"provider": "o", "__rate_interval": "1m", "x": "y"}
    ) == ('a{p=~"o"}[1m] y')
    assert len(alert_rules()) == 9
    assert len(dashboard_exprs()) >= 25


@pytest.mark.timeout(120)
@pytest.mark.parametrize("all_selected", [False, True], ids=["one-provider", "all"])
def test_every_dashboard_expression_returns_data(stack: Stack, all_selected: bool) -> None:
    values = grafana_values(stack, all_selected=all_selected)
    empty = []
    for title, expr in dashboard_exprs():
        query = substitute(expr, values)
        answer = stack.query(query)
        assert answer["status"] == "success", f"{title}: {query}\n{answer}"
        if not answer["data"]["result"]:
            empty.append(f"{title}: {query}")
    assert not empty, "expressions without data:\n" + "\n".join(empty)


@pytest.mark.timeout(120)
def test_dashboard_shows_the_traffic(stack: Stack) -> None:
    """Beyond 'has data': the numbers reflect what drive_traffic did."""
    granted = stack.vector(
        'sum by (provider) (increase(ratelimitd_permits_granted_total{provider="openai"}[5m]))'
    )
    assert float(granted[0]["value"][1]) > 0
    ratio = stack.vector(
        'sum(rate(ratelimitd_reports_total{provider="openai", status_class="429"}[5m]))'
        ' / sum(rate(ratelimitd_reports_total{provider="openai"}[5m]))'
    )
    assert 0 < float(ratio[0]["value"][1]) < 1
    busy = stack.vector('ratelimitd_acquires_total{provider="github", outcome="busy"}')
    assert float(busy[0]["value"][1]) >= 2  # try-acquires without a permit: at least one per drive_traffic
    refused = stack.vector('ratelimitd_acquires_total{provider="openai", outcome="error"}')
    assert float(refused[0]["value"][1]) >= 4  # cost_too_large and all_buckets_exhausted, twice
    waited = stack.vector('ratelimitd_acquire_wait_seconds_bucket{provider="openai", le="0.0001"}')
    total = stack.vector('ratelimitd_acquire_wait_seconds_count{provider="openai"}')
    assert float(waited[0]["value"][1]) < float(total[0]["value"][1])  # one acquire waited
    errors = stack.vector('ratelimitd_protocol_errors_total{code="invalid_json"}')
    assert float(errors[0]["value"][1]) == 2
    gates = stack.vector("ratelimitd_feature_enabled")
    assert {g["metric"]["feature"]: g["value"][1] for g in gates} == {
        "learning": "1",
        "recovery": "1",
        "pacing": "1",
        "persist": "1",
    }
    assert stack.vector("ratelimitd_ready")[0]["value"][1] == "1"


@pytest.mark.timeout(120)
def test_template_variables_find_providers_and_buckets(stack: Stack) -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    values = grafana_values(stack, all_selected=False)
    expected = {
        "instance": {stack.instance},
        "provider": {"openai", "github", "floor", "keys"},
        "bucket": {"key1", "key2"},
    }
    for name, want in expected.items():
        query = substitute(variables[name]["query"]["query"], values)
        match = re.fullmatch(r"label_values\((.*), (\w+)\)", query)
        assert match, query
        selector, label = match.groups()
        url = f"{stack.prometheus_url}/api/v1/label/{label}/values?" + urllib.parse.urlencode(
            {"match[]": selector}
        )
        assert set(get_json(url)["data"]) == want, query


@pytest.mark.timeout(120)
def test_every_alert_expression_parses_and_its_signal_returns_data(stack: Stack) -> None:
    for name, expr in alert_rules():
        answer = stack.query(expr)
        assert answer["status"] == "success", f"{name}: {expr}\n{answer}"
        signal = alert_signal(expr)
        assert stack.vector(signal), f"{name}: no data for {signal}"


def alert_expr(name: str) -> str:
    return dict(alert_rules())[name]


@pytest.mark.timeout(120)
def test_the_alert_expressions_find_what_the_traffic_did(stack: Stack) -> None:
    """Each alert's whole expression, on the real Prometheus, at the end of the traffic."""

    def found(name: str) -> set[tuple[str, ...]]:
        rows = stack.vector(alert_expr(name), at=stack.traffic_done)
        return {tuple(row["metric"].get(k, "") for k in ("provider", "bucket")) for row in rows}

    assert found("RatelimitdKeyDisabled") == {("keys", "revoked")}
    assert found("RatelimitdQuotaExhausted") == {("keys", "spent")}
    assert found("RatelimitdRateAtFloor") == {("floor", "default")}
    assert found("RatelimitdReloadFailed") == {("", "")}
    assert found("RatelimitdNotReady") == set()  # a failed reload leaves the daemon ready
    # Try-acquires on github found no permit: asked, not waited for; not counted against it.
    rows = stack.vector(alert_signal(alert_expr("RatelimitdAcquireTimeoutsRising")), at=stack.traffic_done)
    github = [float(r["value"][1]) for r in rows if r["metric"]["provider"] == "github"]
    assert github == [0.0]
    reasons = stack.vector(
        'sum by (provider, direction, reason) (ratelimitd_rate_changes_total{provider="floor"}) > 0',
        at=stack.traffic_done,
    )
    # Cut by 429s (and maybe climbing back between the two rounds of traffic): nothing else.
    changes = {(r["metric"]["direction"], r["metric"]["reason"]) for r in reasons}
    assert ("down", "429s") in changes
    assert changes <= {("down", "429s"), ("up", "recovery")}


@pytest.mark.timeout(120)
def test_runbook_links_are_absolute_from_the_configured_base(stack: Stack) -> None:
    def active() -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = get_json(f"{stack.prometheus_url}/api/v1/alerts")["data"]["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == "RatelimitdKeyDisabled"]

    wait_for("RatelimitdKeyDisabled pending or firing", lambda: bool(active()))
    (alert,) = active()
    assert alert["annotations"]["runbook_url"] == f"{RUNBOOK_BASE}#ratelimitdkeydisabled"


@pytest.mark.timeout(120)
def test_prometheus_evaluates_the_rules_without_error(stack: Stack) -> None:
    def evaluated() -> bool:
        groups = get_json(f"{stack.prometheus_url}/api/v1/rules")["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return len(rules) == 9 and all(rule["lastEvaluation"] > "2000" for rule in rules)

    wait_for("the rules to be evaluated", evaluated)
    groups = get_json(f"{stack.prometheus_url}/api/v1/rules")["data"]["groups"]
    health = {
        rule["name"]: (rule["health"], rule.get("lastError", "")) for g in groups for rule in g["rules"]
    }
    assert health == {name: ("ok", "") for name, _ in alert_rules()}


@pytest.mark.timeout(120)
def test_promtool_checks_a_real_scrape(stack: Stack) -> None:
    with urllib.request.urlopen(f"http://{stack.instance}/metrics", timeout=10) as response:
        scrape = response.read()
    assert b"ratelimitd_acquire_wait_seconds_bucket" in scrape
    checked = subprocess.run(
        [tool("promtool"), "check", "metrics"], input=scrape, capture_output=True, timeout=30, check=False
    )
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    assert checked.stdout.decode().strip() == ""


def test_promtool_checks_and_tests_the_rules() -> None:
    promtool = tool("promtool")
    checked = subprocess.run(
        [promtool, "check", "rules", str(DASHBOARDS / "alerts.yml")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 9 rules found" in checked.stdout
    tested = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"],
        cwd=DASHBOARDS,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@pytest.mark.timeout(120)
def test_prometheus_sees_a_stopping_daemon_unready(daemon_factory: DaemonFactory, tmp_path: Path) -> None:
    """A stop shows as ratelimitd_ready 0 in Prometheus, not only as a target that vanished."""
    daemon = daemon_factory("[server]\nshutdown_timeout = 3.0\n", http=True)
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "500ms"},
                "scrape_configs": [
                    {
                        "job_name": "ratelimitd",
                        "static_configs": [{"targets": [f"127.0.0.1:{daemon.http_port}"]}],
                    }
                ],
            }
        )
    )
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        prometheus = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    url = f"http://127.0.0.1:{port}/api/v1/query?"

    def value(expr: str) -> float | None:
        with contextlib.suppress(OSError, ValueError):
            result = get_json(url + urllib.parse.urlencode({"query": expr}))["data"]["result"]
            return float(result[0]["value"][1]) if result else None
        return None

    try:
        wait_for(
            "three scrapes", lambda: (value("count_over_time(ratelimitd_ready[1m])") or 0) >= 3, log.read_text
        )
        assert value("min_over_time(ratelimitd_ready[1m])") == 1
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait_exit(timeout=10) == 0
        wait_for("up == 0", lambda: value('up{job="ratelimitd"}') == 0, log.read_text)
        assert value("min_over_time(ratelimitd_ready[1m])") == 0
    finally:
        stop(prometheus)

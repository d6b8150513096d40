"""The unit files as systemd's own tools see them, the installer, and the examples.

Runs the real `systemd-analyze` (Debian package `systemd`, installed by `make deps`);
a missing tool fails the test instead of skipping it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ratelimitd.core.errors import ConfigError
from ratelimitd.daemon.config import load_config
from ratelimitd.ops.install import SOURCE_DIR, install_systemd

#: The exposure `systemd-analyze security` must not exceed.
MAX_EXPOSURE = 2.0
BIN_PATH = str(Path(sys.executable).parent / "ratelimitd")


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: run `make deps` (Debian package systemd)")
    return found


def _run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, cwd=cwd)


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    """The units as `install-systemd` writes them, ExecStart= pointing at the venv binary."""
    install_systemd(tmp_path, bin_path=BIN_PATH)
    return tmp_path / "etc" / "systemd" / "system"


def _verify(*units: Path) -> subprocess.CompletedProcess[str]:
    # --man=no: Documentation= is a file:// URL, not a man page. verify needs no
    # running systemd (the container has none as PID 1); it loads units offline.
    analyze = _tool("systemd-analyze")
    return _run(analyze, "verify", "--man=no", "--generators=no", *map(str, units), cwd=units[0].parent)


def test_both_units_verify_without_a_single_warning(unit_dir: Path) -> None:
    result = _verify(unit_dir / "ratelimitd.service", unit_dir / "ratelimitd.socket")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == ""


def test_verify_would_catch_a_misspelled_directive(unit_dir: Path) -> None:
    # Negative control: verify reports unknown keys on stderr (with exit code 0),
    # which is why the test above insists on an empty stderr.
    service = unit_dir / "ratelimitd.service"
    service.write_text(service.read_text().replace("NoNewPrivileges=", "NoNewPrivilegs="))
    result = _verify(service)
    assert "Unknown key 'NoNewPrivilegs'" in result.stderr


def test_verify_checks_the_executable(unit_dir: Path) -> None:
    service = unit_dir / "ratelimitd.service"
    service.write_text(service.read_text().replace(BIN_PATH, "/nonexistent/ratelimitd"))
    result = _verify(service)
    assert result.returncode != 0
    assert "/nonexistent/ratelimitd" in result.stderr


def _exposure(service: Path) -> tuple[float, str]:
    analyze = _tool("systemd-analyze")
    # --threshold makes the tool itself fail above the limit (its scale is 0-100).
    result = _run(
        analyze,
        "security",
        "--offline=true",
        f"--threshold={round(MAX_EXPOSURE * 10)}",
        "--no-pager",
        str(service),
        cwd=service.parent,
    )
    match = re.search(r"Overall exposure level for ratelimitd\.service: (\d+\.\d+)", result.stdout)
    assert match is not None, result.stdout + result.stderr
    return float(match.group(1)), result.stdout + f"\nexit code {result.returncode}"


def test_exposure_is_at_most_two(unit_dir: Path) -> None:
    exposure, report = _exposure(unit_dir / "ratelimitd.service")
    assert exposure <= MAX_EXPOSURE, report
    assert report.endswith("exit code 0"), report


def test_exposure_measures_the_hardening(unit_dir: Path) -> None:
    # The figure responds to the unit: without its hardening lines it is far worse.
    service = unit_dir / "ratelimitd.service"
    hardened, _ = _exposure(service)
    text = service.read_text()
    start = text.index("# Hardening")
    end = text.index("[Install]")
    service.write_text(text[:start] + text[end:])
    bare, report = _exposure(service)
    assert bare > hardened + 5, report
    assert not report.endswith("exit code 0"), report


def test_units_carry_what_issue_5_asks(unit_dir: Path) -> None:
    service = (unit_dir / "ratelimitd.service").read_text()
    socket_unit = (unit_dir / "ratelimitd.socket").read_text()
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "RuntimeDirectory=ratelimitd",
        "StateDirectory=ratelimitd",
        "ConfigurationDirectory=ratelimitd",
        "EnvironmentFile=-/etc/default/ratelimitd",
        f"ExecStart={BIN_PATH} serve --config /etc/ratelimitd/config.toml",
        "CapabilityBoundingSet=",
        "MemoryDenyWriteExecute=yes",
        "SystemCallFilter=@system-service",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    ):
        assert line in service.splitlines(), line
    assert re.search(r"^WatchdogSec=\d+s$", service, re.MULTILINE)
    for line in (
        "ListenStream=/run/ratelimitd/ratelimitd.sock",
        "SocketGroup=ratelimitd",
        "SocketMode=0660",
    ):
        assert line in socket_unit.splitlines(), line


def test_reinstall_keeps_the_admins_files(tmp_path: Path) -> None:
    first = install_systemd(tmp_path, bin_path=BIN_PATH)
    config = tmp_path / "etc" / "ratelimitd" / "config.toml"
    environment = tmp_path / "etc" / "default" / "ratelimitd"
    assert config in first
    assert environment in first
    config.write_text("# edited by the admin\n")
    second = install_systemd(tmp_path, bin_path="/opt/ratelimitd/bin/ratelimitd")
    assert config not in second
    assert environment not in second
    assert config.read_text() == "# edited by the admin\n"
    service = tmp_path / "etc" / "systemd" / "system" / "ratelimitd.service"
    assert service in second
    assert "ExecStart=/opt/ratelimitd/bin/ratelimitd serve" in service.read_text()
    assert "@BIN_PATH@" not in service.read_text()
    assert (tmp_path / "etc" / "sysusers.d" / "ratelimitd.conf").is_file()


@pytest.mark.parametrize("bin_path", ["ratelimitd", "/opt/my tools/ratelimitd"])
def test_install_refuses_a_bin_path_systemd_cannot_run(tmp_path: Path, bin_path: str) -> None:
    with pytest.raises(ValueError, match="bin_path: must be an absolute path"):
        install_systemd(tmp_path, bin_path=bin_path)
    assert list(tmp_path.iterdir()) == []


def test_cli_command_installs_under_a_prefix(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import argparse, sys\n"
            "from ratelimitd.ops.install import add_install_command\n"
            "parser = argparse.ArgumentParser()\n"
            "add_install_command(parser.add_subparsers())\n"
            "args = parser.parse_args(sys.argv[1:])\n"
            "raise SystemExit(args.func(args))\n",
            "install-systemd",
            "--prefix",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    service = tmp_path / "etc" / "systemd" / "system" / "ratelimitd.service"
    assert f"installed {service}" in result.stdout.splitlines()
    assert f"ExecStart={BIN_PATH} serve" in service.read_text()


def _example_environment() -> dict[str, str]:
    """Every variable of the env example, commented or not, with its example value."""
    environ: dict[str, str] = {}
    for line in (SOURCE_DIR / "ratelimitd.env.example").read_text().splitlines():
        match = re.fullmatch(r"#?(RATELIMITD_[A-Z_]+)=(.*)", line)
        if match:
            environ[match.group(1)] = match.group(2)
    return environ


def test_the_examples_load_together() -> None:
    environ = _example_environment()
    assert "RATELIMITD_FEATURE_LEARNING" in environ
    config = load_config(SOURCE_DIR / "config.toml.example", environ)
    assert config.features.learning
    assert config.features.persist
    assert config.http.host == "127.0.0.1"


def test_every_variable_in_the_env_example_is_read() -> None:
    # A variable the loader ignores would be a silent no-op for the admin: give each
    # one a wrong value and expect the loader to name it.
    for name in _example_environment():
        if name == "RATELIMITD_HTTP_HOST":  # any string is a host; checked above
            continue
        with pytest.raises(ConfigError) as raised:
            load_config(SOURCE_DIR / "config.toml.example", {name: "not-a-valid-value!"})
        assert name in str(raised.value), name


# MemoryDenyWriteExecute= can break C extensions that JIT (checked here). Linux >= 6.3
# offers the same rule per process, prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN), inherited
# across execve: run the real daemon (uvloop, orjson, aiohttp, prometheus-client) under it.
_UNDER_MDWE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(97)
os.execv(sys.argv[1], sys.argv[1:])
"""
_WX_MAPPING = """
import mmap
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    print("refused")
else:
    print("allowed")
"""


def _under_mdwe(*argv: str, **kwargs: object) -> subprocess.Popen[str]:
    skipped = ("LISTEN_", "WATCHDOG_", "NOTIFY_SOCKET", "RATELIMITD_")
    environ = {key: value for key, value in os.environ.items() if not key.startswith(skipped)}
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-c", _UNDER_MDWE, *argv], text=True, env=environ, **kwargs
    )


def test_the_daemon_runs_with_memory_deny_write_execute(tmp_path: Path) -> None:
    control = _under_mdwe(sys.executable, "-c", _WX_MAPPING, stdout=subprocess.PIPE)
    output, _ = control.communicate(timeout=60)
    if control.returncode == 97:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3): MDWE not checkable here")
    assert output.strip() == "refused"  # the rule is in force after execve

    socket_path = tmp_path / "mdwe.sock"
    daemon = _under_mdwe(
        BIN_PATH,
        "serve",
        "--http-port",
        "0",
        "--socket",
        str(socket_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert daemon.stderr is not None
        for line in daemon.stderr:
            if "serving on" in line:
                break
        else:
            pytest.fail(f"the daemon exited with {daemon.wait(timeout=10)} under MDWE")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(20)
            client.connect(str(socket_path))
            client.sendall(b'{"op":"acquire","provider":"mdwe","timeout":0}\n{"op":"status"}\n')
            replies = client.makefile("rb")
            assert json.loads(replies.readline())["ok"] is True
            assert "mdwe" in json.loads(replies.readline())["providers"]
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=10)
        if daemon.stderr is not None:
            daemon.stderr.close()


def test_process_metrics_stay_readable(unit_dir: Path) -> None:
    # ProcSubset=pid hides /proc/stat; prometheus-client's ProcessCollector needs its
    # btime line and exports nothing without it (measured; see docs/systemd.md).
    service = (unit_dir / "ratelimitd.service").read_text().splitlines()
    assert "ProcSubset=pid" not in service
    assert "ProtectProc=invisible" in service

"""The compiled hot path (`tools/compiled.py`): it builds, its modules load as C extensions,
and the daemon run from it passes the black-box suites the interpreted daemon passes.

The build takes ~25 s of CPU, once per session; the suites run in a child pytest whose
`ratelimitd` (in-process and in every daemon it starts) is the compiled copy.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import compiled  # noqa: E402  (tools/ is not a package)

pytestmark = pytest.mark.timeout(600)

# Suites that drive the daemon over its socket: bad input and hostile peers (stable error
# codes), failover, the client, paging status, the protocol fuzz test (in-process), and
# its metrics as Prometheus scrapes them; and the header plans against the general parser
# (compiled, counts are read another way).
SUITES = (
    "tests/unit/test_header_plans.py",
    "tests/integration/test_http.py",
    "tests/integration/test_prometheus.py",
    "tests/integration/test_bad_input.py",
    "tests/integration/test_hostile_neighbours.py",
    "tests/integration/test_authorization.py",
    "tests/integration/test_failover.py",
    "tests/integration/test_client.py",
    "tests/integration/test_status_at_scale.py",
    "tests/integration/test_protocol_fuzz.py",
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert not compiled.missing(), f"`make deps` installs these: {compiled.missing()}"
    target = tmp_path_factory.mktemp("compiled") / "tree"
    compiled.build(target)
    return target


def env_for(target: Path) -> dict[str, str]:
    # The compiled copy first; the repository after it for the tests' own imports.
    return {**os.environ, "PYTHONPATH": f"{target}{os.pathsep}{ROOT}"}


def test_every_listed_module_loads_compiled(built: Path, tmp_path: Path) -> None:
    names = [path.removesuffix(".py").replace("/", ".") for path in compiled.MODULES]
    script = f"import importlib; print('\\n'.join(importlib.import_module(n).__file__ for n in {names!r}))"
    # From another directory, as `python -m ratelimitd` runs in a daemon's working directory.
    found = subprocess.run(
        [sys.executable, "-c", script], env=env_for(built), cwd=tmp_path, capture_output=True, text=True
    )
    assert found.returncode == 0, found.stderr
    files = found.stdout.split()
    assert len(files) == len(names)
    for name, file in zip(names, files, strict=True):
        assert file.startswith(str(built)), (name, file)
        assert file.endswith(".so"), (name, file)


def test_the_compiled_daemon_passes_the_black_box_suites(built: Path) -> None:
    run = subprocess.run(
        [str(Path(sys.executable).parent / "pytest"), "-q", "-p", "no:cacheprovider", "-o", "pythonpath=",
         *SUITES],
        env=env_for(built), cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    tail = "\n".join(run.stdout.splitlines()[-15:])
    assert run.returncode == 0, tail + run.stderr[-2000:]
    assert " passed" in tail
    assert "skipped" not in tail, tail


def test_the_compiled_handler_answers_every_bench_shape(built: Path) -> None:
    # `make bench` measures the compiled copy in a child process: it must run, compiled.
    run = subprocess.run(
        [sys.executable, "-m", "bench.handler_cost", "--quick", "--compiled", str(built)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    interpreted, compiled_table = run.stdout.split("## ")[1:]
    assert "compiled" not in interpreted.splitlines()[0]
    assert compiled_table.splitlines()[0].endswith(", compiled")
    rows = compiled_table.strip().splitlines()[2:]
    assert len(rows) == 5
    assert all(row.split()[-1] == "0" for row in rows), rows  # no error or missing answer


def test_a_machine_without_the_toolchain_is_told_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler on it
    monkeypatch.setenv("CC", "no-such-compiler")
    assert any("C compiler" in item for item in compiled.missing())
    assert compiled.main([str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out").exists()

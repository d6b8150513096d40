"""`bench.raw_client --quick`, `bench.handler_cost --quick` and `bench.scale --quick` run end
to end (no timing asserts)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(module: str, *argv: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", module, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return re.split(r"^## ", done.stdout, flags=re.MULTILINE)[1:]


def test_every_shape_is_answered_ok_by_echo_and_both_daemons() -> None:
    table, verdicts = _run("bench.raw_client", "--quick", "--no-compiled")
    rows = table.strip().splitlines()[2:]
    servers = [re.split(r"\s{2,}", row)[1] for row in rows]
    assert servers == ["echo", "learning off", "learning on"] * 5
    for row in rows:
        assert row.split()[-1] == "0", f"error responses in {row!r}"
    lines = verdicts.strip().splitlines()[1:-1]  # the last one says how long it took
    assert len(lines) == 8  # four targets for each daemon
    assert [line.split(":")[0] for line in lines] == ["learning off"] * 4 + ["learning on"] * 4
    assert all(line.endswith((", met", ", NOT met")) for line in lines), lines


def test_handler_cost_answers_every_line_of_every_shape_ok() -> None:
    (table,) = _run("bench.handler_cost", "--quick", "--no-compiled")
    rows = table.strip().splitlines()[2:]
    assert len(rows) == 5
    for row in rows:
        assert row.split()[-1] == "0", f"error or missing answers in {row!r}"


def test_scale_bench_prints_status_scrape_and_memory() -> None:
    timing, memory, verdicts = _run("bench.scale", "--providers", "300")
    rows = [re.split(r"\s{2,}", row) for row in timing.strip().splitlines()[2:]]
    assert [row[0] for row in rows] == [
        "nothing (baseline)",
        "status",
        "status, history false",
        "status, limit 100",
        "/metrics scrape",
        "/metrics, gzip offered",
    ]
    sizes = {row[0]: int(row[-1].replace(",", "")) for row in rows}
    assert sizes["status"] > sizes["status, history false"] > sizes["status, limit 100"] > 0
    assert sizes["/metrics scrape"] > 0
    assert len(memory.strip().splitlines()) == 4
    assert all(
        line.endswith((", met", ", NOT met")) for line in verdicts.strip().splitlines()[2:] if "met" in line
    )

"""`bench.throughput --quick` runs end to end and prints its tables (no timing asserts)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_throughput_bench_prints_its_tables() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.throughput", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    sections = re.split(r"^## ", done.stdout, flags=re.MULTILINE)
    titles = [section.split(":")[0].split("\n")[0] for section in sections[1:]]
    assert titles == [
        "throughput",
        "server capacity",
        "daemon memory (VmRSS; metrics and HTTP on unless said)",
        "targets",
    ]

    clients = sections[1].strip().splitlines()[2:]
    assert [row.split()[0] for row in clients] == ["1", "16"]
    for row in clients:
        echo_rate, daemon_rate = (float(x.replace(",", "")) for x in row.split()[1:3])
        assert echo_rate > 0
        assert daemon_rate > 0

    capacity = sections[2].strip().splitlines()[2:]
    assert [row.split()[0] for row in capacity] == ["echo", "daemon", "daemon"]
    for row in capacity:
        assert row.split()[-1] == "0", f"error responses in {row!r}"

    memory = sections[3].strip().splitlines()[1:]
    assert len(memory) == 4
    assert all(row.endswith(" MB") for row in memory)

    verdicts = sections[4].strip().splitlines()[1:6]
    assert len(verdicts) == 5
    assert all(line.endswith((", met", ", NOT met")) for line in verdicts), verdicts

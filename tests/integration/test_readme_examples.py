"""The README's Python programs run as written against a real daemon, and its links are sound."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from daemons import DaemonLauncher

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
# Whole programs (the tour's); the other blocks are fragments whose imports test_docs_examples checks.
PROGRAMS = [
    block
    for block in BLOCK.findall(README.read_text())
    if "asyncio.run(" in block or "with Client()" in block
]


def test_the_readme_has_runnable_programs() -> None:
    assert len(PROGRAMS) >= 2


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.splitlines()[0])
def test_a_readme_program_runs_as_written(daemon_factory: DaemonLauncher, program: str) -> None:
    daemon = daemon_factory()
    env = {**os.environ, "RATELIMITD_SOCKET": str(daemon.socket_path)}
    run = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert run.returncode == 0, run.stderr
    assert re.search(
        r"called through bucket default; the daemon did: none|granted after 0\.\d{3} s", run.stdout
    )


def test_the_readme_links_each_document_once_and_each_exists() -> None:
    links = re.findall(r"^- \[(docs/[\w.-]+)\]", README.read_text(), re.M)
    assert links, "the documentation list was found"
    assert len(links) == len(set(links)), "a document is listed twice"
    for link in links:
        assert (README.parent / link).is_file(), link

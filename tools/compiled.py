"""Build the daemon's hot path compiled with mypyc: a copy of the package in which the
modules every request runs through are C extensions (docs/design.md, "Compiled").

    python tools/compiled.py [TARGET]        (default: build/compiled)

Run the daemon from the copy with `PYTHONPATH=TARGET python -m ratelimitd serve`
(`make run` does). The copy is whole: the modules not listed below stay Python, and
behave the same compiled or not (the test suite runs against both). Needs mypy (for
mypyc), a C compiler and Python's headers; exits 1 naming what is missing, and
leaves an earlier copy in place when a build fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

__all__ = ("MODULES", "build", "missing", "main")

ROOT = Path(__file__).resolve().parent.parent

# What every acquire and report runs through (bench/handler_cost.py). A module that an
# interpreted class subclasses must not be compiled alone: `lease` subclasses the limiter.
# Not the scrape (metrics_scrape.py): mypyc does not build async generators.
MODULES = (
    "ratelimitd/daemon/server.py",
    "ratelimitd/daemon/service.py",
    "ratelimitd/daemon/waiters.py",
    "ratelimitd/core/protocol.py",
    "ratelimitd/core/limiter.py",
    "ratelimitd/core/lease.py",
    "ratelimitd/core/settlement.py",
    "ratelimitd/core/providers.py",
    "ratelimitd/core/peers.py",
    "ratelimitd/core/rates.py",
    "ratelimitd/core/learning/learner.py",
    "ratelimitd/core/learning/adaptive.py",
    "ratelimitd/core/learning/delivery.py",
    "ratelimitd/core/learning/scope.py",
    "ratelimitd/core/learning/kinds.py",
    "ratelimitd/core/learning/types.py",
    "ratelimitd/core/headers/parse.py",
    "ratelimitd/core/headers/plan.py",
    "ratelimitd/core/headers/values.py",
    "ratelimitd/core/headers/families.py",
    "ratelimitd/daemon/metrics_hooks.py",
    "ratelimitd/ops/metrics.py",
)


def missing() -> list[str]:
    """What the build needs and this machine lacks (empty: it can build)."""
    lacking = []
    try:
        import mypyc  # noqa: F401  (only whether it is there)
    except ImportError:
        lacking.append("mypy (pip install mypy: it provides mypyc)")
    if not any(shutil.which(cc) for cc in (os.environ.get("CC", "cc"), "cc", "gcc", "clang")):
        lacking.append("a C compiler (Debian: apt-get install gcc)")
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        lacking.append("Python's headers (Debian: apt-get install python3-dev)")
    return lacking


def build(target: Path) -> None:
    """Compile into `target` (replaced only once the new copy is complete)."""
    staging = target.with_name(target.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(
        ROOT / "ratelimitd",
        staging / "ratelimitd",
        ignore=shutil.ignore_patterns("__pycache__", "*.so"),
    )
    built = subprocess.run(
        [sys.executable, "-m", "mypyc", *MODULES], cwd=staging, capture_output=True, text=True
    )
    if built.returncode != 0:
        # mypyc prints type errors on stdout, the compiler's on stderr; a line per C file else.
        lines = [line for line in (built.stdout + built.stderr).splitlines() if not line.startswith("gcc ")]
        print("\n".join(lines[-40:]), file=sys.stderr)
        shutil.rmtree(staging, ignore_errors=True)
        raise subprocess.CalledProcessError(built.returncode, built.args)
    shutil.rmtree(staging / "build")  # mypyc's C sources and objects: the .so files are in place
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0]) if args else ROOT / "build" / "compiled"
    lacking = missing()
    if lacking:
        print(f"cannot compile the hot path, missing: {'; '.join(lacking)}", file=sys.stderr)
        return 1
    try:
        build(target.resolve())
    except subprocess.CalledProcessError as exc:
        print(f"mypyc failed (exit {exc.returncode}): see above", file=sys.stderr)
        return 1
    print(f"compiled {len(MODULES)} modules into {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

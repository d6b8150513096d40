"""`make bench` / `python -m bench [--quick] [NAME ...]`: every benchmark, one after the other.

Each benchmark module has a `main()` that prints its own table. A module that is
not there (yet) is skipped and said so; one that fails is reported and the run
goes on, with a non-zero exit at the end.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import time
import traceback
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Sequence

# (module, argv for a full run, argv for --quick); a `main(quick: bool)` gets the flag instead.
BENCHMARKS: Final[tuple[tuple[str, list[str], list[str]], ...]] = (
    ("bench.throughput", [], ["--quick"]),
    ("bench.raw_client", [], ["--quick"]),
    ("bench.handler_cost", [], ["--quick"]),
    ("bench.scale", [], ["--quick"]),
    ("bench.limiter_core", [], ["--quick"]),
    ("bench.metrics_overhead", [], ["--rounds", "1", "--acquires", "20000"]),
    ("bench.learning", [], ["--quick"]),
    ("bench.structured_fields", [], ["--quick"]),
    ("bench.header_parsing", [], ["--quick"]),
    ("bench.integrations", [], ["--quick"]),
    ("bench.redis_backend", [], ["--quick"]),
    ("bench.redis_learning", [], ["--quick"]),
    ("bench.redis_round_trip", [], ["--seconds", "3"]),
    ("bench.hostile", [], ["--quick"]),
    ("bench.soak", [], ["--quick"]),
)


def _call(module_name: str, argv: list[str], quick: bool) -> object:
    module = importlib.import_module(module_name)
    main = module.main
    parameters = list(inspect.signature(main).parameters)
    if parameters and parameters[0] == "quick":
        return main(quick=quick)
    return main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a fast smoke run of each")
    parser.add_argument("names", nargs="*", help="only these (e.g. throughput learning)")
    args = parser.parse_args(argv)
    failed: list[str] = []
    for module_name, full, quick in BENCHMARKS:
        short = module_name.removeprefix("bench.")
        if args.names and short not in args.names:
            continue
        print(f"\n# {module_name}", flush=True)
        if importlib.util.find_spec(module_name) is None:
            print("(not present: skipped)")
            continue
        started = time.perf_counter()
        try:
            result = _call(module_name, quick if args.quick else full, args.quick)
        except SystemExit as exc:
            result = exc.code
        except Exception:
            traceback.print_exc()
            result = 1
        if result not in (None, 0):
            failed.append(short)
        print(f"({short}: {time.perf_counter() - started:.0f} s)", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

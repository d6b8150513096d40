"""Run Python as another user: `python as_user.py UID GID (-c CODE | -m MODULE) [ARGS...]`.

Started as root, it imports ratelimitd (every module) and what it uses, then drops to
UID/GID with no supplementary groups (or the comma-separated GROUPS in $AS_USER_GROUPS)
and runs the code. Imported first because the interpreter may live where other users
cannot read (e.g. under /root/.pyenv): after the switch only modules already loaded work.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
import runpy
import sys

# Not needed by a daemon without HTTP nor by the clients, and slow to import (0.5 s of CPU).
_SKIPPED = (
    "ratelimitd.integrations",
    "ratelimitd.backends.redis",
    "ratelimitd.ops.http",
    "ratelimitd.ops.metrics",
)


def _preload() -> None:
    import ratelimitd

    for module in pkgutil.walk_packages(ratelimitd.__path__, "ratelimitd."):
        if module.name.endswith("__main__") or module.name.startswith(_SKIPPED):
            continue
        if module.ispkg or module.name.count(".") > 1:  # the public faces import integrations
            with contextlib.suppress(Exception):  # an optional part without its library
                importlib.import_module(module.name)
    for name in ("uvloop", "json", "socket", "struct", "asyncio.unix_events", "tomllib", "runpy"):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    from importlib import resources

    resources.files("ratelimitd").joinpath("default_config.toml").read_text("utf-8")


def main() -> None:
    uid, gid, mode, target, *rest = sys.argv[1:]
    _preload()
    groups = [int(g) for g in os.environ.pop("AS_USER_GROUPS", "").split(",") if g]
    os.setgroups(groups)
    os.setgid(int(gid))
    os.setuid(int(uid))
    if mode == "-c":
        sys.argv = ["-c", *rest]
        exec(compile(target, "<as_user>", "exec"), {"__name__": "__main__"})
    else:
        sys.argv = [target, *rest]
        runpy.run_module(target, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

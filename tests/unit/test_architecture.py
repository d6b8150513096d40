"""The pure core stays pure: no event loop, sockets, environment, clocks or shell modules.

Checked by parsing imports with `ast` (anyio's test_all_attributes.py in spirit). Imports under
`if TYPE_CHECKING:` are for annotations only and never run, so they are allowed. A ratelimitd
module that a pure module imports at run time is held to the same rules (transitively).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ratelimitd

PACKAGE = Path(ratelimitd.__file__).parent
PURE = (
    "limiter", "rates", "protocol", "errors", "providers", "selection", "stats", "headers",
    "header_values", "structured_fields", "profiles", "history", "statefile", "readiness",
    "config_fields", "retry_steps",
)  # fmt: skip
PURE_GLOBS = ("learning*.py",)
FORBIDDEN_STDLIB = {
    "asyncio",
    "aiohttp",
    "socket",
    "os",
    "time",
    "subprocess",
    "signal",
    "threading",
    "shutil",
}
SHELL = {
    "clock",
    "config",
    "waiters",
    "service",
    "server",
    "http",
    "metrics",
    "persist",
    "statefile",
    "learned_state",
    "systemd",
    "daemon",
    "client",
    "client_sync",
    "cli",
    "cli_client",
    "paths",
    "logs",
    "install",
}
CLOCK_CALLS = {("datetime", "now"), ("datetime", "utcnow"), ("date", "today"), ("datetime", "today")}


def _pure_modules() -> list[str]:
    names = set(PURE)
    for pattern in PURE_GLOBS:
        names.update(path.stem for path in PACKAGE.glob(pattern))
    return sorted(names)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.Module) -> list[ast.AST]:
    """Every node except those inside `if TYPE_CHECKING:` bodies."""
    found: list[ast.AST] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        found.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
                continue
            stack.append(child)
    return found


def _imports(module: str) -> list[str]:
    """Dotted names a module imports at run time (relative imports resolved)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(), filename=f"{module}.py")
    names: list[str] = []
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "ratelimitd" if node.level else ""
            target = ".".join(part for part in (base, node.module or "") if part)
            names.append(target)
            if target == "ratelimitd":  # `from ratelimitd import x` may import a submodule
                names.extend(f"ratelimitd.{alias.name}" for alias in node.names)
    return names


def _clock_calls(module: str) -> list[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    return [
        f"{node.value.id}.{node.attr}"
        for node in _runtime_nodes(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and (node.value.id, node.attr) in CLOCK_CALLS
    ]


def _closure() -> dict[str, list[str]]:
    """Pure modules and every ratelimitd module they import at run time -> their imports."""
    seen: dict[str, list[str]] = {}
    todo = _pure_modules()
    while todo:
        module = todo.pop()
        if module in seen or not (PACKAGE / f"{module}.py").exists():
            continue
        seen[module] = _imports(module)
        for name in seen[module]:
            if name.startswith("ratelimitd."):
                todo.append(name.split(".")[1])
    return seen


def test_the_pure_modules_exist() -> None:
    for module in _pure_modules():
        assert (PACKAGE / f"{module}.py").exists(), module
    assert "learning" in _pure_modules()


@pytest.mark.parametrize("module", sorted(_closure()))
def test_pure_module_imports_no_io_no_clock_no_shell(module: str) -> None:
    def forbidden(name: str) -> bool:
        parts = name.split(".")
        return parts[0] in FORBIDDEN_STDLIB or (
            parts[0] == "ratelimitd" and len(parts) > 1 and parts[1] in SHELL
        )

    bad = [name for name in _imports(module) if forbidden(name)]
    assert bad == [], f"ratelimitd/{module}.py imports {bad} at run time"
    assert _clock_calls(module) == [], f"ratelimitd/{module}.py reads the clock"


def test_the_checker_sees_what_it_must() -> None:
    # The shell modules do import what the pure ones must not: the parser is not blind.
    assert "asyncio" in _imports("server")
    assert "time" in _imports("clock")
    assert "ratelimitd.waiters" in _imports("service")
    # TYPE_CHECKING-only imports are skipped: providers names config for annotations only.
    source = (PACKAGE / "providers.py").read_text()
    assert "from ratelimitd.config import" in source
    assert "ratelimitd.config" not in _imports("providers")

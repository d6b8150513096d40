"""The folders are the architecture: each layer imports only from itself and the layers below.

    core/          pure: no event loop, sockets, files, environment or clock reads
    daemon/        serving permits (config, service, socket server, wait queues)
    backends/      buckets shared by many hosts (Redis), behind the daemon's backend seam
    client/        what users import to ask for permits (client, retry policies)
    ops/           running the daemon (lifecycle, metrics, HTTP, persistence, systemd)
    integrations/  rate limiting inside users' HTTP clients
    cli/           the command line

Checked by parsing imports with `ast` (anyio's test_all_attributes.py in spirit). Imports under
`if TYPE_CHECKING:` never run, so the layer rules allow them; import circles are refused even
there, because a circle of annotations is still a circle a reader has to untangle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ratelimitd

PACKAGE = Path(ratelimitd.__file__).parent

# layer -> the layers it may import from at run time (itself included).
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "daemon": {"core", "daemon"},
    "backends": {"core", "daemon", "backends"},
    "client": {"core", "client"},
    "ops": {"core", "daemon", "backends", "ops"},
    "integrations": {"core", "client", "integrations"},
    "cli": {"core", "daemon", "backends", "client", "ops", "cli"},
    # the public paths kept at the top (`ratelimitd.retry`, `ratelimitd.aiohttp`, ...)
    "face": {"client", "integrations", "cli", "face"},
}
# Pure modules outside core/: the retry decisions live beside the client that runs them.
PURE_ELSEWHERE = {"ratelimitd.client.retry_steps"}
FORBIDDEN_IN_PURE = {
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
SHELL_LAYERS = {"daemon", "backends", "ops", "cli"}
CLOCK_CALLS = {("datetime", "now"), ("datetime", "utcnow"), ("date", "today"), ("datetime", "today")}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 2 and parts[1] in ALLOWED:
        return parts[1]
    if len(parts) == 2 and parts[1] in ALLOWED:  # a layer's own __init__
        return parts[1]
    return "face"


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _nodes(tree: ast.Module, *, runtime_only: bool) -> list[ast.AST]:
    found: list[ast.AST] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        found.append(node)
        for child in ast.iter_child_nodes(node):
            if runtime_only and isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
                continue
            stack.append(child)
    return found


def _imports(module: str, *, runtime_only: bool = True) -> list[str]:
    """Dotted names a module imports (relative imports resolved; `from pkg import mod` seen)."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    names: list[str] = []
    for node in _nodes(tree, runtime_only=runtime_only):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = module.split(".")[: -node.level] if module in MODULES else []
                target = ".".join([*base, target]) if target else ".".join(base)
            names.append(target)
            names.extend(
                f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in MODULES
            )
    return names


def _ratelimitd_imports(module: str, *, runtime_only: bool = True) -> set[str]:
    return {
        name
        for name in _imports(module, runtime_only=runtime_only)
        if name in MODULES and name != "ratelimitd" and name != module
    }


def _pure(module: str) -> bool:
    return _layer(module) == "core" or module in PURE_ELSEWHERE


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_imports_only_its_layer_and_below(module: str) -> None:
    layer = _layer(module)
    bad = sorted(name for name in _ratelimitd_imports(module) if _layer(name) not in ALLOWED[layer])
    assert bad == [], f"{module} ({layer}) imports {bad} at run time"


@pytest.mark.parametrize("module", sorted(name for name in MODULES if _pure(name)))
def test_pure_modules_import_no_io_and_read_no_clock(module: str) -> None:
    # What a pure module imports at run time is held to the same rules, transitively.
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        bad = [name for name in _imports(current) if name.split(".")[0] in FORBIDDEN_IN_PURE]
        bad += sorted(name for name in _ratelimitd_imports(current) if _layer(name) in SHELL_LAYERS)
        assert bad == [], f"{module} imports {bad} at run time (through {current})"
        todo.extend(_ratelimitd_imports(current))
    tree = ast.parse(MODULES[module].read_text())
    clock = [
        f"{node.value.id}.{node.attr}"
        for node in _nodes(tree, runtime_only=True)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and (node.value.id, node.attr) in CLOCK_CALLS
    ]
    assert clock == [], f"{module} reads the clock"


def test_no_import_circles_even_for_annotations() -> None:
    graph = {module: _ratelimitd_imports(module, runtime_only=False) for module in MODULES}
    # A package's __init__ re-exporting its own submodules is not a circle a reader follows.
    for module, targets in graph.items():
        if MODULES[module].name == "__init__.py":
            graph[module] = {t for t in targets if not t.startswith(module + ".")}
    circles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_the_checker_sees_what_it_must() -> None:
    # The shell does import what the core must not: the parser is not blind.
    assert "asyncio" in _imports("ratelimitd.daemon.server")
    assert "time" in _imports("ratelimitd.daemon.clock")
    assert "ratelimitd.daemon.waiters" in _imports("ratelimitd.daemon.service")
    assert _layer("ratelimitd.core.learning.learner") == "core"
    assert _layer("ratelimitd.retry") == "face"
    # TYPE_CHECKING-only imports are skipped by the layer rule: providers names config for annotations.
    source = MODULES["ratelimitd.core.providers"].read_text()
    assert "from ratelimitd.daemon.config import" in source
    assert "ratelimitd.daemon.config" not in _ratelimitd_imports("ratelimitd.core.providers")
    assert "ratelimitd.daemon.config" in _ratelimitd_imports("ratelimitd.core.providers", runtime_only=False)


def test_public_import_paths_keep_working() -> None:
    from ratelimitd.aiohttp import RateLimitMiddleware
    from ratelimitd.cli import main
    from ratelimitd.client import AsyncClient, Client
    from ratelimitd.retry import RetryPolicy, preset

    names = [main.__name__, preset.__name__, AsyncClient.__name__, Client.__name__]
    assert names == ["main", "preset", "AsyncClient", "Client"]
    assert RetryPolicy.__module__ == "ratelimitd.client.retry"
    assert RateLimitMiddleware.__module__ == "ratelimitd.integrations.aiohttp"

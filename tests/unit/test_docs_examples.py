"""The Python examples in README.md and docs/ name things that exist (renames break docs first)."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _imports() -> list[tuple[str, str, str | None]]:
    """(document, module, name or None) for every import line of every python block."""
    found: list[tuple[str, str, str | None]] = []
    for doc in DOCS:
        for block in BLOCK.findall(doc.read_text(encoding="utf-8")):
            for line in block.splitlines():
                if not line.startswith(("from ", "import ")):
                    continue
                node = ast.parse(line).body[0]
                if isinstance(node, ast.ImportFrom) and node.module:
                    found += [(doc.name, node.module, alias.name) for alias in node.names]
                elif isinstance(node, ast.Import):
                    found += [(doc.name, alias.name, None) for alias in node.names]
    return found


def test_the_docs_have_python_examples() -> None:
    assert len(_imports()) >= 10  # the scan itself found what it is meant to check


@pytest.mark.parametrize(("doc", "module", "name"), _imports())
def test_every_name_a_docs_example_imports_exists(doc: str, module: str, name: str | None) -> None:
    imported = importlib.import_module(module)
    if name is not None:
        assert hasattr(imported, name), f"{doc}: {module} has no {name}"

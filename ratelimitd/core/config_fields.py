"""Typed checks of configuration values, each problem recorded with its dotted key path.

Pure: values in, values or problems out. `config.py` builds the sections with these,
so every error of a file is reported at once (`ratelimitd check-config`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ("Problems", "apply_fields", "check_bool", "check_keys", "check_number", "check_table")


class Problems:
    """Collects every error with its key path instead of stopping at the first."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")


def check_number(
    raw: Any,
    path: str,
    problems: Problems,
    *,
    minimum: float = 0.0,
    strict: bool = False,
    integer: bool = False,
) -> float | None:
    kind = int if integer else (int, float)
    if isinstance(raw, bool) or not isinstance(raw, kind):
        problems.add(path, f"expected {'an integer' if integer else 'a number'}, got {raw!r}")
        return None
    value = float(raw)
    bad = value <= minimum if strict else value < minimum
    if not math.isfinite(value) or bad:
        problems.add(path, f"must be {'>' if strict else '>='} {minimum:g}, got {raw!r}")
        return None
    return value


def check_keys(table: Mapping[str, Any], allowed: set[str], path: str, problems: Problems) -> None:
    for key in table:
        if key not in allowed:
            where = f"{path}.{key}" if path else key
            problems.add(where, f"unknown key (expected one of: {', '.join(sorted(allowed))})")


def check_table(raw: Any, path: str, problems: Problems) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.add(path, f"expected a table, got {type(raw).__name__}")
        return {}
    return raw


def check_bool(raw: Any, path: str, problems: Problems) -> bool | None:
    if not isinstance(raw, bool):
        problems.add(path, f"expected true or false, got {raw!r}")
        return None
    return raw


def apply_fields(
    target: dict[str, Any],
    table: Mapping[str, Any],
    spec: Mapping[str, str],
    section: str,
    problems: Problems,
) -> None:
    """Copy typed scalars from `table` into `target`; `spec` maps key -> kind."""
    check_keys(table, set(spec), section, problems)
    for key, kind in spec.items():
        if key not in table:
            continue
        raw, path = table[key], f"{section}.{key}"
        value: Any
        if kind == "bool":
            value = check_bool(raw, path, problems)
        elif kind == "int":
            value = check_number(raw, path, problems, strict=True, integer=True)
            value = None if value is None else int(value)
        elif kind == "port":
            value = check_number(raw, path, problems, integer=True)
            if value is not None and value > 65535:
                problems.add(path, f"must be <= 65535, got {raw!r}")
                value = None
            value = None if value is None else int(value)
        elif kind == "seconds":
            value = check_number(raw, path, problems)
        elif kind == "positive":
            value = check_number(raw, path, problems, strict=True)
        elif kind == "path":
            value = Path(raw) if isinstance(raw, str) and raw else None
            if value is None:
                problems.add(path, f"expected a path string, got {raw!r}")
        elif kind == "mode":
            value = _mode(raw, path, problems)
        elif kind.startswith("choice:"):
            choices = kind.removeprefix("choice:").split("|")
            value = raw if raw in choices else None
            if value is None:
                problems.add(path, f"expected one of {', '.join(choices)}, got {raw!r}")
        else:
            value = raw if isinstance(raw, str) else None
            if value is None:
                problems.add(path, f"expected a string, got {raw!r}")
        if value is not None:
            target[key] = value


def _mode(raw: Any, path: str, problems: Problems) -> int | None:
    if isinstance(raw, str) and re.fullmatch(r"0?[0-7]{3}", raw):
        return int(raw, 8)
    problems.add(path, f"expected an octal mode string like '0660', got {raw!r}")
    return None

"""`ratelimitd install-systemd`: copy the units and example files under a prefix.

Writes files only; it never runs systemctl, so it works for packaging (`--prefix
build/root`) as well as on a live system (`--prefix /`), and prints the commands to run.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

__all__ = (
    "SOURCE_DIR",
    "add_install_command",
    "install_systemd",
    "run_install_command",
)

#: Where the unit templates live: the repository's `systemd/` in a source checkout, else
#: `<prefix>/share/ratelimitd/systemd`, where a wheel install puts them (pyproject data-files).
_CHECKOUT_DIR = Path(__file__).resolve().parents[2] / "systemd"
SOURCE_DIR = (
    _CHECKOUT_DIR if _CHECKOUT_DIR.is_dir() else Path(sys.prefix) / "share" / "ratelimitd" / "systemd"
)

_BIN_PLACEHOLDER = "@BIN_PATH@"
# Paths that ProtectHome=yes hides from the service: a binary there cannot start.
_HIDDEN_BY_PROTECT_HOME = (Path("/home"), Path("/root"), Path("/run/user"))


def _under(prefix: Path, absolute: str) -> Path:
    return prefix / absolute.lstrip("/")


def install_systemd(prefix: Path, *, bin_path: str, source: Path = SOURCE_DIR) -> list[Path]:
    """Install the units, the sysusers.d entry, docs and examples under `prefix`.

    Always (over)written:
    `etc/systemd/system/ratelimitd.{service,socket}` (ExecStart= runs `bin_path`),
    `etc/sysusers.d/ratelimitd.conf`, and `usr/share/doc/ratelimitd/` (systemd.md and
    the examples). Written only when absent, so a reinstall keeps the admin's edits:
    `etc/default/ratelimitd` and `etc/ratelimitd/config.toml`.

    :param prefix: the root to install under (`/` for the running system).
    :param bin_path: absolute path of the `ratelimitd` executable for ExecStart=.
    :param source: the directory holding the unit templates (the repository's systemd/).
    :return: the files written, in order.
    :raises ValueError: `bin_path` is not absolute or contains whitespace.
    :raises FileNotFoundError: `source` lacks a template (an install without the source tree).
    """
    if not os.path.isabs(bin_path) or any(char.isspace() for char in bin_path):
        raise ValueError(f"bin_path: must be an absolute path without spaces, got {bin_path!r}")
    for name in ("ratelimitd.service", "ratelimitd.socket", "ratelimitd.sysusers"):
        if not (source / name).is_file():
            raise FileNotFoundError(
                f"{source / name}: unit template missing; run install-systemd from a source checkout"
            )
    doc_dir = _under(prefix, "/usr/share/doc/ratelimitd")
    unit_dir = _under(prefix, "/etc/systemd/system")
    service = (source / "ratelimitd.service").read_text("utf-8").replace(_BIN_PLACEHOLDER, bin_path)

    always: list[tuple[Path, str, int]] = [
        (unit_dir / "ratelimitd.service", service, 0o644),
        (unit_dir / "ratelimitd.socket", (source / "ratelimitd.socket").read_text("utf-8"), 0o644),
        (
            _under(prefix, "/etc/sysusers.d/ratelimitd.conf"),
            (source / "ratelimitd.sysusers").read_text("utf-8"),
            0o644,
        ),
    ]
    examples = ("ratelimitd.env.example", "config.toml.example")
    always.extend(
        (doc_dir / name, (source / name).read_text("utf-8"), 0o644)
        for name in examples
        if (source / name).is_file()
    )
    guide = source.parent / "docs" / "systemd.md"
    if guide.is_file():
        always.append((doc_dir / "systemd.md", guide.read_text("utf-8"), 0o644))

    # The admin's own files: created from the examples once, never overwritten.
    once = [
        (_under(prefix, "/etc/default/ratelimitd"), source / "ratelimitd.env.example"),
        (_under(prefix, "/etc/ratelimitd/config.toml"), source / "config.toml.example"),
    ]

    written: list[Path] = []
    for path, text, mode in always:
        _write(path, text, mode)
        written.append(path)
    for path, example in once:
        if not path.exists() and example.is_file():
            _write(path, example.read_text("utf-8"), 0o644)
            written.append(path)
    return written


def _write(path: Path, text: str, mode: int) -> None:
    """Write atomically (temporary file, then rename) with `mode`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, "utf-8")
    temporary.chmod(mode)
    os.replace(temporary, path)


def _default_bin_path() -> str:
    beside_python = Path(sys.executable).parent / "ratelimitd"
    if beside_python.is_file():
        return str(beside_python.absolute())
    found = shutil.which("ratelimitd")
    return str(Path(found).absolute()) if found else str(beside_python.absolute())


def add_install_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add `install-systemd` to the CLI; the parser's `func` default runs it."""
    parser = subparsers.add_parser(
        "install-systemd",
        help="install the systemd units and example files under a prefix",
        description=install_systemd.__doc__.splitlines()[0] if install_systemd.__doc__ else None,
    )
    parser.add_argument("--prefix", type=Path, default=Path("/"), help="root to install under (default: /)")
    parser.add_argument(
        "--bin-path",
        default=None,
        help="ratelimitd executable for ExecStart= (default: the one beside this Python)",
    )
    parser.set_defaults(func=run_install_command)
    return parser


def run_install_command(args: argparse.Namespace) -> int:
    """Handle `ratelimitd install-systemd`; return the exit code."""
    bin_path: str = args.bin_path or _default_bin_path()
    try:
        written = install_systemd(args.prefix, bin_path=bin_path)
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"install-systemd: {exc}\n")
        return 1
    for path in written:
        sys.stdout.write(f"installed {path}\n")
    if any(Path(bin_path).is_relative_to(hidden) for hidden in _HIDDEN_BY_PROTECT_HOME):
        sys.stderr.write(
            f"warning: {bin_path} is under a directory ProtectHome=yes hides from the service;"
            " install ratelimitd elsewhere (e.g. /opt/ratelimitd) or the service cannot start\n"
        )
    if Path(args.prefix).resolve() == Path("/"):
        sys.stdout.write(
            "next: systemd-sysusers && systemctl daemon-reload"
            " && systemctl enable --now ratelimitd.socket ratelimitd.service\n"
        )
    return 0

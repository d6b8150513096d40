"""Where the socket and the state file live (protocol.md "Paths and defaults").

Pure: reads only the mapping and the uid it is given, so the daemon, the client and tests agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ("SOCKET_NAME", "SYSTEM_SOCKET", "client_socket_path", "default_socket_path", "default_state_path")

SOCKET_NAME = "ratelimitd.sock"
#: Where the systemd units put the socket (ratelimitd.socket, `RuntimeDirectory=ratelimitd`).
SYSTEM_SOCKET = Path("/run/ratelimitd") / SOCKET_NAME


def default_socket_path(environ: Mapping[str, str], uid: int) -> Path:
    """`$RATELIMITD_SOCKET`, else `$RUNTIME_DIRECTORY`, else `$XDG_RUNTIME_DIR`, else /tmp/ratelimitd-UID.

    An explicit `--socket` wins over all of these; the caller applies it.
    """
    if explicit := environ.get("RATELIMITD_SOCKET"):
        return Path(explicit)
    # systemd may pass several directories separated by ':'; the first is ours.
    if runtime := environ.get("RUNTIME_DIRECTORY"):
        return Path(runtime.split(":")[0]) / SOCKET_NAME
    if xdg := environ.get("XDG_RUNTIME_DIR"):
        return Path(xdg) / SOCKET_NAME
    return Path(f"/tmp/ratelimitd-{uid}") / SOCKET_NAME


def client_socket_path(environ: Mapping[str, str], uid: int, exists: Callable[[Path], bool]) -> Path:
    """The socket a client connects to when given none: `default_socket_path`, except that
    when nothing is at that per-user path but the system daemon's socket exists, that one.

    `$RATELIMITD_SOCKET` is always taken as given. `exists` tells whether a path exists
    (the caller passes `os.path.exists`; tests pass a set's membership).
    """
    path = default_socket_path(environ, uid)
    if environ.get("RATELIMITD_SOCKET") or exists(path) or not exists(SYSTEM_SOCKET):
        return path
    return SYSTEM_SOCKET


def default_state_path(environ: Mapping[str, str], home: Path) -> Path:
    """`$STATE_DIRECTORY/state.json`, else `$XDG_STATE_HOME/ratelimitd/state.json`.

    Without either: `~/.local/state/ratelimitd/state.json`.
    """
    if state_dir := environ.get("STATE_DIRECTORY"):
        return Path(state_dir.split(":")[0]) / "state.json"
    if xdg := environ.get("XDG_STATE_HOME"):
        return Path(xdg) / "ratelimitd" / "state.json"
    return Path(environ.get("HOME") or home) / ".local" / "state" / "ratelimitd" / "state.json"

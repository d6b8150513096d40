"""Where clients look for the daemon's socket (pure: `exists` is a set's membership)."""

from __future__ import annotations

from pathlib import Path

from ratelimitd.core.paths import SYSTEM_SOCKET, client_socket_path

XDG = {"XDG_RUNTIME_DIR": "/run/user/1000"}
USER_SOCKET = Path("/run/user/1000/ratelimitd.sock")


def test_the_per_user_socket_wins_when_it_is_there() -> None:
    there = {USER_SOCKET, SYSTEM_SOCKET}
    assert client_socket_path(XDG, 1000, there.__contains__) == USER_SOCKET


def test_the_system_socket_is_found_when_the_per_user_one_is_missing() -> None:
    assert client_socket_path(XDG, 1000, {SYSTEM_SOCKET}.__contains__) == SYSTEM_SOCKET
    assert client_socket_path({}, 1000, {SYSTEM_SOCKET}.__contains__) == SYSTEM_SOCKET
    assert Path("/run/ratelimitd/ratelimitd.sock") == SYSTEM_SOCKET


def test_without_either_the_per_user_path_is_kept_for_the_error_message() -> None:
    assert client_socket_path(XDG, 1000, set().__contains__) == USER_SOCKET


def test_an_explicit_socket_is_never_replaced() -> None:
    environ = {"RATELIMITD_SOCKET": "/srv/rl.sock"}
    assert client_socket_path(environ, 1000, {SYSTEM_SOCKET}.__contains__) == Path("/srv/rl.sock")

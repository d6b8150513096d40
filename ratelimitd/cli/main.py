"""Command line: `ratelimitd serve | check-config | version | status | acquire | report | reset`.

Exit codes: 0 ok, 1 error, 2 bad usage or bad config, 3 the daemon could not start
(uvicorn's STARTUP_FAILURE), 75 (EX_TEMPFAIL) an acquire timed out.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ratelimitd import __version__
from ratelimitd.core.errors import ConfigError
from ratelimitd.core.rates import format_rate
from ratelimitd.daemon.config import Config, load_config

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ratelimitd.core.peers import Trust

__all__ = ("main",)

STARTUP_FAILURE = 3
logger = logging.getLogger("ratelimitd")


def _serve(args: argparse.Namespace) -> int:
    from ratelimitd.daemon.unix_socket import SocketInUseError, UnsafeSocketDirError
    from ratelimitd.ops.lifecycle import Daemon
    from ratelimitd.ops.logs import setup_logging
    from ratelimitd.ops.persist import StateLockedError

    try:
        config = load_config(args.config, os.environ)
    except ConfigError as exc:
        print(f"ratelimitd: {exc}", file=sys.stderr)
        return 2
    config = _apply_flags(config, args)
    setup_logging(config.server.log_level, config.server.log_format)
    for note in config.notes:
        logger.warning("config: %s", note)
    daemon = Daemon(config, environ=os.environ, config_path=args.config)
    try:
        _run(daemon.run())
    except (
        SocketInUseError,
        UnsafeSocketDirError,
        StateLockedError,
        ConfigError,
        OSError,
        ValueError,
    ) as exc:
        logger.error("cannot start: %s", exc)
        return STARTUP_FAILURE
    logger.info("stopped")
    return 0


def _run(coro: object) -> None:
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]


def _apply_flags(config: Config, args: argparse.Namespace) -> Config:
    server = config.server
    if args.socket:
        server = dataclasses.replace(server, socket=Path(args.socket))
    if args.log_level:
        server = dataclasses.replace(server, log_level=args.log_level)
    if args.log_format:
        server = dataclasses.replace(server, log_format=args.log_format)
    http = config.http
    if args.http_port is not None:
        http = dataclasses.replace(http, port=args.http_port)
    if args.no_http:
        http = dataclasses.replace(http, enabled=False)
    return dataclasses.replace(config, server=server, http=http)


def _check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file, os.environ)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{config.source}: OK")
    print(f"  socket: {config.server.socket or '(default path)'}")
    print(f"  http: {'off' if not config.http.enabled else f'{config.http.host}:{config.http.port}'}")
    print(f"  features: {', '.join(k for k, v in config.features.as_dict().items() if v) or 'none'}")
    print(f"  policy: {config.learning.policy}")
    print(f"  backend: {_backend_line(config)}")
    print(f"  trusted to report and reset: {_trust_line(config.trusted_peers)}")
    for note in config.notes:
        print(f"  note: {note}")
    for name, provider in config.providers.items():
        limits = ", ".join(
            f"{lim.unit} {format_rate(lim.count / lim.period, lim.period)} (burst {lim.burst:g})"
            for lim in provider.limits
        )
        trust = "" if provider.trusted_peers is None else f"; trusted {_trust_line(provider.trusted_peers)}"
        scope = (
            ""
            if provider.retry_after_scope == "auto"
            else f"; retry_after_scope {provider.retry_after_scope}"
        )
        buckets = f"buckets {', '.join(provider.buckets)} ({provider.selection})"
        print(f"  provider {name}: {limits}; {buckets}{trust}{scope}")
    return 0


def _trust_line(trust: Trust | None) -> str:
    """Whom `trust` names beside the daemon's user and root (docs/security.md)."""
    if trust is None:
        return "the daemon's user, root and the socket's group"
    uids = ", ".join(map(str, sorted(trust.uids))) or "none"
    gids = ", ".join(map(str, sorted(trust.gids))) or "none"
    return f"the daemon's user, root, uids {uids}, gids {gids}"


def _backend_line(config: Config) -> str:
    backend = config.backend
    if backend.kind == "memory":
        return "memory (this host only)"
    secret = " (password set)" if backend.password else ""
    return (
        f"redis {backend.display_url}{secret}{' cluster' if backend.cluster else ''}, "
        f"host_id {backend.host_id!r}, key_prefix {backend.key_prefix!r}, "
        f"fallback at {backend.fallback_share:g} of the rate per host while Redis is unreachable"
    )


def _version(_args: argparse.Namespace) -> int:
    print(f"ratelimitd {__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ratelimitd", description="A host-local rate-limit daemon.")
    parser.add_argument("--version", action="version", version=f"ratelimitd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the daemon in the foreground")
    serve.add_argument(
        "--config", help="TOML configuration file (default: $RATELIMITD_CONFIG, else the embedded defaults)"
    )
    serve.add_argument(
        "--socket",
        help="Unix socket path (default: the config's, else $RATELIMITD_SOCKET, else the runtime directory)",
    )
    serve.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="log level (default: the config's, else info)",
    )
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="log lines as text or one JSON object each, for log shippers (default: the config's, else text)",
    )
    serve.add_argument(
        "--http-port",
        type=int,
        help="metrics/health port (default: the config's, else 9464; 0 = any free port)",
    )
    serve.add_argument("--no-http", action="store_true", help="do not serve metrics and health over HTTP")
    serve.set_defaults(func=_serve)
    check = sub.add_parser("check-config", help="validate a configuration file and print it")
    check.add_argument(
        "file", nargs="?", help="file to check (default: $RATELIMITD_CONFIG, else the embedded defaults)"
    )
    check.set_defaults(func=_check_config)
    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=_version)
    try:
        from ratelimitd.cli.commands import add_client_commands
    except ImportError:
        pass
    else:
        add_client_commands(sub)
    try:
        from ratelimitd.ops.install import add_install_command
    except ImportError:
        pass
    else:
        add_install_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = args.func(args)
    return int(result or 0)

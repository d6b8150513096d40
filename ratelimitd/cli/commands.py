"""The client side of the command line: `status`, `acquire`, `report`, `reset`.

`ratelimitd.cli.main` calls `add_client_commands(subparsers)`; each command's `func`
takes the parsed arguments and returns the exit code:

====  =================================================================
0     done (for `acquire`: the permit was granted)
1     the daemon refused for another reason (unknown provider, too many
      providers, internal error)
2     bad usage or a bad request (also a cost that can never be granted)
69    EX_UNAVAILABLE: the daemon cannot be reached
75    EX_TEMPFAIL: no permit in time (`timeout`), every bucket exhausted,
      or the daemon is shutting down; retry later
====  =================================================================
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import TYPE_CHECKING, Any, Final, TextIO

import orjson

from ratelimitd.cli.status_view import fetch_status, format_status, watch
from ratelimitd.client.errors import (
    AllBucketsExhausted,
    BadRequest,
    CostTooLarge,
    DaemonUnavailable,
    Forbidden,
    InvalidJson,
    LineTooLong,
    PermitTimeout,
    RatelimitdClientError,
    ShuttingDown,
    UnknownOp,
)
from ratelimitd.client.sync import Client
from ratelimitd.core.rates import format_rate

if TYPE_CHECKING:
    from collections.abc import Callable

    from ratelimitd.client.types import Cost, Status

__all__ = (
    "EX_NOPERM",
    "EX_OK",
    "EX_TEMPFAIL",
    "EX_UNAVAILABLE",
    "EX_USAGE",
    "add_client_commands",
    "format_status",
    "parse_cost",
    "parse_header",
)

EX_OK: Final = 0
EX_ERROR: Final = 1
EX_USAGE: Final = 2
EX_UNAVAILABLE: Final = 69  # sysexits.h
EX_TEMPFAIL: Final = 75  # sysexits.h
EX_NOPERM: Final = 77  # sysexits.h

_RETRY_LATER = (PermitTimeout, AllBucketsExhausted, ShuttingDown)
_BAD_REQUEST = (BadRequest, CostTooLarge, InvalidJson, UnknownOp, LineTooLong)


def parse_cost(values: list[str] | None) -> Cost:
    """`--cost 3` or `--cost requests=1 --cost tokens=1200` -> a protocol cost."""
    if not values:
        return 1
    if len(values) == 1 and "=" not in values[0]:
        return _amount(values[0], "--cost")
    units: dict[str, float] = {}
    for value in values:
        unit, sep, amount = value.partition("=")
        if not sep or not unit:
            raise argparse.ArgumentTypeError(
                f"--cost: give one number, or unit=N for each unit (got {value!r})"
            )
        units[unit] = _amount(amount, f"--cost {unit}")
    return units


def parse_used(text: str) -> tuple[str, float]:
    """`tokens=812` -> `("tokens", 812.0)` (0 allowed: nothing of that unit was used)."""
    unit, sep, amount = text.partition("=")
    try:
        value = float(amount)
    except ValueError:
        value = math.nan
    if not sep or not unit or not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"--used: give UNIT=N with N a number >= 0 (got {text!r})")
    return unit, value


def _amount(text: str, what: str) -> float:
    try:
        amount = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: not a number: {text!r}") from None
    if not math.isfinite(amount) or amount <= 0:
        raise argparse.ArgumentTypeError(f"{what}: must be a number > 0, got {text!r}")
    return amount


def parse_header(text: str) -> tuple[str, str]:
    """`'Retry-After: 2'` -> `("Retry-After", "2")`."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"--header: expected 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def _status_code(text: str) -> Status:
    if text == "network_error":
        return "network_error"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"STATUS: an HTTP status like 429 or network_error, got {text!r}"
        ) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"seconds must be >= 0, got {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"seconds must be > 0, got {text!r}")
    return value


def _say(text: str, stream: TextIO | None = None) -> None:
    (stream or sys.stdout).write(text + "\n")


# -- commands -----------------------------------------------------------------------------------


def _run(args: argparse.Namespace, action: Callable[[Client], int]) -> int:
    """Run `action` with a connected client, mapping client errors to exit codes."""
    err: TextIO = sys.stderr
    try:
        with Client(args.socket) as client:
            return action(client)
    except DaemonUnavailable as exc:
        _say(f"ratelimitd: {exc}", err)
        return EX_UNAVAILABLE
    except PermitTimeout as exc:
        retry = "" if exc.retry_after is None else f" (retry in about {exc.retry_after:.3f} s)"
        _say(f"ratelimitd: no permit within the timeout{retry}", err)
        return EX_TEMPFAIL
    except _RETRY_LATER as exc:
        _say(f"ratelimitd: {exc}", err)
        return EX_TEMPFAIL
    except _BAD_REQUEST as exc:
        _say(f"ratelimitd: {exc}", err)
        return EX_USAGE
    except Forbidden as exc:
        _say(f"ratelimitd: {exc}", err)
        return EX_NOPERM
    except RatelimitdClientError as exc:
        _say(f"ratelimitd: {exc}", err)
        return EX_ERROR
    except (ValueError, TypeError) as exc:  # rejected by the client before sending
        _say(f"ratelimitd: {exc}", err)
        return EX_USAGE


def _acquire(args: argparse.Namespace) -> int:
    def action(client: Client) -> int:
        permit = client.acquire(args.provider, args.cost, args.timeout, args.exclude or ())
        if args.json:
            _say(
                orjson.dumps(
                    {
                        "provider": permit.provider,
                        "bucket": permit.bucket,
                        "permit": permit.permit,
                        "waited": permit.waited,
                        "rate": permit.rate,
                        "ignored_units": list(permit.ignored_units),
                    }
                ).decode()
            )
        return EX_OK

    return _run(args, action)


def _report(args: argparse.Namespace) -> int:
    def action(client: Client) -> int:
        result = client.report(
            args.provider,
            args.status,
            bucket=args.bucket,
            permit=args.permit,
            reason=args.reason,
            retry_after=args.retry_after,
            headers=dict(args.header) if args.header else None,
            used=dict(args.used) if args.used else None,
        )
        rate = "-" if result.rate is None else format_rate(result.rate)
        where = f"{result.provider}/{result.bucket}"
        settled = "" if result.settled is None else f" settled={str(result.settled).lower()}"
        _say(f"{where}: action={result.action} streak={result.streak} rate={rate}{settled}")
        return EX_OK

    return _run(args, action)


def _reset(args: argparse.Namespace) -> int:
    def action(client: Client) -> int:
        response = client.reset(args.provider, args.bucket)
        buckets = response.get("buckets") or []
        _say(f"{args.provider}: reset {', '.join(str(b) for b in buckets)}")
        return EX_OK

    return _run(args, action)


def _status(args: argparse.Namespace) -> int:
    def action(client: Client) -> int:
        if args.watch is not None:
            try:
                watch(client, args.provider, args.watch)
            except KeyboardInterrupt:
                sys.stdout.write("\n")
            return EX_OK
        answer = fetch_status(client, args.provider)
        providers = answer.get("providers") or {}
        if args.json:
            shown: dict[str, Any] = {"providers": providers}
            if "backend" in answer:  # the shared backend's view (only with one configured)
                shown["backend"] = answer["backend"]
            _say(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
        else:
            backend = answer.get("backend")
            sys.stdout.write(format_status(providers, daemon=answer.get("daemon"), backend=backend))
        return EX_OK

    return _run(args, action)


# -- parser -------------------------------------------------------------------------------------


def add_client_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `status`, `acquire`, `report` and `reset`; each sets `func(args) -> int`."""
    socket_help = "the daemon's socket (default: $RATELIMITD_SOCKET, else the runtime directory's)"

    status = subparsers.add_parser("status", help="show providers, buckets and their state")
    status.add_argument("provider", nargs="?", help="only this provider (default: all)")
    status.add_argument("--json", action="store_true", help="print the status op's JSON")
    status.add_argument(
        "--watch",
        nargs="?",
        type=_positive_seconds,
        const=1.0,
        metavar="SECONDS",
        help="redraw the table in place every SECONDS (default 1) until Ctrl-C",
    )
    status.add_argument("--socket", help=socket_help)
    status.set_defaults(func=_status)

    acquire = subparsers.add_parser(
        "acquire",
        help="wait for a permit; exit 0 when granted, 75 on timeout, 69 without a daemon",
        description="Wait for a permit to call PROVIDER once, e.g. "
        "`ratelimitd acquire openai && curl ...`. Prints nothing unless --json.",
    )
    acquire.add_argument("provider")
    acquire.add_argument(
        "--cost",
        action="append",
        metavar="N|UNIT=N",
        help="a number of requests, or UNIT=N once per unit, e.g. --cost tokens=1200 (default: 1 request)",
    )
    acquire.add_argument(
        "--timeout",
        type=_seconds,
        help="seconds to wait; 0: now or fail (default: the daemon's default_timeout, 30 s unless set)",
    )
    acquire.add_argument(
        "--exclude", action="append", metavar="BUCKET", help="a bucket not to use, repeatable (default: none)"
    )
    acquire.add_argument("--json", action="store_true", help="print the permit as one JSON line")
    acquire.add_argument("--socket", help=socket_help)
    acquire.set_defaults(func=_checked_cost(_acquire))

    report = subparsers.add_parser("report", help="tell the daemon how a call went")
    report.add_argument("provider")
    report.add_argument("status", type=_status_code, help="HTTP status, or network_error")
    report.add_argument("--bucket", default="default", help="the bucket the permit named (default: default)")
    report.add_argument("--permit", type=int, help="the permit id the call used")
    report.add_argument("--reason", help="the provider's error code, e.g. insufficient_quota")
    report.add_argument("--retry-after", type=_seconds, help="a delay already parsed (seconds)")
    report.add_argument(
        "--header",
        action="append",
        type=parse_header,
        metavar="'NAME: VALUE'",
        help="a response header, repeatable (the daemon parses Retry-After and rate headers)",
    )
    report.add_argument(
        "--used",
        action="append",
        type=parse_used,
        metavar="UNIT=N",
        help="what the call really consumed, repeatable, e.g. --used tokens=812: settles the permit's cost",
    )
    report.add_argument("--socket", help=socket_help)
    report.set_defaults(func=_report)

    reset = subparsers.add_parser("reset", help="forget what was learned about a provider")
    reset.add_argument("provider")
    reset.add_argument("--bucket", help="only this bucket (default: every bucket of the provider)")
    reset.add_argument("--socket", help=socket_help)
    reset.set_defaults(func=_reset)


def _checked_cost(command: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """Parse `--cost` after argparse (it needs all the values at once)."""

    def run(args: argparse.Namespace) -> int:
        try:
            args.cost = parse_cost(args.cost)
        except argparse.ArgumentTypeError as exc:
            _say(f"ratelimitd acquire: {exc}", sys.stderr)
            return EX_USAGE
        return command(args)

    return run

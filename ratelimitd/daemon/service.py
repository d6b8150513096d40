"""The protocol's ops, independent of the transport.

Shell: owns the wait queues (asyncio timers) around the pure registry. An op
returns its response body, or for an `acquire` that must wait, a `PendingAcquire`
whose future the transport watches; `finish` turns it into the response.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson

from ratelimitd import __version__
from ratelimitd.core.errors import ErrorCode, RatelimitdError
from ratelimitd.core.headers.parse import parse_headers
from ratelimitd.core.headers.profiles import PROFILES
from ratelimitd.core.learning.history import HistoryEntry
from ratelimitd.core.learning.learner import (
    QUOTA_REASONS,
    BucketLearner,
    Decision,
    LearningSettings,
    ReportEvent,
)
from ratelimitd.core.peers import Peer, PermitOwners, Trust
from ratelimitd.core.protocol import (
    ONE_REQUEST,
    PROTOCOL_VERSION,
    AcquireRequest,
    HelloRequest,
    PingRequest,
    ReportRequest,
    Request,
    RequestId,
    ResetRequest,
    StatusRequest,
    acquire_fields,
    report_fields,
)
from ratelimitd.core.providers import Bucket, Provider, ProviderStats, Registry, status_class
from ratelimitd.core.selection import choose_bucket
from ratelimitd.core.settlement import GrantLedger, settlement
from ratelimitd.daemon.decisions import apply_decision, baseline_rate, learning_settings
from ratelimitd.daemon.events import note_429, note_decision, note_reset, pause_cause
from ratelimitd.daemon.learned_state import restore_bucket
from ratelimitd.daemon.metrics_hooks import MetricsHooks, NoMetrics
from ratelimitd.daemon.status import StatusSlices, provider_statistics, status_slices
from ratelimitd.daemon.waiters import Waiter, WaitQueue

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Iterator

    from ratelimitd.core.causes import Cause
    from ratelimitd.daemon.backend import Backend
    from ratelimitd.daemon.clock import Clock
    from ratelimitd.daemon.config import Config

__all__ = ("PendingAcquire", "Service")

logger = logging.getLogger(__name__)
# Providers per slice of a tick: about 0.4 ms interpreted, a third of that compiled.
TICK_SLICE: Final = 500
_new_tuple: Final = tuple.__new__  # a NamedTuple from a tuple, without its __new__'s Python frame
Response = dict[str, Any]


def _stopping() -> RatelimitdError:
    """What a request the daemon no longer takes is answered (and a waiter at the stop)."""
    return RatelimitdError(ErrorCode.SHUTTING_DOWN, "the daemon is stopping; retry on the next daemon")


@dataclass(slots=True, eq=False)  # compared and hashed by identity
class PendingAcquire:
    request: AcquireRequest
    bucket: Bucket
    waiter: Waiter
    peer: Peer | None = None  # None: a peer trusted everywhere
    ignored: tuple[str, ...] = ()  # units of the cost the provider does not limit


class Service:
    """Runs the ops against the registry; one instance per daemon."""

    def __init__(self, config: Config, clock: Clock, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self._settings_of: Config | None = None
        self._settings: dict[str, LearningSettings] = {}  # by retry_after_scope
        self.clock = clock
        # The clock's reading function itself: compiled (tools/compiled.py), a call through
        # the Protocol looks the method up by name on every acquire and report.
        self._monotonic: Callable[[], float] = clock.monotonic
        self.loop = loop
        self.default_timeout = config.server.default_timeout
        # Only an enforcing learner can make a bucket exhausted or disabled (learning.py).
        self.learning_enforced = config.features.learning and config.learning.policy != "static"
        self.registry = Registry(config, clock.monotonic())
        self.protocol_errors: Counter[str] = Counter()
        self.connected_clients = 0
        self.stopping = False
        # Learned state changed since persistence last took this flag (a flag, not a callback:
        # most reports set it, and setting it costs nothing).
        self.changed = False
        self.metrics: MetricsHooks = NoMetrics()
        # None with the memory backend: buckets live here and no backend code runs.
        self.backend: Backend | None = None
        # Saved learner state of providers created on first use: key -> (snapshot, seconds stale).
        self.saved_state: Callable[[tuple[str, str]], tuple[dict[str, object], float] | None] = lambda _key: (
            None
        )
        # Providers created on first use: name -> (activity count, monotonic time it last changed).
        self._activity: dict[str, tuple[int, float]] = {}
        self._last_sweep = -math.inf
        # Called with each bucket of an idle provider before it is dropped (persistence keeps it).
        self.on_drop: Callable[[Bucket], None] = lambda _bucket: None
        # Authorization (protocol.md, "Who may do what"): the daemon's uid and root are
        # trusted everywhere; the socket's group by default (the lifecycle sets it).
        self.daemon_uid = os.geteuid()
        self._socket_trust = Trust()  # the socket file's group, once known
        self.permit_owners = PermitOwners()
        # Connections refused, by (listener, reason); closed for being idle.
        self.refused_connections: Counter[tuple[str, str]] = Counter()
        self.idle_closed = 0
        self.untrusted_reports = 0  # reports that only counted: untrusted peer, not its permit
        # Readiness and the last reload, kept current by the daemon, shown by the status op.
        self.daemon_status: dict[str, object] = {}
        for bucket in self.registry.buckets():
            self._attach(bucket)

    # -- who may do what ------------------------------------------------------------------------

    def trusted_everywhere(self, peer: Peer) -> bool:
        """The daemon's own uid and root: trusted for every provider, whatever the config."""
        return peer.uid == self.daemon_uid or peer.uid == 0

    def set_socket_gid(self, gid: int | None) -> None:
        """The socket file's group: trusted where the config names no one."""
        self._socket_trust = Trust(gids=frozenset() if gid is None else frozenset({gid}))

    def trusts(self, peer: Peer | None, provider: str) -> bool:
        """Whether `peer`'s reports and resets may change `provider` (None: in-process, trusted)."""
        if peer is None or peer.uid == self.daemon_uid or peer.uid == 0:
            return True
        configured = self.config.providers.get(provider)
        trust = configured.trusted_peers if configured is not None else None
        if trust is None:
            trust = self.config.trusted_peers or self._socket_trust
        return trust.allows(peer)

    @staticmethod
    def _log_untrusted(what: str, peer: Peer, provider: str) -> None:
        # An event kind: a peer repeating itself becomes one line with a count (ops/logs.py).
        logger.warning(
            "%s from an untrusted peer (uid %d, pid %d) for provider %s (see trusted_peers)",
            what,
            peer.uid,
            peer.pid,
            provider,
            extra={"event": "untrusted", "provider": provider, "reason": what},
        )

    # -- wiring ---------------------------------------------------------------------------------

    def _attach(self, bucket: Bucket) -> None:
        bucket.queue = WaitQueue(lambda: bucket.limiter, self.clock.monotonic, self.loop)
        settings = self.settings_for(bucket)
        bucket.learner = BucketLearner(settings, baseline_rate(bucket), self.clock.monotonic())
        bucket.ledger = GrantLedger()
        if self.backend is not None:
            self.backend.attach(bucket)

    def set_backend(self, backend: Backend) -> None:
        """Share every bucket, present and future, through `backend`."""
        self.backend = backend
        for bucket in self.registry.buckets():
            backend.attach(bucket)

    def settings_for(self, bucket: Bucket) -> LearningSettings:
        """The learner settings of `bucket`'s provider. One frozen object per `retry_after_scope`,
        shared by every learner with it (was 264 bytes per bucket), made anew when the config
        object changes."""
        config = self.config
        if self._settings_of is not config:
            self._settings = {}
            self._settings_of = config
        scope = config.provider_for(bucket.provider).retry_after_scope
        settings = self._settings.get(scope)
        if settings is None:
            settings = self._settings[scope] = learning_settings(config, bucket.provider)
        return settings

    def _apply(
        self, bucket: Bucket, decision: Decision | None, now: float, pause_cause: Cause | None = None
    ) -> str:
        """Apply a learner's decision to `bucket` (see `apply_decision`); persistence notes changes,
        the bucket's events count and log them."""
        factor_before, pause_before = bucket.limiter.scale, bucket.applied_pause
        action = apply_decision(bucket, decision, now)
        if decision is not None:
            self.changed = True
            note_decision(
                bucket,
                decision,
                factor_before=factor_before,
                pause_before=pause_before,
                now=now,
                pause_cause=pause_cause,
            )
            if self.backend is not None:
                self.backend.learned(bucket, decision)
        return action

    def apply_learner(self, bucket: Bucket) -> None:
        """Make the limiter follow a learner that was replaced (restored from state)."""
        self._apply(bucket, None, self.clock.monotonic())

    def tick(self) -> None:
        """Time-driven learning (recovery, ends of pauses) of every bucket at once."""
        for _ in self.tick_slices():
            pass

    def tick_slices(self) -> Iterator[None]:
        """`tick` in slices of `TICK_SLICE` buckets: the daemon gives the loop back after each.
        (At 10,000 providers a whole tick held the loop for 7 ms, four times a second.)
        A provider dropped or reloaded away between slices is skipped."""
        registry = self.registry
        providers = list(registry.providers.values())
        for first in range(0, len(providers), TICK_SLICE):
            now = self._monotonic()
            for provider in providers[first : first + TICK_SLICE]:
                if registry.providers.get(provider.name) is not provider:
                    continue  # gone since the tick began
                for bucket in provider.buckets.values():
                    decision = bucket.learner.tick(now)
                    if decision is not None:
                        self._apply(bucket, decision, now)
            yield

    def _provider(self, name: str, now: float) -> Provider:
        provider = self.registry.providers.get(name)
        if provider is not None:
            return provider  # the hot path
        provider = self.registry.get(name, now, create=True)
        for bucket in provider.buckets.values():
            self._attach(bucket)
            saved = self.saved_state((name, bucket.name))
            if saved is not None:
                restore_bucket(self, bucket, *saved)
        logger.info("provider created on first use: %s", name)
        return provider

    # -- ops ------------------------------------------------------------------------------------

    def handle(self, request: Request, peer: Peer | None = None) -> Response | PendingAcquire | StatusSlices:
        """Run one request from `peer` (None: trusted everywhere); raise RatelimitdError."""
        kind = type(request)  # `is` on the exact type: the cheapest dispatch per request
        if (
            self.stopping
            and kind is not PingRequest
            and kind is not HelloRequest
            and kind is not StatusRequest
        ):
            raise _stopping()
        if kind is AcquireRequest:
            assert isinstance(request, AcquireRequest)
            return self._acquire(*request, peer)
        if kind is ReportRequest:
            assert isinstance(request, ReportRequest)
            return self.report(request, peer)
        if isinstance(request, PingRequest):
            return {"id": request.id, "ok": True}
        if isinstance(request, HelloRequest):
            return self.hello(request)
        if isinstance(request, StatusRequest):
            # One provider is small; many are written in slices by the transport.
            return self.status(request) if request.provider is not None else self.status_slices(request)
        assert isinstance(request, ResetRequest)
        return self.reset(request, peer)

    def hello(self, request: HelloRequest) -> Response:
        return {
            "id": request.id,
            "ok": True,
            "server": "ratelimitd",
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "features": self.config.features.as_dict(),
        }

    def acquire(self, request: AcquireRequest, peer: Peer | None = None) -> Response | PendingAcquire:
        """The acquire op; raise RatelimitdError for the error response."""
        return self._acquire(*request, peer)

    def acquire_object(
        self, obj: dict[str, Any], max_timeout: float, peer: Peer | None = None
    ) -> Response | PendingAcquire:
        """The acquire op from its decoded line (the transport's entry): every field is
        checked as `parse_object` checks it, with no request object built."""
        # Unpacked by name, not `*`: compiled (tools/compiled.py), a call with known
        # arguments is a direct C call, a starred one goes through Python's.
        rid, name, cost, timeout, exclude = acquire_fields(obj, max_timeout=max_timeout)
        return self._acquire(rid, name, cost, timeout, exclude, peer)

    def _acquire(
        self,
        rid: RequestId,
        name: str,
        cost: dict[str, float],
        timeout: float | None,
        exclude: frozenset[str],
        peer: Peer | None,
    ) -> Response | PendingAcquire:
        if self.stopping:
            raise _stopping()
        now = self._monotonic()
        provider = self.registry.providers.get(name) or self._provider(name, now)
        ignored: tuple[str, ...] = ()
        if cost is not ONE_REQUEST:
            # Units the provider does not limit never wait in a queue (protocol.md, acquire).
            cost, ignored = provider.limited_part(cost)
        # Grant at once on the first bucket, in the provider's order, that allows it: what
        # `choose_bucket` would pick when a bucket can serve now (a test checks them equal).
        # A paused bucket's limiter is held, so it never allows it; a bucket the learner may
        # have taken out (exhausted, disabled) and most_headroom with several keys (no
        # `order`) are left to `choose_bucket` below.
        order = provider.order
        count = len(order)
        start = provider.rotation % count if provider.rotating else 0
        for step in range(count):
            index = start + step
            if index >= count:
                index -= count
            bucket = order[index]
            queue: WaitQueue = bucket.queue
            if queue.live or (exclude and bucket.name in exclude):
                continue
            if self.learning_enforced:
                learner: BucketLearner = bucket.learner
                if learner.exhausted_until is not None or learner.disabled_until is not None:
                    break
            if bucket.limiter.try_take(cost, now) == 0.0:
                if provider.rotating:
                    provider.rotation = index + 1 if index + 1 < count else 0
                return self._granted(rid, bucket, cost, 0.0, now, peer, ignored)
        try:
            return self._wait_or_refuse(rid, provider, cost, timeout, exclude, peer, now, ignored)
        except RatelimitdError as exc:
            # Timeouts are counted where they happen; unknown providers get no series.
            if exc.code is not ErrorCode.TIMEOUT and name in self.registry.providers:
                self.metrics.on_acquire_error(name)
            raise

    def _wait_or_refuse(
        self,
        rid: RequestId,
        provider: Provider,
        cost: dict[str, float],
        timeout: float | None,
        exclude: frozenset[str],
        peer: Peer | None,
        now: float,
        ignored: tuple[str, ...],
    ) -> Response | PendingAcquire:
        """No bucket can grant at once: say why, or choose where to wait. (A granted cost
        fit its limits, so only here can it be one that never fits.)"""
        if cost is not ONE_REQUEST or not provider.one_request_fits:
            self._check_fits(provider, cost)
        request = AcquireRequest(rid, provider.name, cost, timeout, exclude)
        wait_at_most = self.default_timeout if timeout is None else timeout
        bucket = choose_bucket(provider, request, now, wait_at_most)
        queue: WaitQueue = bucket.queue
        if not queue.live and bucket.limiter.try_take(cost, now) == 0.0:
            return self._granted(rid, bucket, cost, 0.0, now, peer, ignored)
        delay = queue.estimate(cost, now)
        if delay > wait_at_most:
            # FIFO at a known rate: it cannot be served in time, so say so now.
            self._count_timeout(bucket, busy=timeout == 0)
            raise self._timeout_error(delay)
        if queue.live >= self.config.server.max_waiters:
            self._count_timeout(bucket)
            raise self._timeout_error(delay, "this bucket already holds max_waiters waiting requests")
        waiter = queue.push(cost, now)
        waiter.timeout_handle = self.loop.call_later(wait_at_most, self._expire, bucket, waiter)
        return PendingAcquire(request, bucket, waiter, peer, ignored)

    @staticmethod
    def _check_fits(provider: Provider, cost: dict[str, float]) -> None:
        """`cost_too_large` when a unit's cost exceeds its burst: it could never be granted."""
        # Every bucket of a provider has the same bursts, so the first one answers for all.
        limiter = next(iter(provider.buckets.values())).limiter
        too_big = limiter.never_fits(cost)
        if too_big is not None:
            burst = limiter.units[too_big].burst
            raise RatelimitdError(
                ErrorCode.COST_TOO_LARGE,
                f"cost: {cost[too_big]:g} {too_big} can never be granted by {provider.name!r}, "
                f"whose burst is {burst:g} {too_big}",
            )

    def _expire(self, bucket: Bucket, waiter: Waiter) -> None:
        now = self.clock.monotonic()
        retry_after = bucket.queue.estimate({}, now)
        self._count_timeout(bucket)
        bucket.queue.cancel(waiter, self._timeout_error(retry_after))

    def _count_timeout(self, bucket: Bucket, *, busy: bool = False) -> None:
        bucket.timeouts += 1
        if busy:  # a try-acquire (timeout 0) that found no permit: asked, not waited for
            self.metrics.on_busy(bucket)
        else:
            self.metrics.on_timeout(bucket)

    @staticmethod
    def _timeout_error(retry_after: float, why: str = "") -> RatelimitdError:
        message = f"no permit within the timeout; retry in about {retry_after:.3f} s"
        return RatelimitdError(
            ErrorCode.TIMEOUT,
            f"{message} ({why})" if why else message,
            retry_after=round(retry_after, 6),
        )

    def finish(self, pending: PendingAcquire) -> Response:
        """The response for a waiter whose future is done (raises its RatelimitdError)."""
        granted_at = pending.waiter.future.result()
        request = pending.request
        return self._granted(
            request.id,
            pending.bucket,
            request.cost,
            granted_at - pending.waiter.enqueued_at,
            granted_at,
            pending.peer,
            pending.ignored,
        )

    def abandon(self, pending: PendingAcquire) -> None:
        """The client went away: the waiting request is dropped and consumes nothing."""
        pending.bucket.queue.cancel(pending.waiter)

    def _granted(
        self,
        rid: RequestId,
        bucket: Bucket,
        cost: dict[str, float],
        waited: float,
        now: float,
        peer: Peer | None = None,
        ignored: tuple[str, ...] = (),
    ) -> Response:
        bucket.granted += 1
        self.metrics.on_granted(bucket, waited)
        # Typed locals: compiled (tools/compiled.py), their methods are called directly,
        # not looked up by name as on the bucket's untyped attributes.
        learner: BucketLearner = bucket.learner
        ledger: GrantLedger = bucket.ledger
        permit = learner.on_grant(now)
        ledger.remember(permit, cost, now)  # a report's `used` settles against it
        if peer is not None and not self.trusts(peer, bucket.provider):
            # Its report about this permit may then change the bucket (protocol.md).
            self.permit_owners.record(bucket.provider, bucket.name, permit, peer.uid)
        response: Response = {
            "id": rid,
            "ok": True,
            "provider": bucket.provider,
            "bucket": bucket.name,
            "waited": round(waited, 6) if waited else 0.0,
            "rate": bucket.limiter.primary.rate,
            "permit": permit,
        }
        if ignored:
            response["ignored_units"] = list(ignored)
        return response

    def report(self, request: ReportRequest, peer: Peer | None = None) -> Response:
        """The report op; raise RatelimitdError for the error response."""
        rid, name, bucket_name, status, permit, reason, retry_after, headers, used = request
        return self._report(rid, name, bucket_name, status, permit, reason, retry_after, headers, used, peer)

    def report_object(self, obj: dict[str, Any], peer: Peer | None = None) -> Response:
        """The report op from its decoded line (the transport's entry): every field is
        checked as `parse_object` checks it, with no request object built."""
        rid, name, bucket_name, status, permit, reason, retry_after, headers, used = report_fields(obj)
        return self._report(rid, name, bucket_name, status, permit, reason, retry_after, headers, used, peer)

    def _report(
        self,
        rid: RequestId,
        name: str,
        bucket_name: str,
        status: int | None,
        permit: int | None,
        reason: str | None,
        retry_after: float | None,
        headers: dict[str, str],
        used: dict[str, float] | None,
        peer: Peer | None,
    ) -> Response:
        if self.stopping:
            raise _stopping()
        now = self._monotonic()
        provider = self._provider(name, now)
        bucket = provider.buckets.get(bucket_name)
        if bucket is None:
            raise RatelimitdError(
                ErrorCode.BAD_REQUEST,
                f"bucket: provider {provider.name!r} has no bucket {bucket_name!r} "
                f"(buckets: {', '.join(provider.buckets)})",
            )
        if used is not None:
            self._check_used(provider, used)
        label = status_class(status)
        bucket.reports[label] += 1
        if (
            peer is not None
            and not self.trusts(peer, provider.name)
            and not self.permit_owners.held_by(provider.name, bucket.name, permit, peer.uid)
        ):
            # Counted, nothing else: an untrusted peer may not pause, cut or disable a
            # bucket for everyone with a report about a call it was not granted.
            self.untrusted_reports += 1
            self._log_untrusted("report ignored", peer, provider.name)
            return {
                "id": rid,
                "ok": True,
                "provider": provider.name,
                "bucket": bucket.name,
                "rate": bucket.limiter.primary.rate,
                "streak": bucket.learner.streak,
                "action": "none",
                "trusted": False,
                **({"settled": False} if used is not None else {}),
            }
        if label == "429":
            note_429(bucket, now)
        hint = None
        if headers:
            profile = PROFILES.get(provider.config.profile or "")
            hint = parse_headers(
                headers,
                status=status,
                now_wall=self.clock.wall(),
                trust=provider.config.trust_headers,
                conventions=None if profile is None else profile.headers,
                # A wait past max_pause needs quota evidence, else it is capped and counted.
                max_pause=self.config.learning.max_pause,
                quota_evidence=reason in QUOTA_REASONS,
            )
            # Malformed headers never fail a report: ignored, and counted here.
            bucket.malformed_headers += hint.malformed
            bucket.suspicious_headers += len(hint.suspicious)
        learner: BucketLearner = bucket.learner
        # Built as a plain tuple (ReportEvent's fields, in order): a third of its keyword call.
        event = _new_tuple(ReportEvent, (status, status is None, permit, reason, retry_after, hint))
        decision = learner.learn(event, now)
        if decision is None:
            # Most reports: a success that changed nothing the limiter follows. What it did
            # change (the streak, the policy's counts) is saved with the rest.
            self.changed = True
            action = "none"
        else:
            if decision.action == "none" and label not in ("1xx", "2xx", "3xx"):
                # A failure that changed nothing still belongs in the bucket's bounded history.
                factor = learner.factor
                learner.history.append(
                    HistoryEntry(
                        at_monotonic=now,
                        kind="report",
                        status=status,
                        factor_before=factor,
                        factor_after=factor,
                        reason=reason or decision.reason or label,
                    )
                )
            why = pause_cause(status, retry_after, hint) if decision.pause_until else None
            action = self._apply(bucket, decision, now, why)
        response: Response = {
            "id": rid,
            "ok": True,
            "provider": provider.name,
            "bucket": bucket.name,
            "rate": bucket.limiter.primary.rate,
            "streak": learner.streak,
            "action": action,
        }
        if used is not None:
            response["settled"] = self._settle(bucket, permit, used, now)
        return response

    @staticmethod
    def _check_used(provider: Provider, used: dict[str, float]) -> None:
        """`bad_request` for a unit the provider does not limit: most likely a typo (`tokns`)."""
        units = next(iter(provider.buckets.values())).limiter.units
        for unit in used:
            if unit not in units:
                raise RatelimitdError(
                    ErrorCode.BAD_REQUEST,
                    f"used.{unit}: provider {provider.name!r} does not limit {unit!r} "
                    f"(units: {', '.join(units)})",
                )

    @staticmethod
    def _settle(bucket: Bucket, permit: int | None, used: dict[str, float], now: float) -> bool:
        """Take or give back the difference between `used` and the grant's cost (protocol.md)."""
        granted = None if permit is None else bucket.ledger.take(permit)
        if granted is None:
            return False
        bucket.limiter.settle(settlement(granted, used), now)
        bucket.queue.reschedule()  # tokens given back may serve a waiter now
        return True

    @property
    def providers(self) -> dict[str, Provider]:
        """Every provider by name (the registry's own dict: read, do not change)."""
        return self.registry.providers

    def status(self, request: StatusRequest) -> Response:
        """The whole answer at once (one provider, tests); transports write `status_slices`."""
        body: Response = orjson.loads(b"".join(self.status_slices(request)))
        return body

    def status_slices(self, request: StatusRequest, *, with_id: bool = True) -> StatusSlices:
        """The answer in pieces, so a status of many providers never stops the loop for long."""
        extra: dict[str, Any] = {"daemon": self.daemon_status}
        if self.backend is not None:
            extra["backend"] = self.backend.status()
        return status_slices(self.registry, self.clock, request, with_id=with_id, extra=extra)

    def statistics(self, provider: str | None = None, *, history: bool = True) -> dict[str, ProviderStats]:
        """Snapshots of every provider (or one); `history=False` skips the per-bucket history
        (metrics never read it, and building it is most of a scrape's cost)."""
        now, wall = self.clock.monotonic(), self.clock.wall()
        providers = self.registry.providers
        if provider is not None:
            if provider not in providers:
                raise RatelimitdError(ErrorCode.UNKNOWN_PROVIDER, f"provider: no provider named {provider!r}")
            chosen = {provider: providers[provider]}
        else:
            chosen = providers
        return {name: provider_statistics(p, now, wall, history=history) for name, p in chosen.items()}

    def reset(self, request: ResetRequest, peer: Peer | None = None) -> Response:
        now = self.clock.monotonic()
        if peer is not None and not self.trusts(peer, request.provider):
            self._log_untrusted("reset refused", peer, request.provider)
            raise RatelimitdError(
                ErrorCode.FORBIDDEN,
                f"provider: uid {peer.uid} may not reset {request.provider!r} "
                "(not among the peers the daemon trusts for it)",
            )
        provider = self.registry.providers.get(request.provider)
        if provider is None:
            raise RatelimitdError(
                ErrorCode.UNKNOWN_PROVIDER, f"provider: no provider named {request.provider!r}"
            )
        if request.bucket is not None and request.bucket not in provider.buckets:
            raise RatelimitdError(
                ErrorCode.BAD_REQUEST,
                f"bucket: provider {provider.name!r} has no bucket {request.bucket!r}",
            )
        names = [request.bucket] if request.bucket is not None else list(provider.buckets)
        for name in names:
            bucket = provider.buckets[name]
            factor_before = bucket.limiter.scale
            bucket.learner.reset(now)
            bucket.applied_pause = None
            bucket.limiter.set_scale(1.0, now)
            bucket.limiter.release_hold(now)
            self._apply(bucket, None, now)
            note_reset(bucket, factor_before=factor_before, now=now)
            if self.backend is not None:
                self.backend.reset(bucket)
        self.changed = True
        logger.info(
            "reset %s buckets %s",
            provider.name,
            ",".join(names),
            extra={"event": "reset", "provider": provider.name, "reason": "reset"},
        )
        return {"id": request.id, "ok": True, "provider": provider.name, "buckets": names}

    # -- lifecycle ------------------------------------------------------------------------------

    def drop_idle(self) -> list[str]:
        """Drop providers created on first use that were idle for `server.idle_ttl` seconds.

        Idle means no acquire, report or waiter since an earlier call: activity is read
        from the buckets' counters here, so the acquire path pays nothing for it. Call
        it as often as you like: it looks at most every `min(5 s, idle_ttl / 4)`, so a
        provider is dropped at most that late. Each bucket goes
        through `on_drop` first (its learned state is kept for a later first use).
        """
        ttl = self.config.server.idle_ttl
        now = self.clock.monotonic()
        if ttl <= 0 or now - self._last_sweep < min(5.0, ttl / 4):
            return []
        self._last_sweep = now
        dropped = []
        activity = self._activity
        for name, provider in list(self.registry.providers.items()):
            if provider.configured:
                continue
            buckets = provider.buckets.values()
            count = sum(b.granted + b.timeouts + sum(b.reports.values()) + b.queue.live for b in buckets)
            seen = activity.get(name)
            if seen is None or seen[0] != count or any(b.queue.live for b in buckets):
                activity[name] = (count, now)
                continue
            if now - seen[1] < ttl:
                continue
            for bucket in buckets:
                self.on_drop(bucket)
            del self.registry.providers[name]
            del activity[name]
            self.metrics.on_provider_dropped(name)
            dropped.append(name)
        for name in [n for n in activity if n not in self.registry.providers]:
            del activity[name]  # removed otherwise (reload)
        if dropped:
            logger.info(
                "dropped %d providers idle for %g s: %s",
                len(dropped),
                ttl,
                ", ".join(dropped[:10]) + (" ..." if len(dropped) > 10 else ""),
                extra={"event": "idle_dropped"},
            )
        return dropped

    def waiting(self) -> int:
        return sum(b.queue.live for b in self.registry.buckets())

    def shut_down(self) -> None:
        """Refuse new work and answer every waiting acquire with `shutting_down`."""
        self.stopping = True
        for bucket in self.registry.buckets():
            bucket.queue.fail_all(_stopping())

    def reload(self, config: Config) -> None:
        """Apply a new config, keeping learned state and waiting acquires."""
        now = self.clock.monotonic()
        registry = self.registry
        registry.config = config
        self.config = config
        self.default_timeout = config.server.default_timeout
        for name, provider_config in config.providers.items():
            provider = registry.providers.get(name)
            if provider is None:
                registry.providers[name] = Provider(provider_config, configured=True, now=now)
                for bucket in registry.providers[name].buckets.values():
                    self._attach(bucket)
                continue
            provider.configured = True
            for bucket in provider.reconfigure(provider_config, now):
                bucket.queue.fail_all(
                    RatelimitdError(
                        ErrorCode.UNKNOWN_PROVIDER,
                        f"bucket {bucket.name!r} was removed by a reload",
                    )
                )
            for bucket in provider.buckets.values():
                if bucket.queue is None:
                    self._attach(bucket)
                    continue
                # The limiter was rebuilt with the new limits: re-apply what was learned.
                if self.backend is not None:
                    self.backend.attach(bucket)
                bucket.learner.baseline_rate = baseline_rate(bucket)
                bucket.learner.set_retry_after_scope(provider_config.retry_after_scope)
                bucket.applied_pause = None
                self._apply(bucket, None, now)
        for name in [n for n, p in registry.providers.items() if p.configured and n not in config.providers]:
            provider = registry.providers.pop(name)
            for bucket in provider.buckets.values():
                bucket.queue.fail_all(
                    RatelimitdError(ErrorCode.UNKNOWN_PROVIDER, f"provider {name!r} was removed by a reload")
                )

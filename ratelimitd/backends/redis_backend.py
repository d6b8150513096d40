"""Buckets shared by many hosts through one Redis (or Valkey, or a Redis Cluster).

Shell: redis-py's asyncio client on the daemon's loop. No acquire waits on Redis: each
bucket's `LeasedLimiter` grants locally from a lease, and this module keeps the leases
topped up in the background (one refill in flight per bucket), gives unused leases back,
shares what the learners decide (compare-and-set, then pub/sub wakes the other hosts),
and when Redis is slow or gone switches every bucket to local limiting at
`fallback_share` of the rate, reconnects with backoff and re-syncs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import TYPE_CHECKING, Any, cast

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoScriptError, RedisError, ResponseError

from ratelimitd.backends import scripts
from ratelimitd.backends.shared_learning import NOTHING_LEARNED, adopt, relative_snapshot, signature
from ratelimitd.core.lease import LeasedLimiter, LeaseSettings

if TYPE_CHECKING:
    from collections.abc import Coroutine, Iterable

    from ratelimitd.core.learning.learner import Decision
    from ratelimitd.core.providers import Bucket
    from ratelimitd.core.readiness import Readiness
    from ratelimitd.daemon.backend_config import BackendConfig
    from ratelimitd.daemon.service import Service

__all__ = ("BackendDown", "RedisBackend")

logger = logging.getLogger(__name__)

IDLE_RETURN = 1.0  # seconds without a grant after which a host gives its lease back
HOUSEKEEPING = 0.5  # seconds between idle checks (and a PING when nothing else talked to Redis)
_FAILURES = (RedisError, OSError, TimeoutError)


class BackendDown(Exception):
    """A Redis call failed or was late; the backend is in fallback now."""


class _Shared:
    """One bucket as this host shares it."""

    __slots__ = (
        "bucket",
        "dirty",
        "gcra_key",
        "learned_key",
        "leased",
        "limiter",
        "message_prefix",
        "publishing",
        "returned",
        "signature",
        "version",
    )

    limiter: LeasedLimiter  # set by `attach`, again after each reload

    def __init__(self, bucket: Bucket, prefix: str, host_id: str) -> None:
        self.bucket = bucket
        tag = f"{{{bucket.provider}:{bucket.name}}}"  # one hash tag: one Cluster slot per bucket
        self.gcra_key = f"{prefix}{tag}:gcra"
        self.learned_key = f"{prefix}{tag}:learned"
        self.message_prefix = f"{bucket.provider}\t{bucket.name}\t{host_id}\t"
        self.version = 0  # of the learned state this host last wrote or adopted
        self.signature = NOTHING_LEARNED
        self.publishing = False
        self.dirty = False  # learned something while a write was in flight or Redis was down
        self.leased = 0.0  # units of the primary unit leased so far
        self.returned = 0.0


def describe(exc: BaseException) -> str:
    """Why a Redis call failed, for people (never carries the password)."""
    if isinstance(exc, AuthenticationError):
        return f"authentication failed: {exc} (check the user and RATELIMITD_REDIS_PASSWORD)"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "no answer in time"
    text = str(exc) or type(exc).__name__
    if "ssl" in text.lower() or "tls" in text.lower() or "wrong version number" in text.lower():
        return f"TLS failed: {text} (is the server speaking TLS? rediss:// expects it)"
    return text


class RedisBackend:
    def __init__(self, config: BackendConfig, service: Service, readiness: Readiness) -> None:
        self.config = config
        self.service = service
        self.readiness = readiness
        self.url = config.display_url
        self.settings = LeaseSettings(config.lease_time, config.lease_max_share, config.fallback_share)
        self.client = self._client(socket_timeout=config.timeout, cluster=config.cluster)
        self.listener = self._client(socket_timeout=None, cluster=False)
        self.channel = f"{config.key_prefix}learned"
        self.shared: dict[tuple[str, str], _Shared] = {}
        self.up = False
        self.reason = "not connected yet"
        self.round_trips = 0
        self.failures = 0
        self.fallbacks = 0
        self._rate = 0.0  # round trips per second over the last housekeeping interval
        self._counted = (0, 0.0)
        self._sha = {name: hashlib.sha1(text.encode()).hexdigest() for name, text in _SCRIPTS.items()}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reconnecting: asyncio.Task[None] | None = None
        self._listening: asyncio.Task[None] | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._last_call = 0.0
        self.closing = False
        readiness.set("backend", False, f"connecting to Redis at {self.url}")

    def _client(self, *, socket_timeout: float | None, cluster: bool) -> Any:
        c = self.config
        options: dict[str, Any] = {
            "username": c.username,
            "password": c.password,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": c.connect_timeout,
            "retry": Retry(NoBackoff(), 0),  # our own deadline and fallback decide, not retries
        }
        if cluster:
            del options["retry"]
            return RedisCluster.from_url(c.url, cluster_error_retry_attempts=1, **options)
        return aioredis.Redis.from_url(c.url, **options)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (bounded by `connect_timeout`); on failure start in fallback and keep trying."""
        try:
            await self._connect(self.config.connect_timeout)
        except (BackendDown, *_FAILURES) as exc:
            self.reason = self._describe(exc)
            logger.warning(
                "backend: Redis at %s is unreachable at start (%s): limiting locally at %g of the "
                "rate per host until it answers",
                self.url,
                self.reason,
                self.config.fallback_share,
            )
            self.readiness.set("backend", False, f"Redis unreachable ({self.reason}); local fallback")
            self._reconnecting = self._spawn(self._reconnect())
        self._housekeeping = asyncio.get_running_loop().create_task(self._housekeep())

    async def close(self) -> None:
        """Give every unused lease back, then disconnect."""
        for task in (self._reconnecting, self._listening, self._housekeeping):
            if task is not None:
                task.cancel()
        if self.up:
            for shared in list(self.shared.values()):
                held = shared.limiter.take_back()
                if held:
                    try:
                        await self._give_back(shared, held)
                    except BackendDown:
                        break
        self.closing = True
        if self._tasks:  # refills and writes in flight end within a call's deadline
            await asyncio.wait(list(self._tasks), timeout=2 * self._slow_deadline)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in (self.client, self.listener):
            with contextlib.suppress(*_FAILURES):
                await client.aclose()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _soon(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` in the background; Redis being down is handled where it is noticed."""
        if self.closing:
            coro.close()
            return
        _ = self._spawn(self._quietly(coro))

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, BackendDown) and exc.__cause__ is not None:
            exc = exc.__cause__
        text = describe(exc)
        if text == "no answer in time" and self.config.url.startswith("rediss://"):
            text += " (does the server speak TLS? a plain server never answers a TLS handshake)"
        return text

    @property
    def _slow_deadline(self) -> float:
        """Fetching a learned state is rare and may be larger than a lease: more time."""
        return max(self.config.timeout, 0.5)

    def _now(self) -> float:
        return self.service.clock.monotonic()

    # -- the seam (daemon.backend.Backend) ------------------------------------------------------

    def attach(self, bucket: Bucket) -> None:
        key = (bucket.provider, bucket.name)
        shared = self.shared.get(key)
        if shared is not None and shared.limiter is bucket.limiter:
            return
        now = self._now()
        if shared is not None:
            held = shared.limiter.take_back()  # a reload rebuilt the limiter: its lease goes back
            if held and self.up:
                self._soon(self._give_back(shared, held))
        fresh = shared is None
        if shared is None:
            shared = _Shared(bucket, self.config.key_prefix, self.config.host_id)
            self.shared[key] = shared
        owner = shared
        limiter = LeasedLimiter.replacing(
            bucket.limiter, now, self.settings, lambda: self._on_low(owner), fallback=not self.up
        )
        bucket.limiter = limiter
        shared.bucket = bucket
        shared.limiter = limiter
        if fresh and self.up:
            self._soon(self._sync(shared))

    def learned(self, bucket: Bucket, decision: Decision) -> None:
        del decision  # what matters is the learner's state after it
        shared = self.shared.get((bucket.provider, bucket.name))
        if shared is None:
            return
        now = self._now()
        mark = signature(bucket.learner, now)
        if mark == shared.signature:
            return  # nothing the other hosts must follow
        shared.signature = mark
        if not self.up or shared.publishing:
            shared.dirty = True  # written when Redis answers again / after the write in flight
            return
        self._soon(self._publish(shared))

    def reset(self, bucket: Bucket) -> None:
        shared = self.shared.get((bucket.provider, bucket.name))
        if shared is None:
            return
        shared.signature = NOTHING_LEARNED
        if self.up:
            self._soon(self._publish(shared, reset=True))
        else:
            shared.dirty = True

    def status(self) -> dict[str, Any]:
        buckets = {}
        for (provider, name), shared in self.shared.items():
            limiter = shared.limiter
            buckets[f"{provider}/{name}"] = {
                "global_rate": limiter.primary.baseline * limiter.scale,
                "factor": limiter.scale,
                "lease": {unit: round(amount, 6) for unit, amount in limiter.balance.items()},
                "leased": round(shared.leased, 6),
                "returned": round(shared.returned, 6),
                "learned_version": shared.version,
                "fallback": limiter.fallback,
            }
        return {
            "kind": "redis",
            "url": self.url,
            "host_id": self.config.host_id,
            "cluster": self.config.cluster,
            "up": self.up,
            "reason": None if self.up else self.reason,
            "fallback_share": self.config.fallback_share,
            "round_trips": self.round_trips,
            "round_trips_per_second": round(self._rate, 3),
            "failures": self.failures,
            "fallbacks": self.fallbacks,
            "buckets": buckets,
        }

    # -- Redis calls ----------------------------------------------------------------------------

    async def _call(
        self, name: str, keys: list[str], args: Iterable[object], deadline: float = 0.0
    ) -> list[Any]:
        """Run script `name`; any failure or lateness raises BackendDown (after falling back)."""
        self.round_trips += 1
        self._last_call = self._now()
        argv = [a if isinstance(a, str | bytes | int) else repr(a) for a in args]
        try:
            async with asyncio.timeout(deadline or self.config.timeout):
                try:
                    reply = await self.client.evalsha(self._sha[name], len(keys), *keys, *argv)
                except NoScriptError:
                    # SCRIPT FLUSH, a restarted or failed-over server: EVAL loads it again.
                    reply = await self.client.eval(_SCRIPTS[name], len(keys), *keys, *argv)
        except _FAILURES as exc:
            if isinstance(exc, ResponseError) and not isinstance(exc, AuthenticationError):
                logger.error("backend: Redis at %s refused the %s script: %s", self.url, name, exc)
            self._went_down(exc)
            raise BackendDown(self._describe(exc)) from exc
        return cast("list[Any]", reply)

    async def _quietly(self, coro: Coroutine[Any, Any, None]) -> None:
        with contextlib.suppress(BackendDown):
            await coro

    def _units(self, limiter: LeasedLimiter) -> list[object]:
        args: list[object] = [len(limiter.units)]
        for unit, limit in limiter.units.items():
            args += [unit, limit.baseline, limit.burst]
        return args

    # -- leases ---------------------------------------------------------------------------------

    def _on_low(self, shared: _Shared) -> None:
        """The limiter runs low or a waiter needs more (called from the acquire path)."""
        if self.up:
            self._soon(self._refill(shared, shared.limiter))
        else:
            shared.limiter.refilling = False

    async def _refill(self, shared: _Shared, limiter: LeasedLimiter) -> None:
        try:
            while True:
                request = limiter.lease_request(self._now())
                if not request or not self.up or shared.limiter is not limiter:
                    limiter.refilling = False
                    return
                args: list[object] = [len(request)]
                for unit, (least, most) in request.items():
                    limit = limiter.units[unit]
                    args += [unit, limit.baseline, limit.burst, least, most]
                reply = await self._call("take", [shared.gcra_key], args)
                now = self._now()
                if reply[0] == b"1":
                    n = len(request)
                    granted = {
                        unit: float(amount) for unit, amount in zip(request, reply[1 : 1 + n], strict=True)
                    }
                    left = {
                        unit: float(amount) for unit, amount in zip(request, reply[1 + n :], strict=False)
                    }
                    shared.leased += granted.get(limiter.primary_unit(), 0.0)
                    if shared.limiter is not limiter or limiter.fallback:
                        limiter.refilling = False
                        await self._give_back(shared, granted)
                        return
                    limiter.credit(granted, now, left)
                    shared.bucket.queue.reschedule()  # waiters first; may ask for the next lease
                    return
                retry = float(reply[1])
                limiter.denied(retry, now)
                if not shared.bucket.queue.live:
                    limiter.need.clear()
                    limiter.refilling = False
                    return
                await asyncio.sleep(min(retry, 1.0))
        except BaseException:
            limiter.refilling = False
            raise

    async def _give_back(self, shared: _Shared, held: dict[str, float]) -> None:
        args: list[object] = [len(held)]
        for unit, amount in held.items():
            args += [unit, amount]
        await self._call("give_back", [shared.gcra_key], args)
        shared.returned += held.get(shared.limiter.primary_unit(), 0.0)

    # -- shared learning ------------------------------------------------------------------------

    async def _publish(self, shared: _Shared, *, reset: bool = False) -> None:
        """Write this host's learned state (compare-and-set); on a lost race adopt the winner's."""
        shared.publishing = True
        try:
            while True:
                shared.dirty = False
                learner = shared.bucket.learner
                now = self._now()
                pause = learner.pause_until
                args: list[object] = [
                    -1 if reset else shared.version,
                    self.config.host_id,
                    orjson.dumps(relative_snapshot(learner, now)),
                    learner.factor,
                    max(0.0, pause - now) if pause is not None else 0.0,
                    1 if reset else 0,
                    self.channel,
                    shared.message_prefix,
                    *self._units(shared.limiter),
                ]
                reply = await self._call("learn", [shared.learned_key, shared.gcra_key], args)
                if reply[0] == b"1":
                    shared.version = int(reply[1])
                    shared.signature = signature(learner, self._now())
                else:
                    logger.debug("backend: %s/%s learned elsewhere first", *_label(shared))
                    await self._adopt(shared)
                if not shared.dirty:
                    return
                reset = False
        except BackendDown:
            shared.dirty = True  # written when Redis answers again (`_sync`)
            raise
        finally:
            shared.publishing = False

    async def _adopt(self, shared: _Shared) -> None:
        """Follow the learned state in Redis if it is newer than what this host has."""
        version, snapshot, age, host = await self._call(
            "fetch", [shared.learned_key], [], deadline=self._slow_deadline
        )
        if not version or int(version) == shared.version:
            return
        now = self._now()
        bucket = shared.bucket
        try:
            learner = adopt(
                self.service.settings_for(bucket), bucket.learner, orjson.loads(snapshot), float(age), now
            )
        except (ValueError, TypeError, KeyError, orjson.JSONDecodeError) as exc:
            logger.warning("backend: learned state of %s/%s in Redis is malformed: %s", *_label(shared), exc)
            return
        bucket.learner = learner
        shared.version = int(version)
        shared.signature = signature(learner, now)
        # The adopted pause replaces this host's (a reset elsewhere ends it here too).
        bucket.applied_pause = None
        bucket.limiter.release_hold(now)
        self.service.apply_learner(bucket)
        logger.info(
            "backend: %s/%s follows what %s learned (factor %.3f)",
            *_label(shared),
            host.decode(errors="replace"),
            learner.factor,
        )

    async def _sync(self, shared: _Shared) -> None:
        """Join the fleet: what this host learned while apart goes in (compare-and-set on the
        version there now); otherwise adopt Redis's state, or give Redis ours if it has none."""
        reply = await self._call("fetch", [shared.learned_key], [], deadline=self._slow_deadline)
        there = int(reply[0]) if reply[0] else 0
        if shared.dirty:
            shared.version = there
            await self._publish(shared)  # a host that decided in the meantime wins: adopted
        elif there and there != shared.version:
            await self._adopt(shared)
        elif not there and signature(shared.bucket.learner, self._now()) != NOTHING_LEARNED:
            shared.version = 0  # Redis is new or restarted empty: it gets our state back
            await self._publish(shared)

    async def _listen(self) -> None:
        """Wake on other hosts' learned state (pub/sub); any failure means Redis is down."""
        pubsub = self.listener.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None:
                    continue
                parts = bytes(message["data"]).decode(errors="replace").split("\t")
                if len(parts) != 4 or parts[2] == self.config.host_id:
                    continue
                shared = self.shared.get((parts[0], parts[1]))
                if shared is not None and parts[3].isdigit() and int(parts[3]) != shared.version:
                    self._soon(self._adopt(shared))
        except _FAILURES as exc:
            self._went_down(exc)
        finally:
            with contextlib.suppress(*_FAILURES):
                await pubsub.aclose()

    # -- up and down ----------------------------------------------------------------------------

    async def _connect(self, deadline: float) -> None:
        """PING, re-sync every bucket, then leave fallback (raises on failure)."""
        self.round_trips += 1
        async with asyncio.timeout(deadline):
            await self.client.ping()
        self.up = True  # calls below may fail and put us back down
        for shared in list(self.shared.values()):
            await self._sync(shared)
        if not self.up:
            raise BackendDown(self.reason)
        now = self._now()
        for shared in self.shared.values():
            shared.limiter.leave_fallback(now)
            shared.bucket.queue.reschedule()
        self.readiness.set("backend", True)
        self._listening = self._spawn(self._listen())
        logger.info(
            "backend: connected to Redis at %s as host %r: %d buckets shared",
            self.url,
            self.config.host_id,
            len(self.shared),
        )

    def _went_down(self, exc: BaseException) -> None:
        self.failures += 1
        if not self.up:
            return
        self.up = False
        self.fallbacks += 1
        self.reason = self._describe(exc)
        logger.warning(
            "backend: Redis at %s failed (%s): limiting locally at %g of the rate per host until it answers",
            self.url,
            self.reason,
            self.config.fallback_share,
        )
        self.readiness.set("backend", False, f"Redis unreachable ({self.reason}); local fallback")
        now = self._now()
        for shared in self.shared.values():
            shared.limiter.enter_fallback(now)
            shared.bucket.queue.reschedule()
        if self._listening is not None:
            self._listening.cancel()
            self._listening = None
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = self._spawn(self._reconnect())

    async def _reconnect(self) -> None:
        delay = self.config.reconnect_min
        while not self.up:
            await asyncio.sleep(delay)
            try:
                await self._connect(max(self.config.timeout, min(delay, self.config.connect_timeout)))
            except (BackendDown, *_FAILURES) as exc:
                self.up = False
                self.reason = self._describe(exc)
                delay = min(delay * 2, self.config.reconnect_max)
                continue
            logger.info("backend: Redis at %s answers again: shared limits again", self.url)

    def _still_served(self, shared: _Shared) -> bool:
        provider = self.service.registry.providers.get(shared.bucket.provider)
        return provider is not None and provider.buckets.get(shared.bucket.name) is shared.bucket

    async def _housekeep(self) -> None:
        """Give idle leases back; PING when nothing else talked to Redis (finds it gone)."""
        while True:
            await asyncio.sleep(HOUSEKEEPING)
            now = self._now()
            count, since = self._counted
            if since:
                self._rate = (self.round_trips - count) / (now - since)
            self._counted = (self.round_trips, now)
            if not self.up:
                continue
            try:
                for key, shared in list(self.shared.items()):
                    limiter = shared.limiter
                    if not self._still_served(shared):
                        # Dropped (idle provider, removed by a reload): its lease goes back.
                        del self.shared[key]
                        held = limiter.take_back()
                        if held:
                            await self._give_back(shared, held)
                        continue
                    if (
                        not limiter.fallback
                        and now - limiter.last_grant > IDLE_RETURN
                        and not limiter.refilling
                    ):
                        held = limiter.take_back()
                        if held:
                            await self._give_back(shared, held)
                if now - self._last_call > HOUSEKEEPING:
                    self.round_trips += 1
                    self._last_call = now
                    try:
                        async with asyncio.timeout(self.config.timeout):
                            await self.client.ping()
                    except _FAILURES as exc:
                        self._went_down(exc)
            except BackendDown:
                continue


def _label(shared: _Shared) -> tuple[str, str]:
    return shared.bucket.provider, shared.bucket.name


_SCRIPTS = {
    "take": scripts.TAKE,
    "give_back": scripts.GIVE_BACK,
    "learn": scripts.LEARN,
    "fetch": scripts.FETCH,
}

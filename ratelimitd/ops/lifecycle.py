"""The daemon's lifecycle: build from a Config, start, serve, reload, drain, stop.

Start, in order (each step undone in reverse on the way out):
  1. config (already loaded by the caller); the open-file limit raised to the hard limit
  2. learned state (when the persist gate is on)
  3. the core: registry, service
  4. HTTP: metrics and health (when enabled)
  5. the Unix socket: taken from systemd (LISTEN_FDS) or bound here
  6. READY=1 to systemd, and the watchdog ping from the event loop
Stop (SIGTERM/SIGINT):
  1. STOPPING=1, readiness false
  2. stop accepting connections
  3. every waiting acquire and every new request gets `shutting_down`
  4. flush answers, close connections (bounded by shutdown_timeout; a second signal
     closes them at once)
  5. save learned state, close HTTP, remove the socket file if it is still the one bound here
  (a third signal exits at once, saving nothing)
Reload (SIGHUP): RELOADING=1, re-read the config, apply it keeping learned state and
waiters (a config that fails to load is logged and the running one stays), READY=1.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import resource
import signal
import socket
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from ratelimitd import __version__
from ratelimitd.core.errors import ConfigError
from ratelimitd.core.learning.persist import snapshot, snapshot_problem
from ratelimitd.core.paths import default_socket_path, default_state_path
from ratelimitd.core.readiness import Readiness
from ratelimitd.daemon.clock import Clock, SystemClock
from ratelimitd.daemon.config import Config, load_config
from ratelimitd.daemon.learned_state import collect_snapshots, restore_learners
from ratelimitd.daemon.server import UnixServer
from ratelimitd.daemon.service import Service
from ratelimitd.daemon.unix_socket import BoundSocket, bind_unix_socket
from ratelimitd.ops.logs import flush_event_limits
from ratelimitd.ops.persist import PeriodicSaver, StateStore
from ratelimitd.ops.systemd import Notifier, listen_fds, run_watchdog

TICK_INTERVAL = 0.25  # seconds between learning ticks (recovery steps, ends of pauses)
SLOW_TICKS = 20  # every this many ticks (5 s): housekeeping

if TYPE_CHECKING:
    from collections.abc import Callable, MutableMapping

    from ratelimitd.core.providers import Bucket
    from ratelimitd.ops.http import HttpServer

__all__ = ("Daemon", "raise_fd_limit")

logger = logging.getLogger(__name__)


class Daemon:
    """One running ratelimitd; `run()` returns when it has stopped."""

    def __init__(
        self,
        config: Config,
        *,
        environ: MutableMapping[str, str],
        config_path: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.environ = environ
        self.config_path = config_path
        self.clock: Clock = clock or SystemClock()
        self.notifier = Notifier(environ)
        self.service: Service | None = None
        self.server: UnixServer | None = None
        self.socket_path: Path | None = None
        self.bound: BoundSocket | None = None  # the socket file bound here (not systemd's)
        self.readiness = Readiness(config="loading", state="loading", socket="not bound yet")
        self.store: StateStore | None = None
        self.http: HttpServer | None = None  # when HTTP is enabled
        self.reloads: dict[str, int] = {"success": 0, "failure": 0}
        self.last_reload_success_wall: float | None = None
        self.last_reload_failed = False
        self._socket_identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the bound path
        self._last_reload_error: str | None = None
        self.backend: object | None = None  # the RedisBackend, with `[backend] kind = "redis"`
        self._dirty = False
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()  # a second stop signal: skip the rest of the drain
        self._reloads: list[asyncio.Task[None]] = []
        self.on_reload: list[Callable[[Config], None]] = []  # extra components follow reloads

    # -- signals only set state (uvicorn's handle_exit) -----------------------------------------

    def request_stop(self) -> None:
        if self._hurry.is_set():
            logger.warning("third stop signal: exiting now, without saving state")
            os._exit(1)
        if self._stop.is_set():
            # Impatience cuts the drain short; the state is still saved and the socket removed.
            logger.warning("second stop signal: closing connections now")
            self._hurry.set()
            return
        logger.info("stop requested")
        self._stop.set()

    def request_reload(self) -> None:
        self._reloads.append(asyncio.get_running_loop().create_task(self._reload()))
        self._reloads = [task for task in self._reloads if not task.done()]

    @property
    def ready(self) -> bool:
        return self.readiness.ready

    # -- lifecycle ------------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        async with AsyncExitStack() as stack:
            self.notifier.status("starting")
            raise_fd_limit()
            self.readiness.set("config", True)
            self.service = service = Service(self.config, self.clock, loop)
            await self._start_state(stack, service)
            await self._start_backend(stack, service)
            await self._start_http(stack, service)
            sock = self._listening_socket()
            if self.bound is not None:
                stack.callback(self.bound.remove_file)
            service.set_socket_gid(self._socket_gid())
            self.server = server = UnixServer(
                service,
                max_line_bytes=self.config.server.max_line_bytes,
                max_connections=self.config.server.max_connections,
                max_connections_per_uid=self.config.server.max_connections_per_uid,
                idle_timeout=self.config.server.idle_timeout,
            )
            await server.start(sock)
            self._socket_identity = self._path_identity()
            self.readiness.set("socket", True)
            self.check_readiness()
            ticker = loop.create_task(self._tick_forever(service))
            stack.callback(ticker.cancel)
            for sig, handler in (
                (signal.SIGTERM, self.request_stop),
                (signal.SIGINT, self.request_stop),
                (signal.SIGHUP, self.request_reload),
            ):
                loop.add_signal_handler(sig, handler)
                stack.callback(loop.remove_signal_handler, sig)
            watchdog = self.notifier.watchdog_interval()
            if watchdog is not None:
                task = loop.create_task(run_watchdog(self.notifier, watchdog))
                stack.callback(task.cancel)
            logger.info(
                "ratelimitd serving on %s (%d providers configured)",
                self.socket_path,
                len(self.config.providers),
            )
            # What startup built (thousands of providers, their learners and limiters) lives
            # as long as the daemon: out of the cyclic collector's reach, so its full passes
            # (over 100 ms with 10,000 providers) no longer stop the loop now and then.
            gc.freeze()
            self.notifier.ready(f"serving on {self.socket_path}")
            await self._stop.wait()
            await self._shut_down(server, service)

    async def _shut_down(self, server: UnixServer, service: Service) -> None:
        self.notifier.stopping("stopping: answering waiters with shutting_down")
        self.readiness.set("stopping", False, "stopping")
        await self._let_prometheus_see_it()
        server.stop_accepting()
        waiting = service.waiting()
        service.shut_down()
        await asyncio.sleep(0)  # the waiters' done callbacks (call_soon) queue their answers
        logger.info("stopping: answered %d waiting acquires with shutting_down", waiting)
        # Let the answers be written before the connections close.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.server.shutdown_timeout / 2):
                while not self._hurry.is_set() and any(c.has_unsent() for c in server.connections):  # noqa: ASYNC110 (no event for "buffer drained")
                    await asyncio.sleep(0.01)
        server.close_connections()
        await asyncio.sleep(0)

    async def _let_prometheus_see_it(self) -> None:
        """While still serving, wait for the next /metrics scrape (ready 0) when something
        scrapes this daemon regularly: at most 1.5 scrape intervals and `shutdown_timeout`."""
        http = self.http
        if http is None:
            return
        interval = http.scrape_interval()
        if interval is None:
            return
        seen = http.scrapes
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(1.5 * interval, self.config.server.shutdown_timeout)):
                while http.scrapes == seen:  # noqa: ASYNC110 (a scrape sets no event; 50 ms polls are cheap)
                    await asyncio.sleep(0.05)

    def _path_identity(self) -> tuple[int, int] | None:
        """(device, inode) of the socket path now; None when it is gone."""
        if self.socket_path is None:
            return None
        try:
            st = os.stat(self.socket_path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def check_readiness(self) -> None:
        """Readiness from what can change under a running daemon: the socket path, the state file."""
        if self._socket_identity is not None and not self.readiness.reasons().get("stopping"):
            if self._path_identity() != self._socket_identity:
                self.readiness.set(
                    "socket",
                    False,
                    f"{self.socket_path} no longer leads to this daemon (removed or replaced); restart it",
                )
            else:
                self.readiness.set("socket", True)
        if self.store is not None:
            problem = self.store.save_problem
            self.readiness.set("state", problem is None, f"the state file cannot be written: {problem}")
        if self.service is not None:
            self.service.daemon_status = self.daemon_status()

    def daemon_status(self) -> dict[str, object]:
        """Readiness and the last reload, for the status op and /v1/status."""
        return {
            "ready": self.readiness.ready,
            "not_ready": self.readiness.reasons(),
            "reload": {
                "ok": not self.last_reload_failed,
                "last_success": self.last_reload_success_wall,
                "error": self._last_reload_error,
            },
        }

    def _mark_dirty(self) -> None:
        self._dirty = True

    def _take_dirty(self) -> bool:
        """Whether anything to save changed since the last call: the service's learned state,
        or a dropped provider's carried state."""
        dirty = self._dirty
        if self.service is not None:
            dirty = dirty or self.service.changed
            self.service.changed = False
        self._dirty = False
        return dirty

    async def _tick_forever(self, service: Service) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(TICK_INTERVAL)
            for _ in service.tick_slices():
                await asyncio.sleep(0)  # acquires run between slices
            service.drop_idle()  # looks only every few seconds
            self.check_readiness()
            ticks += 1
            if ticks % SLOW_TICKS == 0:
                flush_event_limits()  # the count of log lines held back in a storm

    async def _start_state(self, stack: AsyncExitStack, service: Service) -> None:
        """Load learned state (PERSIST gate) and save it periodically and at stop."""
        if not self.config.features.persist:
            self.readiness.set("state", True)
            return
        path = self.config.persist.path or default_state_path(self.environ, Path.home())
        store = StateStore(path, max_age=self.config.persist.max_age, check=snapshot_problem)
        store.acquire_lock()  # a second daemon on the same file refuses to start
        stack.callback(store.close)
        self.store = store
        configured = {(b.provider, b.name) for b in service.registry.buckets()}
        loaded = store.load(self.clock.wall(), configured)
        if loaded is not None:
            restored = restore_learners(service, loaded)
            store.note_dropped(len(loaded.buckets) - restored)
            logger.info("restored learned state of %d buckets from %s", restored, path)

        def saved_state(key: tuple[str, str]) -> tuple[dict[str, object], float] | None:
            # Providers created on first use find what an earlier run learned for them.
            carried = store.carried_snapshot(key)
            if carried is None:
                return None
            last_seen, snapshot = carried
            return snapshot, max(0.0, self.clock.wall() - last_seen)

        service.saved_state = saved_state

        def carry(bucket: Bucket) -> None:
            # An idle provider is dropped: what it learned is kept for its next first use.
            now, wall = self.clock.monotonic(), self.clock.wall()
            store.carry((bucket.provider, bucket.name), snapshot(bucket.learner, now, wall), wall)
            self._mark_dirty()

        service.on_drop = carry
        saver = PeriodicSaver(
            store,
            lambda: collect_snapshots(service),
            self._take_dirty,
            interval=self.config.persist.save_interval,
            clock=self.clock,
        )
        task = asyncio.get_running_loop().create_task(saver.run())

        async def stop_saver() -> None:
            saver.stop()
            await task  # the final save happens here, after the last waiter was answered

        stack.push_async_callback(stop_saver)
        self.readiness.set("state", True)

    async def _start_backend(self, stack: AsyncExitStack, service: Service) -> None:
        """Share the buckets through Redis (`[backend] kind = "redis"`); memory needs nothing."""
        if self.config.backend.kind == "memory":
            return
        # redis-py is imported only by daemons that use it.
        try:
            from ratelimitd.backends.redis_backend import RedisBackend
        except ImportError as exc:
            raise ConfigError(
                self.config.source,
                [f"backend.kind: 'redis' needs redis-py ({exc}): pip install 'ratelimitd[redis]'"],
            ) from exc

        backend = RedisBackend(self.config.backend, service, self.readiness)
        await backend.start()
        service.set_backend(backend)
        self.backend = backend
        stack.push_async_callback(backend.close)  # after the last waiter: unused leases go back

    async def _start_http(self, stack: AsyncExitStack, service: Service) -> None:
        """Metrics and health over HTTP on loopback (unless disabled)."""
        http = self.config.http
        registry = None
        scrape = None
        if http.enabled and http.metrics:
            from prometheus_client import CollectorRegistry

            from ratelimitd.ops.metrics import Metrics

            registry = CollectorRegistry(auto_describe=True)
            metrics = Metrics(registry, version=__version__, max_providers=self.config.server.max_providers)
            metrics.attach(
                service, wall=self.clock.wall, ready=lambda: self.ready, saves=self.store, daemon=self
            )
            service.metrics = metrics
            from ratelimitd.ops.metrics_scrape import MetricsScrape

            scrape = MetricsScrape(metrics, registry, service)
            if self.backend is not None:
                from ratelimitd.backends.metrics import BackendCollector
                from ratelimitd.backends.redis_backend import RedisBackend

                assert isinstance(self.backend, RedisBackend)
                registry.register(BackendCollector(self.backend))
        if not http.enabled:
            return
        # aiohttp costs ~25 MB of RSS and 0.3 s at start: imported only when serving HTTP.
        from ratelimitd.ops.http import HttpServer

        self.http = await stack.enter_async_context(
            HttpServer(
                http,
                registry=registry,
                scrape=scrape,
                readiness=self.readiness,
                status=service,
                on_refused=lambda: service.refused_connections.update([("http", "max_connections")]),
            )
        )

    def _listening_socket(self) -> socket.socket:
        """The socket systemd passed (not ours to unlink), else one bound here."""
        passed = listen_fds(self.environ)
        for sock in passed:
            if sock.family == socket.AF_UNIX and sock.type == socket.SOCK_STREAM:
                sock.setblocking(False)
                name = sock.getsockname()
                self.socket_path = Path(name) if isinstance(name, str) and name else None
                logger.info("using the socket passed by systemd: %s", self.socket_path)
                return sock
        if passed:
            raise ConfigError("LISTEN_FDS", ["no AF_UNIX stream socket among the passed descriptors"])
        path = self.config.server.socket or default_socket_path(self.environ, os.getuid())
        self.socket_path = path
        server = self.config.server
        self.bound = bind_unix_socket(path, server.socket_mode, dir_mode=server.socket_dir_mode)
        return self.bound.sock

    def _socket_gid(self) -> int | None:
        """The socket file's group, trusted by default (protocol.md, "Who may do what")."""
        if self.socket_path is None:
            return None
        try:
            return os.stat(self.socket_path).st_gid
        except OSError:
            return None

    async def _reload(self) -> None:
        self.notifier.reloading("reloading configuration")
        try:
            config = load_config(self.config_path, self.environ)
        except ConfigError as exc:
            logger.error("reload failed; keeping the running configuration: %s", exc)
            self.reloads["failure"] += 1
            self.last_reload_failed = True
            self._last_reload_error = str(exc)
            self.check_readiness()
            self.notifier.ready("reload failed; running the previous configuration")
            return
        # The socket, HTTP listener, feature gates and learning settings change only on restart.
        config = _keep_restart_only(self.config, config)
        assert self.service is not None
        self.service.reload(config)
        self.config = config
        for hook in self.on_reload:
            hook(config)
        self.reloads["success"] += 1
        self.last_reload_success_wall = self.clock.wall()
        self.last_reload_failed = False
        self._last_reload_error = None
        self.check_readiness()
        logger.info("configuration reloaded from %s (%d providers)", config.source, len(config.providers))
        self.notifier.ready(f"serving on {self.socket_path}")


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard one (each client holds one); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as exc:
        logger.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
        return soft
    logger.info("open-file limit raised from %d to %d", soft, hard)
    return hard


def _keep_restart_only(old: Config, new: Config) -> Config:
    from dataclasses import replace

    server = replace(
        new.server,
        socket=old.server.socket,
        socket_mode=old.server.socket_mode,
        socket_dir_mode=old.server.socket_dir_mode,
    )
    if new.features != old.features:
        logger.warning("feature gates change only on restart; keeping %s", old.features.as_dict())
    if new.learning != old.learning:
        logger.warning("[learning] settings change only on restart; keeping the running ones")
    if new.backend.kind != old.backend.kind:
        logger.warning(
            "[backend] kind changed from %s to %s: this needs a restart; still running on %s",
            old.backend.kind,
            new.backend.kind,
            old.backend.kind,
        )
    elif new.backend != old.backend:
        logger.warning("[backend] settings change only on restart; keeping the running ones")
    return replace(
        new, server=server, features=old.features, http=old.http, learning=old.learning, backend=old.backend
    )

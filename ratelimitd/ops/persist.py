"""Saving and loading learned state (gate RATELIMITD_FEATURE_PERSIST).

Shell: files, flock, a worker thread and asyncio; the format itself is pure, in
`ratelimitd.core.statefile`. Generic over what is saved: per-bucket JSON-able dicts
(`BucketLearner.snapshot()` output). API::

    store = StateStore(path, max_age=7 * 86400)
    store.acquire_lock()              # raises StateLockedError if another daemon holds it
    loaded = store.load(now_wall, configured={("openai", "default"), ...})  # LoadedState | None
    loaded.age(key, now_wall)         # seconds that entry was stale: the learner's decay time
    store.carried_snapshot(key)       # (last_seen, snapshot) of a provider not configured at load
    store.save({("openai", "default"): {...}}, now_wall)                    # -> bool, never raises
    store.saves_ok, store.saves_failed, store.last_success_wall             # for metrics
    saver = PeriodicSaver(store, collect, dirty, interval=30.0, clock=clock)
    await saver.run()                 # until saver.stop(); then one final save
    store.close()                     # releases the lock

`load` never raises for a bad file: a corrupt, unreadable or future-version file
is renamed `state.json.corrupt-<UTC YYYYmmddTHHMMSSZ>` and `None` is returned.
`save` never raises: failures (read-only directory, ENOSPC, EACCES) are logged
once per distinct error and counted in `saves_failed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import stat
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from ratelimitd.core.statefile import (
    SCHEMA_VERSION,
    BucketKey,
    LoadedState,
    StateFormatError,
    decode_state,
    encode_state,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from ratelimitd.daemon.clock import Clock

__all__ = (
    "DEFAULT_MAX_AGE",
    "DEFAULT_SAVE_INTERVAL",
    "SCHEMA_VERSION",
    "LoadedState",
    "PeriodicSaver",
    "StateFormatError",
    "StateLockedError",
    "StateStore",
    "decode_state",
    "encode_state",
)

DEFAULT_MAX_AGE = 7 * 86400.0
DEFAULT_SAVE_INTERVAL = 30.0

_logger = logging.getLogger(__name__)


class StateLockedError(Exception):
    """Another process holds the state file's lock; the daemon must not start."""

    def __init__(self, path: Path, holder_pid: int | None) -> None:
        self.path = path
        self.holder_pid = holder_pid
        holder = f" (pid {holder_pid})" if holder_pid is not None else ""
        super().__init__(
            f"state file {path} is locked by another ratelimitd{holder}; "
            "stop it or give this one another state path (persist.path / RATELIMITD_STATE_PATH)"
        )


class StateStore:
    """One state file: its lock, atomic saves and tolerant loads.

    Entries loaded for buckets not in `configured`, and buckets that were in one
    save but are missing from the next (a provider removed by a reload), are
    carried over: kept in the store, written back on every save with their own
    `last_seen`, and dropped once older than `max_age`. `save` is thread-safe
    (one writer at a time).
    """

    def __init__(
        self,
        path: Path,
        *,
        max_age: float = DEFAULT_MAX_AGE,
        logger: logging.Logger | None = None,
        check: Callable[[dict[str, object]], str | None] | None = None,
    ) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self.max_age = max_age
        self.check = check  # why a snapshot cannot be restored, or None
        self.saves_ok = 0
        self.saves_failed = 0
        self.buckets_dropped = 0  # malformed entries dropped at load (and at restore, by the caller)
        self.rejected_copy: Path | None = None  # the file as read, kept when entries were dropped
        self.last_success_wall: float | None = None
        self.quarantined: Path | None = None
        self._log = logger or _logger
        self._carried: dict[BucketKey, tuple[float, Mapping[str, object]]] = {}
        self._live: dict[BucketKey, tuple[float, Mapping[str, object]]] = {}  # the last save's
        self._warned: set[str] = set()
        self.save_problem: str | None = None  # why the last save failed; None once one works
        self._evidence_kept: str | None = None
        self._lock_fd: int | None = None
        self._write_lock = threading.Lock()

    @property
    def carried(self) -> dict[BucketKey, float]:
        """Carried-over entries (not configured now) and their `last_seen` unix times."""
        return {key: seen for key, (seen, _) in self._carried.items()}

    def carried_snapshot(self, key: BucketKey) -> tuple[float, dict[str, object]] | None:
        """A carried-over entry's (last_seen, snapshot), for a provider created after start."""
        entry = self._carried.get(key)
        return None if entry is None else (entry[0], dict(entry[1]))

    def carry(self, key: BucketKey, snapshot: Mapping[str, object], now_wall: float) -> None:
        """Keep `snapshot` of a bucket that leaves the daemon (an idle provider dropped) until
        `max_age`, for `carried_snapshot` when it comes back; written from the next save on."""
        with self._write_lock:
            self._live.pop(key, None)
            self._carried[key] = (now_wall, snapshot)

    def acquire_lock(self) -> None:
        """Take `<path>.lock` with flock(LOCK_EX | LOCK_NB) for this store's lifetime.

        Raises `StateLockedError` if another open file (another daemon) holds it.
        If the lock file cannot be created (read-only directory), logs a warning and
        returns: nothing can be written there anyway.
        """
        if self._lock_fd is not None:
            return
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = self._open_lock()
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise StateLockedError(self.path, holder) from None
        except OSError:
            os.close(fd)
            raise
        # The holder's pid in the lock file makes the second daemon's error actionable.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        self._remove_stale_temporaries()

    def _open_lock(self) -> int | None:
        """The lock file, opened without following a link; None when it cannot be had (logged).

        Anything there that is not a regular file (a symlink planted to make us truncate its
        target, a FIFO) is moved aside and a new lock file is created in its place.
        """
        for _attempt in range(2):
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | _NO_FOLLOW, 0o600)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    if not self._move_aside(self.lock_path, "a symbolic link (not followed)"):
                        return None
                    continue
                try:
                    fd = os.open(self.lock_path, os.O_RDONLY | _NO_FOLLOW)
                except OSError as again:
                    self._log.warning(
                        "cannot open state lock %s (%s); running without a lock", self.lock_path, again
                    )
                    return None
            if stat.S_ISREG(os.fstat(fd).st_mode):
                return fd
            os.close(fd)
            if not self._move_aside(self.lock_path, "not a regular file"):
                return None
        self._log.warning("cannot make a regular state lock at %s; running without a lock", self.lock_path)
        return None

    def _move_aside(self, path: Path, reason: str) -> bool:
        """Rename `path` to `<name>.rejected-<UTC stamp>` (the entry itself, never a link's target)."""
        target = _free_name(path.with_name(f"{path.name}.rejected-{_stamp(time.time())}"))
        try:
            os.rename(path, target)
        except OSError as exc:
            self._log.error("%s is %s and could not be moved aside: %s", path, reason, exc)
            return False
        self._log.warning("%s is %s; moved to %s", path, reason, target)
        return True

    def close(self) -> None:
        """Release the lock (idempotent). The lock file stays: deleting it would race."""
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def load(self, now_wall: float, configured: set[BucketKey] | None = None) -> LoadedState | None:
        """Read the state file; `None` when there is nothing usable to restore.

        Missing file -> None. Whole file older than `max_age` -> None (logged).
        Corrupt, unreadable or future-version -> renamed `<name>.corrupt-<UTC stamp>`,
        logged, None. With `configured`, only those entries are returned; the
        others are carried over until `max_age`. Never raises for file problems.
        """
        self._carried = {}
        self._live = {}
        try:
            data = _read_regular_file(self.path)
        except FileNotFoundError:
            self._log.info("no saved state at %s; starting from the configured rates", self.path)
            return None
        except OSError as exc:
            reason = "a symbolic link (not followed)" if exc.errno == errno.ELOOP else f"unreadable ({exc})"
            self._quarantine(now_wall, reason)
            return None
        try:
            loaded = decode_state(data, now_wall, self.max_age, self.check)
        except StateFormatError as exc:
            kind = "from a newer ratelimitd" if exc.future else "corrupt"
            self._quarantine(now_wall, f"{kind}: {exc}")
            return None
        if loaded.rejected:
            self._reject_entries(data, loaded.rejected, now_wall)
        if loaded.stale_for > self.max_age:
            self._log.warning(
                "saved state in %s is %.0f s old (max_age %.0f s); dropped, starting from "
                "the configured rates",
                self.path,
                loaded.stale_for,
                self.max_age,
            )
            return None
        restore: dict[BucketKey, dict[str, object]] = {}
        for key, snapshot in loaded.buckets.items():
            if configured is None or key in configured:
                restore[key] = snapshot
            else:
                self._carried[key] = (loaded.last_seen[key], snapshot)
        self._log.info(
            "loaded state for %d bucket(s) from %s saved %.0f s ago "
            "(%d kept for providers not configured, %d expired)",
            len(restore),
            self.path,
            loaded.stale_for,
            len(self._carried),
            loaded.expired,
        )
        return LoadedState(
            buckets=restore,
            saved_at=loaded.saved_at,
            stale_for=loaded.stale_for,
            last_seen={key: loaded.last_seen[key] for key in restore},
            expired=loaded.expired,
        )

    def save(self, buckets: Mapping[BucketKey, Mapping[str, object]], now_wall: float) -> bool:
        """Write `buckets` (last_seen = now) plus unexpired carried entries, atomically.

        Temp file in the same directory (created 0700 if missing), write, fsync,
        os.replace, fsync the directory. Returns False after logging on any failure;
        never raises.
        """
        with self._write_lock:
            if self._evidence_kept is not None:
                self._fail(
                    "evidence",
                    "not saving state: %s could not be moved aside (%s) and must not be overwritten",
                    self.path,
                    self._evidence_kept,
                )
                return False
            for key, entry in self._live.items():
                if key not in buckets:  # gone since the last save: keep what it learned
                    self._carried[key] = entry
            self._live = {key: (now_wall, snapshot) for key, snapshot in buckets.items()}
            last_seen: dict[BucketKey, float] = {}
            merged: dict[BucketKey, Mapping[str, object]] = {}
            for key, (seen, snapshot) in list(self._carried.items()):
                if key in buckets or now_wall - seen > self.max_age:
                    del self._carried[key]
                else:
                    merged[key] = snapshot
                    last_seen[key] = seen
            merged.update(buckets)
            try:
                data = encode_state(merged, now_wall, last_seen)
            except StateFormatError as exc:
                self._fail("format", "not saving state: %s", exc)
                return False
            try:
                self._write_atomically(data)
            except OSError as exc:
                self._fail(
                    f"os:{exc.errno}",
                    "cannot save state to %s: %s; learned state will be lost at exit",
                    self.path,
                    exc,
                )
                return False
            self.saves_ok += 1
            self.last_success_wall = now_wall
            self.save_problem = None
            if self._warned:
                self._log.info("saving state to %s works again", self.path)
                self._warned.clear()
            return True

    def _write_atomically(self, data: bytes) -> None:
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        # Without this the rename itself may not survive a power loss.
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # some filesystems cannot fsync directories
                raise
        finally:
            os.close(dir_fd)

    def _remove_stale_temporaries(self) -> None:
        """Temp files left by a writer killed mid-save; safe once we hold the lock."""
        with contextlib.suppress(OSError):
            for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):
                with contextlib.suppress(OSError):
                    leftover.unlink()

    def note_dropped(self, count: int) -> None:
        """Count buckets dropped after load (their snapshot could not be restored)."""
        self.buckets_dropped += count

    def _reject_entries(self, data: bytes, reasons: list[str], now_wall: float) -> None:
        """Log each dropped entry, count them, and keep the file as read for inspection."""
        self.buckets_dropped += len(reasons)
        for reason in reasons:
            self._log.warning(
                "state file %s: dropped a malformed bucket: %s",
                self.path,
                reason,
                extra={"event": "bad_state", "reason": "malformed"},
            )
        target = _free_name(self.path.with_name(f"{self.path.name}.rejected-{_stamp(now_wall)}"))
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_FOLLOW, 0o600)
            with os.fdopen(fd, "wb") as copy:
                copy.write(data)
        except OSError as exc:
            self._log.warning("could not keep a copy of %s for inspection: %s", self.path, exc)
            return
        self.rejected_copy = target
        self._log.warning("kept a copy of %s as read in %s", self.path, target)

    def _quarantine(self, now_wall: float, reason: str) -> None:
        """Move a bad file aside under a new name; never overwrite an earlier one."""
        target = _free_name(self.path.with_name(f"{self.path.name}.corrupt-{_stamp(now_wall)}"))
        try:
            os.rename(self.path, target)
        except OSError as exc:
            self._evidence_kept = str(exc)
            self._log.error(
                "state file %s is %s; could not move it aside (%s); starting from the "
                "configured rates and not saving, to keep the evidence",
                self.path,
                reason,
                exc,
            )
            return
        self.quarantined = target
        self._log.error(
            "state file %s is %s; moved to %s; starting from the configured rates",
            self.path,
            reason,
            target,
        )

    def note_failure(self, key: str, message: str) -> None:
        """Count a save that failed before reaching the store; logged once per `key`, with traceback."""
        self.saves_failed += 1
        self.save_problem = message
        if key not in self._warned:
            self._warned.add(key)
            self._log.exception(message)

    def _fail(self, key: str, message: str, *args: object) -> None:
        self.saves_failed += 1
        self.save_problem = message % args
        if key not in self._warned:
            self._warned.add(key)
            self._log.warning(message, *args)


class PeriodicSaver:
    """Saves every `interval` s when `dirty()` says so, and once more at stop.

    `collect()` runs on the event loop and returns the snapshots; the file write
    runs on one worker thread, so saves stay in order and never block the loop.
    `dirty()` may reset itself when called: a failed save is retried next interval.
    """

    def __init__(
        self,
        store: StateStore,
        collect: Callable[[], Mapping[BucketKey, Mapping[str, object]]],
        dirty: Callable[[], bool],
        interval: float = DEFAULT_SAVE_INTERVAL,
        clock: Clock | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval: must be > 0, got {interval}")
        self._store = store
        self._collect = collect
        self._dirty = dirty
        self._interval = interval
        self._clock = clock
        self._pending = False
        self._stopping = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ratelimitd-persist")

    def _wall(self) -> float:
        return self._clock.wall() if self._clock is not None else time.time()

    async def run(self) -> None:
        """Save periodically until `stop()` (or cancellation), then save once more."""
        try:
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=self._interval)
                if not self._stopping.is_set():
                    await self.tick()
        finally:
            self.save_now()
            self._executor.shutdown(wait=True)

    def stop(self) -> None:
        """Ask `run()` to make its final save and return."""
        self._stopping.set()

    async def tick(self) -> bool | None:
        """One period: save if something changed since the last successful save.

        Returns None when nothing needed saving, else the save's result.
        """
        self._pending = self._dirty() or self._pending
        if not self._pending:
            return None
        snapshot = self._snapshot()
        if snapshot is None:
            return False
        future = self._executor.submit(self._store.save, snapshot, self._wall())
        ok = await asyncio.wrap_future(future)
        self._pending = not ok
        return ok

    def _snapshot(self) -> Mapping[BucketKey, Mapping[str, object]] | None:
        """`collect()`, or None after logging: a bug there must not stop saving or the daemon."""
        try:
            return self._collect()
        except Exception:
            self._store.note_failure("collect", "collecting the learned state to save failed")
            _logger.debug("collect() failed", exc_info=True)
            return None

    def save_now(self) -> bool:
        """Save unconditionally and wait for it, after any save already in flight."""
        self._dirty()
        snapshot = self._snapshot()
        if snapshot is None:
            return False
        try:
            ok = self._executor.submit(self._store.save, snapshot, self._wall()).result()
        except RuntimeError:  # executor already shut down: write from this thread
            ok = self._store.save(snapshot, self._wall())
        self._pending = not ok
        return ok


# Never follow a link at the state file or its lock, never block on a FIFO there.
_NO_FOLLOW = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _read_regular_file(path: Path) -> bytes:
    """The bytes of `path`; OSError (ELOOP for a symlink) unless it is a regular file."""
    fd = os.open(path, os.O_RDONLY | _NO_FOLLOW)
    with os.fdopen(fd, "rb") as stream:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"not a regular file (mode {stat.filemode(mode)})")
        return stream.read()


def _stamp(wall: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(wall))


def _free_name(base: Path) -> Path:
    """`base`, or `base-1`, `base-2`...: the first name not taken (never overwrite evidence)."""
    target = base
    suffix = 1
    while os.path.lexists(target):
        target = base.with_name(f"{base.name}-{suffix}")
        suffix += 1
    return target


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None

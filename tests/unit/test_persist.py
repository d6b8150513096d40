"""Persistence: the pure state-file format, then StateStore and PeriodicSaver on real files.

No mocks: failures come from real mechanisms (a read-only tmpfs or chmod, a full
tmpfs, a path under a regular file, a lock held by another process, SIGKILL).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
from contextlib import ExitStack
from typing import TYPE_CHECKING

import orjson
import pytest
from support import assert_refuses_writes, make_readonly_dir, run_ok

from ratelimitd.daemon.clock import FakeClock
from ratelimitd.ops.persist import (
    SCHEMA_VERSION,
    LoadedState,
    PeriodicSaver,
    StateFormatError,
    StateLockedError,
    StateStore,
    decode_state,
    encode_state,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from pathlib import Path

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
DAY = 86400.0
WEEK = 7 * DAY
IS_ROOT = os.geteuid() == 0

SNAP_A: dict[str, object] = {"factor": 0.5, "ceiling": 12.5, "streak": 3, "history": [{"t": 1}]}
SNAP_B: dict[str, object] = {"factor": 0.8, "ceiling": None, "streak": 0, "history": []}


# --- pure format -------------------------------------------------------------------------


def test_encode_decode_round_trip() -> None:
    data = encode_state(
        {("openai", "key-1"): SNAP_A, ("github", "default"): SNAP_B},
        T0,
        last_seen={("github", "default"): T0 - 100},
    )
    document = orjson.loads(data)
    assert document["version"] == SCHEMA_VERSION == 1
    assert document["saved_at"] == T0
    assert document["buckets"]["openai"]["key-1"] == {"last_seen": T0, "learner": SNAP_A}
    assert document["buckets"]["github"]["default"]["last_seen"] == T0 - 100

    loaded = decode_state(data, T0 + 5, max_age=WEEK)
    assert loaded.buckets == {("openai", "key-1"): SNAP_A, ("github", "default"): SNAP_B}
    assert loaded.saved_at == T0
    assert loaded.stale_for == 5
    assert loaded.last_seen == {("openai", "key-1"): T0, ("github", "default"): T0 - 100}
    assert loaded.age(("github", "default"), T0 + 5) == 105
    assert loaded.expired == 0


def test_names_with_slashes_survive() -> None:
    key = ("a/b", "c/d")
    assert decode_state(encode_state({key: SNAP_A}, T0), T0, WEEK).buckets == {key: SNAP_A}


def test_decode_drops_entries_older_than_max_age() -> None:
    data = encode_state(
        {("p", "old"): SNAP_A, ("p", "new"): SNAP_B}, T0, last_seen={("p", "old"): T0 - 2 * DAY}
    )
    loaded = decode_state(data, T0 + DAY, max_age=2 * DAY)
    assert set(loaded.buckets) == {("p", "new")}
    assert loaded.expired == 1


def test_saved_at_in_the_future_gives_zero_staleness() -> None:
    loaded = decode_state(encode_state({}, T0 + 60), T0, WEEK)
    assert loaded.stale_for == 0


def test_unknown_extra_keys_are_ignored() -> None:
    data = orjson.dumps({"version": 1, "saved_at": T0, "buckets": {}, "comment": "added later"})
    assert decode_state(data, T0, WEEK).buckets == {}


def test_future_version_is_flagged() -> None:
    data = orjson.dumps({"version": SCHEMA_VERSION + 1, "saved_at": T0, "buckets": {}})
    with pytest.raises(StateFormatError, match="version: 2 is newer") as info:
        decode_state(data, T0, WEEK)
    assert info.value.future


def good_document() -> dict[str, object]:
    return orjson.loads(encode_state({("p", "b"): SNAP_A}, T0))  # type: ignore[no-any-return]


BAD_DOCUMENTS: list[tuple[str, bytes, str]] = [
    ("garbage", b"\x00\xffnot json at all", "not valid JSON"),
    ("empty", b"", "not valid JSON"),
    ("truncated", encode_state({("p", "b"): SNAP_A}, T0)[:-15], "not valid JSON"),
    ("nan", b'{"version": 1, "saved_at": NaN, "buckets": {}}', "not valid JSON"),
    ("array", b"[1, 2]", "top level: must be an object, got array"),
    ("no version", b'{"saved_at": 1, "buckets": {}}', "version: must be an integer, got null"),
    ("string version", b'{"version": "1", "saved_at": 1, "buckets": {}}', "got string"),
    ("bool version", b'{"version": true, "saved_at": 1, "buckets": {}}', "got boolean"),
    ("version 0", b'{"version": 0, "saved_at": 1, "buckets": {}}', "version: must be >= 1"),
    ("saved_at string", b'{"version": 1, "saved_at": "x", "buckets": {}}', "saved_at: must be a"),
    ("infinite saved_at", b'{"version": 1, "saved_at": 1e999, "buckets": {}}', "infinity"),
    ("buckets list", b'{"version": 1, "saved_at": 1, "buckets": []}', "buckets: must be an object"),
]

BAD_ENTRIES: list[tuple[str, bytes, str]] = [
    ("provider not object", b'{"p": 3}', "buckets.p: must be an object, got number"),
    ("entry missing last_seen", b'{"p": {"b": {"learner": {}}}}', "buckets.p.b.last_seen: must be a number"),
    (
        "learner not object",
        b'{"p": {"b": {"last_seen": 1, "learner": []}}}',
        "buckets.p.b.learner: must be an object, got array",
    ),
]


@pytest.mark.parametrize(
    ("entries", "message"), [c[1:] for c in BAD_ENTRIES], ids=[c[0] for c in BAD_ENTRIES]
)
def test_a_malformed_entry_is_dropped_alone(entries: bytes, message: str) -> None:
    good = b'"q": {"b": {"last_seen": %d, "learner": {"i": 1}}}' % T0
    data = b'{"version": 1, "saved_at": 1, "buckets": {' + good + b", " + entries.strip()[1:-1] + b"}}"
    loaded = decode_state(data, T0, WEEK)
    assert list(loaded.buckets) == [("q", "b")]
    assert len(loaded.rejected) == 1
    assert loaded.rejected[0].startswith(message)


def test_check_drops_what_it_finds_a_problem_with_and_future_times_are_now() -> None:
    data = encode_state({("p", "ok"): {"i": 1}, ("p", "bad"): {"i": 2}}, T0 + 3600.0)
    loaded = decode_state(data, T0, WEEK, check=lambda learner: "two" if learner["i"] == 2 else None)
    assert list(loaded.buckets) == [("p", "ok")]
    assert loaded.rejected == ["buckets.p.bad.learner: two"]
    assert loaded.last_seen[("p", "ok")] == T0
    assert loaded.stale_for == 0.0


@pytest.mark.parametrize(
    ("data", "message"), [c[1:] for c in BAD_DOCUMENTS], ids=[c[0] for c in BAD_DOCUMENTS]
)
def test_decode_rejects_malformed(data: bytes, message: str) -> None:
    with pytest.raises(StateFormatError, match=message) as info:
        decode_state(data, T0, WEEK)
    assert not info.value.future


def test_encode_rejects_unserialisable_snapshot_and_bad_times() -> None:
    with pytest.raises(StateFormatError, match="not JSON-serialisable"):
        encode_state({("p", "b"): {"when": object()}}, T0)
    with pytest.raises(StateFormatError, match="saved_at: must be a finite number"):
        encode_state({}, float("nan"))
    with pytest.raises(StateFormatError, match=r"buckets\.p\.b\.last_seen"):
        encode_state({("p", "b"): SNAP_A}, T0, last_seen={("p", "b"): float("inf")})


# --- real-filesystem helpers ----------------------------------------------------------------


@pytest.fixture
def cleanup() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def state_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- StateStore ------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "state.json"
    store = StateStore(path)
    store.acquire_lock()
    assert store.load(T0) is None  # missing file
    assert store.save({("openai", "k1"): SNAP_A, ("gh", "default"): SNAP_B}, T0)
    assert store.saves_ok == 1
    assert store.last_success_wall == T0
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert state_files(path.parent) == ["state.json", "state.json.lock"]
    store.close()

    again = StateStore(path)
    again.acquire_lock()
    loaded = again.load(T0 + 30)
    assert loaded is not None
    assert loaded.buckets == {("openai", "k1"): SNAP_A, ("gh", "default"): SNAP_B}
    assert loaded.stale_for == 30
    again.close()


def test_truncated_file_is_quarantined_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = StateStore(path)
    store.acquire_lock()
    assert store.save({("p", "b"): SNAP_A}, T0)
    truncated = path.read_bytes()[:40]
    path.write_bytes(truncated)

    assert store.load(T0 + 10) is None
    evidence = tmp_path / "state.json.corrupt-20231114T221330Z"
    assert store.quarantined == evidence
    assert evidence.read_bytes() == truncated
    assert not path.exists()

    # The next save writes a fresh file and leaves the evidence alone.
    assert store.save({("p", "b"): SNAP_B}, T0 + 20)
    assert evidence.read_bytes() == truncated
    # A second corruption within the same second gets its own name.
    path.write_bytes(b"{")
    assert store.load(T0 + 10) is None
    assert (tmp_path / "state.json.corrupt-20231114T221330Z-1").read_bytes() == b"{"
    assert evidence.read_bytes() == truncated
    store.close()


@pytest.mark.parametrize(
    "content",
    [
        b"\x89PNG garbage",
        b'{"version": 2, "saved_at": 1700000000, "buckets": {}}',
        b'{"version": 1, "saved_at": "x", "buckets": {"p": {"b": {"last_seen": 1}}}}',
    ],
    ids=["garbage", "future-version", "wrong-types"],
)
def test_bad_file_is_renamed_and_logged(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    store = StateStore(path)
    with caplog.at_level(logging.ERROR, logger="ratelimitd.ops.persist"):
        assert store.load(T0) is None
    assert (tmp_path / "state.json.corrupt-20231114T221320Z").read_bytes() == content
    assert not path.exists()
    assert "moved to" in caplog.text
    assert str(path) in caplog.text


def test_unreadable_path_is_moved_aside(tmp_path: Path) -> None:
    # A directory where the file should be: reading fails with EISDIR, as root too.
    path = tmp_path / "state.json"
    path.mkdir()
    (path / "inside").write_bytes(b"kept")
    store = StateStore(path)
    assert store.load(T0) is None
    assert (tmp_path / "state.json.corrupt-20231114T221320Z" / "inside").read_bytes() == b"kept"
    assert store.save({("p", "b"): SNAP_A}, T0)
    assert path.is_file()


def test_state_older_than_max_age_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = StateStore(path, max_age=DAY)
    assert store.save({("p", "b"): SNAP_A}, T0)
    assert store.load(T0 + DAY - 1) is not None
    assert store.load(T0 + DAY + 1) is None
    assert path.exists()  # expired, not corrupt: no quarantine
    assert state_files(tmp_path) == ["state.json"]


def test_unconfigured_providers_are_kept_until_max_age(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = StateStore(path, max_age=WEEK)
    assert store.save({("kept", "b"): SNAP_A, ("gone", "b"): SNAP_B}, T0)

    loaded = store.load(T0 + 10, configured={("kept", "b")})
    assert loaded is not None
    assert loaded.buckets == {("kept", "b"): SNAP_A}
    assert store.carried == {("gone", "b"): T0}

    # Saved again days later: the carried entry keeps its own last_seen.
    assert store.save({("kept", "b"): SNAP_A}, T0 + 6 * DAY)
    document = orjson.loads(path.read_bytes())
    assert document["buckets"]["gone"]["b"] == {"last_seen": T0, "learner": SNAP_B}
    assert document["buckets"]["kept"]["b"]["last_seen"] == T0 + 6 * DAY

    # Configured again before max_age: restored, and its age tells how stale it is.
    back = StateStore(path, max_age=WEEK).load(T0 + 6 * DAY + 1, configured=None)
    assert back is not None
    assert back.buckets[("gone", "b")] == SNAP_B
    assert back.age(("gone", "b"), T0 + 6 * DAY + 1) == 6 * DAY + 1

    # Past max_age the carried entry is dropped from the file.
    assert store.save({("kept", "b"): SNAP_A}, T0 + WEEK + 1)
    document = orjson.loads(path.read_bytes())
    assert set(document["buckets"]) == {"kept"}
    assert store.carried == {}


def test_bucket_gone_since_the_last_save_is_carried_over(tmp_path: Path) -> None:
    # A provider removed by a reload disappears from what the daemon collects.
    path = tmp_path / "state.json"
    store = StateStore(path, max_age=WEEK)
    assert store.save({("kept", "b"): SNAP_A, ("removed", "b"): SNAP_B}, T0)
    assert store.save({("kept", "b"): SNAP_A}, T0 + DAY)
    assert store.carried == {("removed", "b"): T0}
    assert store.carried_snapshot(("removed", "b")) == (T0, SNAP_B)
    assert store.carried_snapshot(("kept", "b")) is None
    document = orjson.loads(path.read_bytes())
    assert document["buckets"]["removed"]["b"] == {"last_seen": T0, "learner": SNAP_B}
    # Configured again (created on first use): live again, no longer carried.
    assert store.save({("kept", "b"): SNAP_A, ("removed", "b"): SNAP_A}, T0 + 2 * DAY)
    assert store.carried == {}
    document = orjson.loads(path.read_bytes())
    assert document["buckets"]["removed"]["b"]["last_seen"] == T0 + 2 * DAY


def test_read_only_directory_is_a_warning_not_a_crash(
    tmp_path: Path, cleanup: ExitStack, caplog: pytest.LogCaptureFixture
) -> None:
    old = encode_state({("p", "b"): SNAP_A}, T0)
    directory = tmp_path / "ro"
    how = make_readonly_dir(directory, {"state.json": old}, cleanup)
    assert_refuses_writes(directory)
    store = StateStore(directory / "state.json")
    with caplog.at_level(logging.WARNING, logger="ratelimitd.ops.persist"):
        store.acquire_lock()  # cannot create the lock file: warned, not raised
        loaded = store.load(T0 + 1)  # reading still works
        results = [store.save({("p", "b"): SNAP_B}, T0 + i) for i in range(3)]
    assert loaded is not None, how
    assert loaded.buckets == {("p", "b"): SNAP_A}
    assert results == [False, False, False]
    assert (store.saves_ok, store.saves_failed) == (0, 3)
    cannot_save = [r for r in caplog.records if "cannot save state" in r.getMessage()]
    assert len(cannot_save) == 1, how  # once per distinct error, not per attempt
    assert (directory / "state.json").read_bytes() == old
    assert state_files(directory) == ["state.json"]
    store.close()


def test_corrupt_file_in_read_only_directory_is_not_overwritten(tmp_path: Path, cleanup: ExitStack) -> None:
    directory = tmp_path / "ro"
    make_readonly_dir(directory, {"state.json": b"{corrupt"}, cleanup)
    assert_refuses_writes(directory)
    store = StateStore(directory / "state.json")
    assert store.load(T0) is None
    assert store.quarantined is None
    assert not store.save({("p", "b"): SNAP_A}, T0)
    assert (directory / "state.json").read_bytes() == b"{corrupt"


def test_parent_is_a_regular_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"not a directory")
    store = StateStore(blocker / "state.json")
    with caplog.at_level(logging.INFO, logger="ratelimitd.ops.persist"):
        store.acquire_lock()
        assert not store.save({("p", "b"): SNAP_A}, T0)
        assert not store.save({("p", "b"): SNAP_A}, T0 + 1)
        blocker.unlink()
        assert store.save({("p", "b"): SNAP_A}, T0 + 2)
        (blocker / "state.json").unlink()
        blocker.rmdir()
        blocker.write_bytes(b"again")
        assert not store.save({("p", "b"): SNAP_A}, T0 + 3)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot save state" in m for m in messages) == 2  # before and after recovery
    assert sum("works again" in m for m in messages) == 1
    assert (store.saves_ok, store.saves_failed) == (1, 3)


def test_disk_full_keeps_the_old_file(tmp_path: Path, cleanup: ExitStack) -> None:
    if not IS_ROOT:
        pytest.skip("needs root to mount a small tmpfs for a real ENOSPC")
    directory = tmp_path / "small"
    directory.mkdir()
    if not run_ok("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(directory)):
        pytest.skip("mount is not permitted here")
    cleanup.callback(run_ok, "umount", "-l", str(directory))
    store = StateStore(directory / "state.json")
    store.acquire_lock()
    assert store.save({("p", "b"): SNAP_A}, T0)
    old = (directory / "state.json").read_bytes()
    big = {("p", f"b{i}"): {"pad": "x" * 1000} for i in range(100)}  # ~100 KB > 64 KB
    assert not store.save(big, T0 + 1)
    assert (directory / "state.json").read_bytes() == old
    assert state_files(directory) == ["state.json", "state.json.lock"]
    store.close()


def test_readers_only_ever_see_complete_files(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = StateStore(path)
    assert store.save({("p", f"b{k}"): {"i": -1} for k in range(50)}, T0)
    done = threading.Event()
    seen_versions: set[object] = set()
    errors: list[Exception] = []

    def read_loop() -> None:
        while not done.is_set():
            try:
                loaded = decode_state(path.read_bytes(), T0, WEEK)
            except Exception as exc:  # collected and asserted below
                errors.append(exc)
                return
            versions = {snapshot["i"] for snapshot in loaded.buckets.values()}
            if len(versions) != 1:  # one save's buckets, never a mix
                errors.append(AssertionError(f"mixed saves in one file: {versions}"))
                return
            seen_versions.update(versions)

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        for i in range(150):
            pad = "x" * (1 + (i % 5) * 500)  # files of different sizes
            assert store.save({("p", f"b{k}"): {"i": i, "pad": pad} for k in range(50)}, T0 + i)
    finally:
        done.set()
        reader.join()
    assert errors == []
    assert len(seen_versions) > 1  # the reader did observe several different saves


WRITER = """
import sys
from pathlib import Path
from ratelimitd.ops.persist import StateStore
store = StateStore(Path(sys.argv[1]))
store.acquire_lock()
i = 0
while True:
    pad = "x" * (1 + (i % 7) * 100)  # files of different sizes
    assert store.save({("p", f"b{k}"): {"i": i, "pad": pad} for k in range(200)}, 1e9 + i)
    print(i, flush=True)
    i += 1
"""


def test_sigkill_during_saves_leaves_a_complete_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    for round_ in range(6):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout is not None
        last = -1
        for _ in range(1 + round_ * 3):
            last = int(writer.stdout.readline())
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        loaded = decode_state(path.read_bytes(), 1e9, 1e9)
        written = {entry["i"] for entry in loaded.buckets.values()}
        assert len(written) == 1
        saved = written.pop()
        assert isinstance(saved, int)
        assert saved >= last  # at most the save in flight was lost
    # A writer killed between mkstemp and rename may leave a temp file; the next lock
    # holder removes it, and nothing but complete files ever sits at `path`.
    store = StateStore(path)
    store.acquire_lock()
    assert state_files(tmp_path) == ["state.json", "state.json.lock"]
    store.close()


HOLDER = """
import sys
from pathlib import Path
from ratelimitd.ops.persist import StateStore
StateStore(Path(sys.argv[1])).acquire_lock()
print("locked", flush=True)
sys.stdin.read()
"""


def test_second_daemon_on_the_same_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdin is not None
    try:
        assert holder.stdout.readline() == "locked\n"
        store = StateStore(path)
        with pytest.raises(StateLockedError, match="is locked by another ratelimitd") as info:
            store.acquire_lock()
        assert info.value.holder_pid == holder.pid
        assert f"pid {holder.pid}" in str(info.value)
    finally:
        holder.kill()  # the kernel drops the flock even on SIGKILL
        holder.wait()
        holder.stdout.close()
        holder.stdin.close()
    store.acquire_lock()
    assert path.with_name("state.json.lock").read_text() == f"{os.getpid()}\n"
    store.close()


def test_lock_is_per_open_file_so_one_process_cannot_hold_it_twice(tmp_path: Path) -> None:
    first = StateStore(tmp_path / "state.json")
    first.acquire_lock()
    first.acquire_lock()  # idempotent on the same store
    with pytest.raises(StateLockedError):
        StateStore(tmp_path / "state.json").acquire_lock()
    first.close()
    second = StateStore(tmp_path / "state.json")
    second.acquire_lock()
    second.close()
    second.close()


# --- PeriodicSaver --------------------------------------------------------------------------


class Source:
    """A stand-in for the daemon's learners: a mapping plus a consume-on-read dirty flag."""

    def __init__(self) -> None:
        self.buckets: dict[tuple[str, str], dict[str, object]] = {("p", "b"): {"n": 0}}
        self.changed = False

    def bump(self) -> None:
        n = self.buckets[("p", "b")]["n"]
        assert isinstance(n, int)
        self.buckets[("p", "b")] = {"n": n + 1}
        self.changed = True

    def dirty(self) -> bool:
        changed, self.changed = self.changed, False
        return changed

    def collect(self) -> Mapping[tuple[str, str], Mapping[str, object]]:
        return dict(self.buckets)


def saved_n(path: Path) -> object:
    loaded: LoadedState = decode_state(path.read_bytes(), T0, 1e12)
    return loaded.buckets[("p", "b")]["n"]


def make_saver(store: StateStore, source: Source, clock: FakeClock) -> PeriodicSaver:
    collect: Callable[[], Mapping[tuple[str, str], Mapping[str, object]]] = source.collect
    return PeriodicSaver(store, collect, source.dirty, interval=3600.0, clock=clock)


async def test_saver_saves_only_when_dirty_and_retries_failures(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    store = StateStore(blocker / "state.json")
    source = Source()
    clock = FakeClock(start=0.0, wall_offset=T0)
    saver = make_saver(store, source, clock)
    assert await saver.tick() is None  # nothing changed: no write
    assert not blocker.exists()

    blocker.write_bytes(b"a file where the directory should be")
    source.bump()
    assert await saver.tick() is False
    blocker.unlink()
    clock.advance(30)
    assert await saver.tick() is True  # retried although dirty() now says False
    assert saved_n(blocker / "state.json") == 1
    assert store.last_success_wall == T0 + 30
    assert await saver.tick() is None
    run = asyncio.create_task(saver.run())
    saver.stop()
    await run


async def test_saver_final_save_at_stop_and_on_cancel(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = StateStore(path)
    source = Source()
    clock = FakeClock(start=0.0, wall_offset=T0)
    saver = make_saver(store, source, clock)
    task = asyncio.create_task(saver.run())
    await asyncio.wait([task], timeout=0)
    source.bump()
    source.bump()
    clock.advance(5)
    saver.stop()
    await task
    assert saved_n(path) == 2
    assert decode_state(path.read_bytes(), T0, WEEK).saved_at == T0 + 5

    cancelled_saver = make_saver(store, source, clock)
    task = asyncio.create_task(cancelled_saver.run())
    await asyncio.wait([task], timeout=0)
    source.bump()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert saved_n(path) == 3
    assert store.saves_ok == 2


def test_saver_rejects_non_positive_interval(tmp_path: Path) -> None:
    source = Source()
    with pytest.raises(ValueError, match="interval: must be > 0"):
        PeriodicSaver(StateStore(tmp_path / "s.json"), source.collect, source.dirty, interval=0)


async def test_saver_survives_a_failing_collect(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    store = StateStore(path)
    source = Source()
    broken = True

    def collect() -> Mapping[tuple[str, str], Mapping[str, object]]:
        if broken:
            raise RuntimeError("snapshot bug")
        return source.collect()

    saver = PeriodicSaver(store, collect, source.dirty, interval=3600.0, clock=FakeClock())
    source.bump()
    with caplog.at_level(logging.ERROR, logger="ratelimitd.ops.persist"):
        assert await saver.tick() is False
        assert await saver.tick() is False  # still pending, still failing, logged once
    assert store.saves_failed == 2
    assert [r.exc_info is not None for r in caplog.records] == [True]
    assert not path.exists()
    broken = False
    assert await saver.tick() is True
    assert saved_n(path) == 1
    task = asyncio.create_task(saver.run())
    saver.stop()
    await task

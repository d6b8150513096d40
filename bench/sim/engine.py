"""Discrete-event simulation in virtual time: workers, client-side limiters, a hidden provider.

Deterministic for a seed: one `random.Random`, one event heap ordered by (time, sequence).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Sequence

    from bench.sim.provider import Answer, HiddenProvider

__all__ = ("ClientSide", "Outcome", "Workload", "simulate")

_TICK = 0.25
_SAMPLE = 0.5


class ClientSide(Protocol):
    # True: a request answered 429 with a Retry-After is retried no sooner (the client helpers).
    honours_retry_after: bool

    def delay(self, now: float) -> float: ...
    def granted(self, now: float) -> int | None: ...
    def report(self, answer: Answer, permit: int | None, now: float) -> None: ...
    def tick(self, now: float) -> None: ...
    def allowed_rate(self, now: float) -> float: ...
    def learned_rate(self, now: float) -> float | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    """`processes` × `workers` closed-loop workers, or Poisson `open_rate` arrivals."""

    duration: float = 600.0
    processes: int = 1
    workers: int = 32
    open_rate: float | None = None
    echo_permit: Callable[[int], bool] = field(default=lambda process: True)


@dataclass(slots=True)
class Outcome:
    duration: float
    capacity_total: float
    successes: int = 0
    attempts: int = 0
    limited: int = 0
    created: int = 0
    extra_waits: list[float] = field(default_factory=list)
    success_bins: list[int] = field(default_factory=list)
    trace: list[tuple[float, float, float]] = field(default_factory=list)  # t, allowed, capacity
    # t, learned rate (None while a pause holds the bucket: a pause is not a rate change)
    rate_trace: list[tuple[float, float | None]] = field(default_factory=list)
    backlog: int = 0


@dataclass(slots=True)
class _Job:
    start: float
    process: int


class _Run:
    def __init__(
        self,
        provider: HiddenProvider,
        clients: Sequence[ClientSide],
        workload: Workload,
        rng: random.Random,
    ) -> None:
        self.provider = provider
        self.clients = clients
        self.workload = workload
        self.rng = rng
        self.heap: list[tuple[float, int, int, object]] = []
        self.seq = 0
        self.queues: list[deque[_Job]] = [deque() for _ in clients]
        self.wake_at = [math.inf for _ in clients]
        self.out = Outcome(workload.duration, provider.capacity_integral(workload.duration))
        self.out.success_bins = [0] * (int(workload.duration) + 1)

    def push(self, t: float, kind: int, arg: object) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, arg))

    def client_of(self, process: int) -> int:
        return process % len(self.clients)

    def want(self, job: _Job, t: float) -> None:
        index = self.client_of(job.process)
        self.queues[index].append(job)
        self.pump(index, t)

    def pump(self, index: int, t: float) -> None:
        queue = self.queues[index]
        client = self.clients[index]
        while queue:
            wait = client.delay(t)
            if wait > 0.0:
                at = t + wait
                if at < self.wake_at[index] - 1e-9 or self.wake_at[index] <= t:
                    self.wake_at[index] = at
                    self.push(at, 0, index)
                return
            job = queue.popleft()
            permit = client.granted(t)
            if not self.workload.echo_permit(job.process):
                permit = None
            answer = self.provider.attempt(t)
            self.out.attempts += 1
            if answer.status == 429:
                self.out.limited += 1
            self.push(t + answer.latency, 1, (job, permit, answer, t))

    def respond(self, arg: tuple[_Job, int | None, Answer, float], t: float) -> None:
        job, permit, answer, sent = arg
        index = self.client_of(job.process)
        self.clients[index].report(answer, permit, t)
        if answer.status == 429:
            wait = answer.retry_after if self.clients[index].honours_retry_after else None
            if wait:
                self.push(t + wait, 4, job)  # the retry waits out its own Retry-After
            else:
                self.queues[index].append(job)
        else:
            self.out.successes += 1
            self.out.extra_waits.append(sent - job.start)
            if t < self.workload.duration:
                self.out.success_bins[int(t)] += 1
            if self.workload.open_rate is None:
                self.queues[index].append(_Job(t, job.process))
                self.out.created += 1
        self.pump(index, t)

    def run(self) -> Outcome:
        w = self.workload
        if w.open_rate is None:
            for process in range(w.processes):
                for _ in range(w.workers):
                    self.queues[self.client_of(process)].append(_Job(0.0, process))
                    self.out.created += 1
        else:
            self.push(self.rng.expovariate(w.open_rate), 2, None)
        self.push(0.0, 3, None)  # kinds: 0 wake, 1 answer, 2 arrival, 3 tick, 4 retry due
        for index in range(len(self.clients)):
            self.pump(index, 0.0)
        heap = self.heap
        while heap:
            t, _, kind, arg = heapq.heappop(heap)
            if t > w.duration:
                break
            if kind == 0:
                index = arg if isinstance(arg, int) else 0
                if abs(self.wake_at[index] - t) < 1e-9:
                    self.wake_at[index] = math.inf
                self.pump(index, t)
            elif kind == 1:
                self.respond(arg, t)  # type: ignore[arg-type]
            elif kind == 2:
                assert w.open_rate is not None
                self.out.created += 1
                self.want(_Job(t, self.out.created % w.processes), t)
                self.push(t + self.rng.expovariate(w.open_rate), 2, None)
            elif kind == 4:
                assert isinstance(arg, _Job)
                index = self.client_of(arg.process)
                self.queues[index].append(arg)
                self.pump(index, t)
            else:
                self.on_tick(t)
        self.out.backlog = self.out.created - self.out.successes
        if w.open_rate is None:
            self.out.backlog = sum(len(q) for q in self.queues)
        return self.out

    def on_tick(self, t: float) -> None:
        for index, client in enumerate(self.clients):
            client.tick(t)
            self.pump(index, t)
        if round(t / _TICK) % round(_SAMPLE / _TICK) == 0:
            allowed = sum(c.allowed_rate(t) for c in self.clients)
            self.out.trace.append((t, allowed, self.provider.capacity(t)))
            learned = [c.learned_rate(t) for c in self.clients]
            rates = [r for r in learned if r is not None]
            self.out.rate_trace.append((t, sum(rates) if len(rates) == len(learned) else None))
        self.push(t + _TICK, 3, None)


def simulate(
    provider: HiddenProvider,
    clients: Sequence[ClientSide],
    workload: Workload,
    rng: random.Random,
) -> Outcome:
    """Run one scenario to `workload.duration` seconds of virtual time."""
    return _Run(provider, clients, workload, rng).run()

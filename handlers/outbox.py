"""Per-channel delivery queues: in order, paced, retried — and never in the engine's way.

Rules:
* One FIFO queue per channel. A channel is served by at most one worker at a time, so messages
  in a channel (and therefore in each execution's thread) arrive in the order they were queued.
* Pacing: after an operation that called Slack, the channel waits ``pace_s`` (Slack allows about
  one message per second per channel) before its next one. Channels do not wait for each other.
* ``Transient`` failures (HTTP 429, 5xx, timeouts, connection errors) keep the operation at the
  head of its queue: a 429 waits the ``Retry-After`` Slack gave, anything else backs off
  exponentially (``backoff_base`` doubling up to ``backoff_cap``, with jitter). Order is kept
  because nothing behind it in that channel goes first.
* ``Permanent`` failures (Slack answered ``ok: false`` with an error a retry cannot fix) are
  logged and the operation is dropped, so one bad message cannot block a channel forever.
  Unexpected exceptions are retried a few times, then dropped and logged the same way.
* Retries live here, not inside the Web API client: a client that slept through Retry-After
  would hold a worker that other channels need.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("stagehold.slack.outbox")

MAX_UNEXPECTED_ATTEMPTS = 5


class Transient(Exception):
    """Try the same operation again later; ``retry_after`` is Slack's own wait, when it gave one."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Permanent(Exception):
    """A retry cannot help (e.g. ``channel_not_found``, ``invalid_blocks``)."""


@dataclass
class Operation:
    """One unit of delivery. ``run`` returns True if it called Slack (the channel is then paced)."""

    channel: str
    run: Callable[[], bool]
    describe: str
    done: Callable[[bool], None] = field(default=lambda delivered: None)


@dataclass
class _Channel:
    queue: deque[Operation] = field(default_factory=deque)
    ready_at: float = 0.0
    busy: bool = False
    failures: int = 0


class Outbox:
    def __init__(
        self,
        *,
        pace_s: float = 1.0,
        workers: int = 2,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pace_s = pace_s
        self.workers = workers
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.clock = clock
        self._channels: dict[str, _Channel] = {}
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._running = False
        self.delivered = 0
        self.retried = 0
        self.dropped = 0
        self.rate_limited = 0
        self.on_rate_limited: Callable[[], None] | None = None  # told of every 429 (the /metrics counter)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        with self._cond:
            if self._running:
                return
            self._running = True
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"stagehold-slack-outbox-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._running = False
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=timeout)
        self._threads.clear()

    # ------------------------------------------------------------ queueing

    def put(self, op: Operation) -> None:
        with self._cond:
            self._channels.setdefault(op.channel, _Channel()).queue.append(op)
            self._cond.notify()

    def hold_until(self, channel: str, delay_s: float) -> None:
        """Post nothing to ``channel`` for ``delay_s`` (pacing carried over from another replica)."""
        with self._cond:
            ch = self._channels.setdefault(channel, _Channel())
            ch.ready_at = max(ch.ready_at, self.clock() + delay_s)
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return sum(len(c.queue) for c in self._channels.values())

    def wait_empty(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while any(c.queue for c in self._channels.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
            return True

    # ------------------------------------------------------------ delivery

    def _next(self) -> tuple[str, Operation] | None:
        """Under the lock: wait for a channel whose head operation may go now."""
        while self._running:
            now = self.clock()
            soonest: float | None = None
            # Idle channels cost nothing once their pacing has passed.
            for name in [n for n, c in self._channels.items() if not c.queue and not c.busy and c.ready_at <= now]:
                del self._channels[name]
            for name, ch in self._channels.items():
                if ch.busy or not ch.queue:
                    continue
                if ch.ready_at <= now:
                    ch.busy = True
                    return name, ch.queue[0]
                soonest = ch.ready_at if soonest is None else min(soonest, ch.ready_at)
            self._cond.wait(None if soonest is None else max(0.001, soonest - now))
        return None

    def _backoff(self, failures: int) -> float:
        delay: float = min(self.backoff_cap, self.backoff_base * 2.0 ** max(0, failures - 1))
        return delay * (0.75 + random.random() / 2)

    def _work(self) -> None:
        while True:
            with self._cond:
                picked = self._next()
            if picked is None:
                return
            name, op = picked
            called = False
            finished = True
            dropped = False
            delay = 0.0
            try:
                called = op.run()
            except Transient as exc:
                finished = False
                with self._cond:
                    ch = self._channels[name]
                    ch.failures += 1
                    failures = ch.failures
                delay = exc.retry_after if exc.retry_after is not None else self._backoff(failures)
                if exc.retry_after is not None:  # only a 429 carries Slack's own wait
                    self.rate_limited += 1
                    if self.on_rate_limited is not None:
                        self.on_rate_limited()
                log.warning("slack: %s: %s; retrying in %.1fs", op.describe, exc, delay)
            except Permanent as exc:
                log.error("slack: %s failed and is dropped: %s", op.describe, exc)
                called = dropped = True
            except Exception:
                with self._cond:
                    ch = self._channels[name]
                    ch.failures += 1
                    failures = ch.failures
                if failures >= MAX_UNEXPECTED_ATTEMPTS:
                    log.exception("slack: %s failed %d times and is dropped", op.describe, failures)
                    called = dropped = True
                else:
                    log.exception("slack: %s failed; retrying", op.describe)
                    finished = False
                    delay = self._backoff(failures)
            with self._cond:
                ch = self._channels[name]
                ch.busy = False
                if finished:
                    ch.queue.popleft()
                    ch.failures = 0
                    ch.ready_at = self.clock() + (self.pace_s if called else 0.0)
                    if dropped:
                        self.dropped += 1
                    elif called:
                        self.delivered += 1
                else:
                    self.retried += 1
                    ch.ready_at = self.clock() + delay
                self._cond.notify_all()
            if finished:
                try:
                    op.done(not dropped)
                except Exception:
                    log.exception("slack: bookkeeping after %s failed", op.describe)

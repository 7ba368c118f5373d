"""Pending wake-ups of executions, earliest first: at most one per execution, kept in a heap.

Why not one APScheduler job per execution: every sample re-armed a date job (a job-store lookup,
a trigger, a wake-up of the scheduler's thread under its lock), about a sixth of the process's
time at a thousand executions. A heap entry costs a few microseconds; APScheduler keeps the
periodic jobs (the sweep, lease renewal, the replicas' poll, digests).

Rules:
* One pending wake-up per execution: a wake-up replaces a later one, never an earlier one (that
  run re-decides anyway, and a click's wake-up must not be pushed back by a run re-arming itself).
* A replaced entry stays in the heap and is skipped when it surfaces: cheaper than removing it.
* Times are compared with the wall clock, as APScheduler compares its run dates.
* Not thread-safe on its own: the driver calls it under its lock.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Wake:
    execution_id: str
    at: datetime
    resume: bool  # reconcile against the target first (a process picking up where one stopped)
    order: int


class DueQueue:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._pending: dict[str, Wake] = {}
        self._order = itertools.count()

    def put(self, execution_id: str, at: datetime, *, resume: bool = False) -> bool:
        """Schedule a wake-up unless one at or before ``at`` is pending; True if it is now the earliest."""
        held = self._pending.get(execution_id)
        if held is not None and held.at <= at:
            return False
        wake = Wake(execution_id, at, resume, next(self._order))
        self._pending[execution_id] = wake
        when = at.timestamp()
        earliest = not self._heap or when < self._heap[0][0]
        heapq.heappush(self._heap, (when, wake.order, execution_id))
        return earliest

    def pending(self, execution_id: str) -> bool:
        return execution_id in self._pending

    def __len__(self) -> int:
        return len(self._pending)

    def seconds_to_next(self, now: float) -> float | None:
        """Seconds until the earliest pending wake-up (≤ 0: due now); None when nothing is pending."""
        while self._heap:
            when, order, execution_id = self._heap[0]
            held = self._pending.get(execution_id)
            if held is not None and held.order == order:
                return when - now
            heapq.heappop(self._heap)  # replaced since: skip it
        return None

    def pop_due(self, now: float) -> list[Wake]:
        """Every wake-up due at ``now`` (wall-clock seconds), earliest first, removed from the queue."""
        due = []
        while self._heap and self._heap[0][0] <= now:
            _, order, execution_id = heapq.heappop(self._heap)
            held = self._pending.get(execution_id)
            if held is not None and held.order == order:
                del self._pending[execution_id]
                due.append(held)
        return due

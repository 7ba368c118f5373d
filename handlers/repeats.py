"""A person's repeated clicks on one Release button: the first is decided, the rest are counted.

Rules:
* A click is keyed by person, execution, hold and evidence version (the button it came from).
  The first click of a key goes to the engine as always: decided, recorded, answered.
* Further clicks of that key within ``window_s`` of the first are only counted, when the first
  click's outcome makes every repeat a no-op whatever happens meanwhile: it released (a second
  release by the same person is ignored) or it was ignored (already released, closed, stale
  evidence, finished execution — facts that do not come undone). A denial is not collapsed: a
  group lookup that failed is asked again on the next click, so a repeat may be decided
  differently. A first click that raised collapses nothing.
* A click arriving while the first is still being decided waits for its outcome (it runs in a
  listener thread after its ack, so no one waits for the ack).
* When the window ends, the counted clicks are recorded in one ``release.ignored`` entry (how
  many, first and last), so the ledger still says that the person kept clicking, in one entry
  instead of thousands, and no ephemeral is posted for them. ``close()`` records the windows
  still open, for a clean shutdown.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

log = logging.getLogger("stagehold.slack.repeats")

WINDOW_S = 10.0
FIRST_OUTCOME_WAIT_S = 30.0


@dataclass(frozen=True)
class ClickKey:
    user: str
    execution: str
    hold: str
    version: int


@dataclass(frozen=True)
class Repeats:
    """Clicks counted into one record: how many, the first and the last."""

    key: ClickKey
    count: int
    first_at: datetime
    last_at: datetime


@dataclass
class _Window:
    opened: datetime
    decided: threading.Event = field(default_factory=threading.Event)
    collapsible: bool = False
    count: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None
    timer: threading.Timer | None = None


class First:
    """The first click of a window: the caller decides it, then says whether repeats may be collapsed."""

    def __init__(self, window: _Window) -> None:
        self._window = window

    def decided(self, collapsible: bool) -> None:
        self._window.collapsible = collapsible
        self._window.decided.set()


class RepeatedClicks:
    def __init__(
        self,
        record: Callable[[Repeats], None],
        clock: Callable[[], datetime],
        window_s: float = WINDOW_S,
        timer: Callable[[float, Callable[[], None]], threading.Timer] | None = None,
    ) -> None:
        self.record = record
        self.clock = clock
        self.window_s = window_s
        self._timer = timer or _daemon_timer
        self._windows: dict[ClickKey, _Window] = {}
        self._lock = threading.Lock()
        self._closed = False

    def arrive(self, key: ClickKey) -> First | None:
        """A ``First`` to decide and settle, or None: the click was counted into an open window."""
        while True:
            now = self.clock()
            with self._lock:
                window = self._windows.get(key)
                if window is None or self._closed or (now - window.opened).total_seconds() >= self.window_s:
                    window = _Window(opened=now)
                    self._windows[key] = window
                    return First(window)
                if window.decided.is_set():
                    if not window.collapsible:
                        fresh = _Window(opened=now)
                        self._windows[key] = fresh
                        return First(fresh)
                    self._count(key, window, now)
                    return None
            # The first click of this window is still being decided; its outcome says what this is.
            if not window.decided.wait(FIRST_OUTCOME_WAIT_S):
                log.warning("first click of %s undecided after %.0f s; deciding this one", key, FIRST_OUTCOME_WAIT_S)
                window.decided.set()  # collapsible stays False: the next look opens a fresh window

    def _count(self, key: ClickKey, window: _Window, now: datetime) -> None:
        window.count += 1
        window.first_at = window.first_at or now
        window.last_at = now
        if window.timer is None:
            remaining = max(0.0, self.window_s - (now - window.opened).total_seconds())
            window.timer = self._timer(remaining, lambda: self._flush(key, window))

    def _flush(self, key: ClickKey, window: _Window) -> None:
        with self._lock:
            if self._windows.get(key) is window:
                del self._windows[key]
            count, first_at, last_at = window.count, window.first_at, window.last_at
            window.count = 0  # a window is recorded once, by its timer or by close()
        if count and first_at is not None and last_at is not None:
            try:
                self.record(Repeats(key, count, first_at, last_at))
            except Exception:
                log.exception("recording %d repeated clicks of %s failed", count, key)

    def close(self) -> None:
        """Record every window still counting; later clicks are decided one by one."""
        with self._lock:
            self._closed = True
            pending = list(self._windows.items())
        for key, window in pending:
            if window.timer is not None:
                window.timer.cancel()
            self._flush(key, window)


def _daemon_timer(delay: float, run: Callable[[], None]) -> threading.Timer:
    timer = threading.Timer(delay, run)
    timer.daemon = True
    timer.start()
    return timer

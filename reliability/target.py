"""The sandbox as the trials see it: every raw request counted, and a hook to act at exact moments.

``TrialSandbox`` is the shipped ``execution.sandbox.Sandbox`` with one addition a trial needs: it
calls ``hook(moment, event)`` just before (``"before"``) and just after (``"after"``) it handles a
request, so a crash trial can kill the client while a write is in flight, between "applied" and
"answered", or while a read-back waits for its answer. The sandbox's own behaviour (idempotency by
key, faults, the ``/applied`` log) is untouched: ``applied()`` is the effect log the trials judge.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from execution.sandbox import Sandbox, _direction, _is_reserved, _Reply

Hook = Callable[[str, "Event"], None]


@dataclass(frozen=True)
class Event:
    """One request: ``kind`` is ``write:apply``, ``write:rollback``, ``get:confirm``, ``get:verify`` or ``get``."""

    kind: str
    method: str
    path: str
    key: str


class TrialSandbox(Sandbox):
    """``lose_before_ratio``: that share of writes is lost on the way in — not applied, and the answer
    withheld like the sandbox's own lost answers — so the engine meets both halves of "sent, no
    answer": applied (the sandbox's ``timeout_ratio``) and not applied (this)."""

    def __init__(
        self, *, confirm_paths: frozenset[str] = frozenset(), lose_before_ratio: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.confirm_paths = confirm_paths
        self.hook: Hook | None = None
        self._sends: list[Event] = []
        self._sends_lock = threading.Lock()
        self._lose_before_ratio = lose_before_ratio
        self._lose_rng = random.Random(kwargs.get("seed"))
        self.lost_before = 0

    def sends(self) -> list[Event]:
        """Every write that reached the sandbox, applied or not, in arrival order."""
        with self._sends_lock:
            return list(self._sends)

    def _classify(self, method: str, target: str, headers: Mapping[str, str]) -> Event:
        path = urlsplit(target).path.rstrip("/") or "/"
        key = headers.get("idempotency-key", "").strip()
        if method in ("PUT", "POST", "PATCH", "DELETE") and not _is_reserved(path):
            return Event(f"write:{_direction(key) or 'unknown'}", method, path, key)
        if method == "GET" and path in self.confirm_paths:
            return Event("get:confirm", method, path, key)
        if method == "GET" and path == "/parity":
            return Event("get:verify", method, path, key)
        return Event("get" if method == "GET" else "other", method, path, key)

    def _respond(self, method: str, target: str, headers: Mapping[str, str], raw: bytes) -> _Reply:
        event = self._classify(method, target, headers)
        if event.kind.startswith("write:"):
            with self._sends_lock:
                self._sends.append(event)
                lose = self._lose_before_ratio > 0 and self._lose_rng.random() < self._lose_before_ratio
                if lose:
                    self.lost_before += 1
            if lose:
                return _Reply(200, {}, hang=True)
        hook = self.hook
        if hook is not None:
            hook("before", event)
        reply = super()._respond(method, target, headers, raw)
        if hook is not None:
            hook("after", event)
        return reply

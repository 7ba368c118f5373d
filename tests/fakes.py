"""Recording fakes for engine tests: a settable clock and an in-memory control plane.

The fake target keeps documents per path like the sandbox, honours idempotency keys, and lets a
test set each signal's reading. It records every call so tests assert on what was sent.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from execution.contract.models import Action, Confirm, Signal
from execution.model import ActionResult, Evidence, ReadbackResult, Role


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 28, 22, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class FakeTarget:
    clock: FakeClock
    docs: dict[str, Any] = field(default_factory=dict)
    signals: dict[str, Any] = field(default_factory=dict)  # name -> value (None: no data)
    samples: dict[str, int] = field(default_factory=dict)
    signal_age: dict[str, float] = field(default_factory=dict)
    signal_error: dict[str, str] = field(default_factory=dict)
    applied: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    seen_keys: dict[str, ActionResult] = field(default_factory=dict)
    # faults
    timeout_after_apply: bool = False
    readback_fails: bool = False
    reject_rollback: bool = False
    reject_apply: bool = False

    def read(self, name: str, signal: Signal, role: Role) -> Evidence:
        if name in self.signal_error:
            return Evidence(name, None, None, "fake", error=self.signal_error[name])
        value = self.signals.get(name)
        sampled = self.clock() - timedelta(seconds=self.signal_age.get(name, 0.0))
        return Evidence(name, value, sampled if value is not None else None, "fake", samples=self.samples.get(name, 1000))

    def apply(self, action: Action, idempotency_key: str, role: Role, timeout_s: float) -> ActionResult:
        assert action.http is not None
        self.sent.append({"key": idempotency_key, "role": role.value, "path": action.http.path})
        direction = idempotency_key.split(":")[-2]
        if direction == "rollback" and self.reject_rollback:
            return ActionResult("rejected", "500 rollback refused", 500)
        if direction == "apply" and self.reject_apply:
            return ActionResult("rejected", "409 refused", 409)
        if idempotency_key in self.seen_keys:
            return self.seen_keys[idempotency_key]
        self.docs[action.http.path] = copy.deepcopy(action.http.json_body)
        self.applied.append({"key": idempotency_key, "path": action.http.path, "body": action.http.json_body})
        result = ActionResult("ok", "200", 200, action.http.json_body)
        self.seen_keys[idempotency_key] = result
        if self.timeout_after_apply:
            return ActionResult("ambiguous", "read timeout after sending")
        return result

    def read_back(self, confirm: Confirm, role: Role, timeout_s: float) -> ReadbackResult:
        assert confirm.http is not None
        if self.readback_fails:
            return ReadbackResult(None, None, "500 from target")
        doc = self.docs.get(confirm.http.path)
        if doc is None:
            return ReadbackResult(False, None, "not found")
        matches = all(doc.get(k) == v for k, v in confirm.http.expect.items())
        return ReadbackResult(matches, doc, "read")

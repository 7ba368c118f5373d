"""In-memory stand-ins for trials that need thousands of executions per second of budget.

``HealthyTarget`` is a control plane whose signals all pass and whose documents take whatever is
written, honouring idempotency keys; trials that need a ledger but no database use
``ledger.memory.MemoryLedgerStore``. Neither is used where the trial is about the database or
the network.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from execution.contract.models import Action, Confirm, Signal
from execution.model import ActionResult, Clock, Evidence, ReadbackResult, Role


class HealthyTarget:
    """Every signal passes (fresh, plenty of samples); writes apply once per idempotency key."""

    def __init__(self, clock: Clock, values: Mapping[str, Any]) -> None:
        self.clock = clock
        self.values = dict(values)
        self.docs: dict[str, Any] = {}
        self.applied: list[dict[str, Any]] = []
        self._seen: dict[str, ActionResult] = {}

    def read(self, name: str, signal: Signal, role: Role) -> Evidence:
        return Evidence(name, self.values.get(name), self.clock(), "fake", samples=1000)

    def apply(self, action: Action, idempotency_key: str, role: Role, timeout_s: float) -> ActionResult:
        assert action.http is not None
        seen = self._seen.get(idempotency_key)
        if seen is not None:
            return seen
        self.docs[action.http.path] = copy.deepcopy(action.http.json_body)
        self.applied.append({"key": idempotency_key, "path": action.http.path, "role": role.value})
        result = ActionResult("ok", "200", 200, action.http.json_body)
        self._seen[idempotency_key] = result
        return result

    def read_back(self, confirm: Confirm, role: Role, timeout_s: float) -> ReadbackResult:
        assert confirm.http is not None
        doc = self.docs.get(confirm.http.path)
        if not isinstance(doc, dict):
            return ReadbackResult(False, doc, "not there")
        ok = all(doc.get(k) == v for k, v in confirm.http.expect.items())
        return ReadbackResult(ok, doc, "read")

"""In-memory stand-ins for trials that need thousands of executions per second of budget.

``MemoryStore`` keeps the ledger store's contract (conditional append at an expected seq, atomic
batches, fencing by lease, sealing by the real ``ledger.chain.seal``); ``HealthyTarget`` is a
control plane whose signals all pass and whose documents take whatever is written, honouring
idempotency keys. Neither is used where the trial is about the database or the network.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from execution.contract.models import Action, Confirm, Signal
from execution.model import ActionResult, Clock, Evidence, ReadbackResult, Role
from ledger.chain import GENESIS_HASH, seal
from ledger.entry import Entry, NewEntry
from ledger.store import AppendConflict, FencedOut, Lease


class MemoryStore:
    def __init__(self) -> None:
        self._chains: dict[str, list[Entry]] = {}
        self._leases: dict[str, Lease] = {}
        self._lock = threading.Lock()

    def append(
        self, execution_id: str, expected_seq: int, entries: Sequence[NewEntry], fence: Lease | None = None
    ) -> list[Entry]:
        with self._lock:
            if fence is not None:
                lease = self._leases.get(execution_id)
                if lease is None or (lease.owner, lease.epoch) != (fence.owner, fence.epoch):
                    raise FencedOut(f"{execution_id}: lease epoch {fence.epoch} of {fence.owner} is no longer current")
            chain = self._chains.setdefault(execution_id, [])
            if len(chain) + 1 != expected_seq:
                raise AppendConflict(execution_id, expected_seq, len(chain) + 1)
            prev = chain[-1].hash if chain else GENESIS_HASH
            sealed = []
            for offset, new in enumerate(entries):
                entry = seal(execution_id, expected_seq + offset, new, prev)
                sealed.append(entry)
                prev = entry.hash
            chain.extend(sealed)
            return sealed

    def read(self, execution_id: str, after_seq: int = 0) -> list[Entry]:
        with self._lock:
            return list(self._chains.get(execution_id, [])[after_seq:])

    def executions(self) -> list[str]:
        with self._lock:
            return [k for k, v in self._chains.items() if v]

    def acquire_lease(self, execution_id: str, owner: str, now: datetime, ttl_seconds: float) -> Lease | None:
        with self._lock:
            current = self._leases.get(execution_id)
            expires = now + timedelta(seconds=ttl_seconds)
            if current is None:
                lease = Lease(execution_id, owner, 1, expires)
            elif current.owner == owner:
                lease = Lease(execution_id, owner, current.epoch, expires)
            elif current.expires_at <= now:
                lease = Lease(execution_id, owner, current.epoch + 1, expires)
            else:
                return None
            self._leases[execution_id] = lease
            return lease

    def release_lease(self, lease: Lease) -> None:
        with self._lock:
            current = self._leases.get(lease.execution_id)
            if current is not None and (current.owner, current.epoch) == (lease.owner, lease.epoch):
                self._leases[lease.execution_id] = Lease(
                    lease.execution_id, lease.owner, lease.epoch, lease.expires_at - timedelta(days=3650)
                )


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

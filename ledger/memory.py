"""A ledger store held in memory: the same contract as the SQL store (tests/contract runs the one
suite against both), for tests and tools that need a ledger but no database. Nothing it holds
outlives the process.

It keeps every rule of ``ledger.store``: append-only (no method changes or removes an entry),
conditional appends at an expected sequence number, several entries landing together or not
at all, and fenced writers. Bodies are stored as a copy of the JSON they encode to, so a writer
changing its dict afterwards cannot change the ledger; entries read are shared with the store
and, like every entry, are read-only.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from ledger.chain import GENESIS_HASH, canonical_json, seal, verify_chain
from ledger.entry import Entry, NewEntry
from ledger.registry import CLOSING_KINDS
from ledger.store import AppendConflict, FencedOut, Lease, VerifyResult


class MemoryLedgerStore:
    """A ``LedgerStore`` in this process's memory, safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chains: dict[str, tuple[Entry, ...]] = {}
        self._leases: dict[str, Lease] = {}

    def close(self) -> None:
        """Nothing to release; present so a memory store stands wherever a SQL store does."""

    def append(
        self,
        execution_id: str,
        expected_seq: int,
        entries: Sequence[NewEntry],
        fence: Lease | None = None,
    ) -> list[Entry]:
        if not entries:
            return []
        with self._lock:
            if fence is not None:
                lease = self._leases.get(execution_id)
                if lease is None or (lease.owner, lease.epoch) != (fence.owner, fence.epoch):
                    raise FencedOut(f"{execution_id}: lease epoch {fence.epoch} of {fence.owner} is no longer current")
            chain = self._chains.get(execution_id, ())
            if len(chain) + 1 != expected_seq:
                raise AppendConflict(execution_id, expected_seq, len(chain) + 1)
            prev = chain[-1].hash if chain else GENESIS_HASH
            sealed: list[Entry] = []
            for offset, new in enumerate(entries):
                # Sealing refuses content with no canonical form before anything is kept.
                stored = NewEntry(new.kind, new.actor, json.loads(canonical_json(dict(new.body))), new.ts)
                entry = seal(execution_id, expected_seq + offset, stored, prev)
                sealed.append(entry)
                prev = entry.hash
            self._chains[execution_id] = (*chain, *sealed)
            return sealed

    def read(self, execution_id: str, after_seq: int = 0) -> list[Entry]:
        with self._lock:
            chain = self._chains.get(execution_id, ())
        return list(chain[max(0, after_seq) :])

    def head(self, execution_id: str) -> tuple[int, str] | None:
        with self._lock:
            chain = self._chains.get(execution_id, ())
        return (chain[-1].seq, chain[-1].hash) if chain else None

    def verify(self, execution_id: str, head: tuple[int, str] | None = None) -> VerifyResult:
        """``verify_chain`` of one execution (what ``ledger verify`` runs on a SQL store)."""
        return verify_chain(self.read(execution_id), execution_id, head)

    def executions(self) -> list[str]:
        """Execution ids, oldest first (by the time of their first entry, as the SQL store orders them)."""
        with self._lock:
            firsts = [(chain[0].ts, eid) for eid, chain in self._chains.items()]
        return [eid for _, eid in sorted(firsts, key=lambda pair: pair[0])]

    def open_executions(self) -> list[str]:
        """``executions()`` less those with a closing entry (as the SQL store's registry says)."""
        with self._lock:
            closed = {eid for eid, chain in self._chains.items() if any(e.kind in CLOSING_KINDS for e in chain)}
        return [eid for eid in self.executions() if eid not in closed]

    def acquire_lease(self, execution_id: str, owner: str, now: datetime, ttl_seconds: float) -> Lease | None:
        """Take or renew the lease; a new owner gets a higher epoch so stale writers are fenced."""
        expires = now + timedelta(seconds=ttl_seconds)
        with self._lock:
            held = self._leases.get(execution_id)
            if held is None:
                lease = Lease(execution_id, owner, 1, expires)
            elif held.owner == owner:
                lease = Lease(execution_id, owner, held.epoch, expires)
            elif held.expires_at <= now:
                lease = Lease(execution_id, owner, held.epoch + 1, expires)
            else:
                return None
            self._leases[execution_id] = lease
            return lease

    def renew_leases(self, owner: str, held: Sequence[Lease], now: datetime, ttl_seconds: float) -> dict[str, Lease]:
        """Renew ``owner``'s leases still held at their epoch; those renewed, by execution."""
        expires = now + timedelta(seconds=ttl_seconds)
        renewed: dict[str, Lease] = {}
        with self._lock:
            for lease in held:
                current = self._leases.get(lease.execution_id)
                if (
                    current is not None
                    and lease.owner == owner
                    and (current.owner, current.epoch) == (owner, lease.epoch)
                ):
                    renewed[lease.execution_id] = self._leases[lease.execution_id] = replace(
                        current, expires_at=expires
                    )
        return renewed

    def lease(self, execution_id: str) -> Lease | None:
        """Who holds (or last held) the execution's lease, without taking it."""
        with self._lock:
            return self._leases.get(execution_id)

    def release_lease(self, lease: Lease) -> None:
        with self._lock:
            held = self._leases.get(lease.execution_id)
            if held is not None and (held.owner, held.epoch) == (lease.owner, lease.epoch):
                # Lapsed at once, epoch kept: the next owner takes it over with a higher epoch.
                self._leases[lease.execution_id] = Lease(
                    held.execution_id, held.owner, held.epoch, held.expires_at - timedelta(days=3650)
                )

"""The ledger store interface. Implementations: ``ledger.sql.SqlLedgerStore``.

Rules every implementation keeps:

* Append-only: there is no update or delete of entries.
* Conditional append: the writer names the sequence number it expects to write; if the chain has
  moved on, ``AppendConflict`` is raised and nothing is written. The caller re-reads and re-decides.
* Several entries appended in one call land atomically, contiguously, or not at all.
* A writer may present a fence ``(owner, epoch)``; the append is refused with ``FencedOut`` unless
  that owner still holds the execution's lease at that epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ledger.entry import Entry, NewEntry


class AppendConflict(Exception):
    """Another writer appended first: the expected sequence number is taken."""

    def __init__(self, execution_id: str, expected: int, actual: int) -> None:
        super().__init__(f"{execution_id}: expected to append at seq {expected}, next free is {actual}")
        self.execution_id = execution_id
        self.expected = expected
        self.actual = actual


class FencedOut(Exception):
    """The writer no longer holds the execution's lease (another process took it over)."""


class CorruptEntry(ValueError):
    """A stored entry cannot even be decoded (edited outside the store): the chain is damaged there."""

    def __init__(self, execution_id: str, seq: int, reason: str) -> None:
        super().__init__(f"{execution_id}: entry {seq}: {reason}")
        self.execution_id = execution_id
        self.seq = seq
        self.reason = reason


@dataclass(frozen=True)
class Lease:
    execution_id: str
    owner: str
    epoch: int
    expires_at: datetime


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    first_bad_seq: int | None
    reason: str
    checked: int
    head_hash: str


class LedgerStore(Protocol):
    def append(
        self,
        execution_id: str,
        expected_seq: int,
        entries: Sequence[NewEntry],
        fence: Lease | None = None,
    ) -> list[Entry]: ...

    def read(self, execution_id: str, after_seq: int = 0) -> list[Entry]: ...

    def executions(self) -> list[str]: ...

    def open_executions(self) -> list[str]:
        """Executions not known to have closed (completed, rolled back, needs a human, abandoned):
        a cheap superset of the unfinished ones, oldest first; folding each tells exactly."""
        ...

    def acquire_lease(self, execution_id: str, owner: str, now: datetime, ttl_seconds: float) -> Lease | None: ...

    def renew_leases(
        self, owner: str, held: Sequence[Lease], now: datetime, ttl_seconds: float
    ) -> dict[str, Lease]: ...

    def release_lease(self, lease: Lease) -> None: ...


class LedgerReader(Protocol):
    """What commands that only read need: ``SqlLedgerStore``, or on SQLite ``SqliteLedgerReader``."""

    def read(self, execution_id: str, after_seq: int = 0) -> list[Entry]: ...

    def verify(self, execution_id: str, head: tuple[int, str] | None = None) -> VerifyResult: ...

    def head(self, execution_id: str) -> tuple[int, str] | None: ...

    def executions(self) -> list[str]: ...

    def heads(self) -> dict[str, int]: ...

    def lease(self, execution_id: str) -> Lease | None: ...

    def leases(self) -> dict[str, Lease]: ...

    def close(self) -> None: ...

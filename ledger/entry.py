"""The two shapes of a ledger record: what a writer proposes, and what the chain holds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class NewEntry:
    """An entry a writer wants appended. The store assigns seq, prev_hash and hash.

    ``ts`` is passed in (the caller owns the clock); ``body`` holds JSON values only and is
    expected to be masked already.
    """

    kind: str
    actor: str
    body: Mapping[str, Any]
    ts: datetime


@dataclass(frozen=True)
class Entry:
    """A sealed entry: ``hash`` covers every other field, ``prev_hash`` links to seq - 1."""

    execution_id: str
    seq: int
    ts: datetime
    kind: str
    actor: str
    body: Mapping[str, Any] = field(hash=False)
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        """The exported form: the exact fields the hash covers, plus the hash."""
        from ledger.chain import format_ts

        return {
            "execution": self.execution_id,
            "seq": self.seq,
            "ts": format_ts(self.ts),
            "kind": self.kind,
            "actor": self.actor,
            "body": dict(self.body),
            "prev": self.prev_hash,
            "hash": self.hash,
        }

"""Reading one execution for a command: verify its chain first, then fold it.

Rule: no command reports on, or appends to, an execution whose chain does not verify. A state
folded from altered entries may say COMPLETED about a change that never completed; the operator
gets TAMPERED and exit 1 instead. Entries the engine could not have written (a chain rewritten
with fresh hashes that the fold refuses) count as tampering too.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ledger.chain import verify_chain
from ledger.entry import Entry
from ledger.store import CorruptEntry

if TYPE_CHECKING:
    from execution.project import State
    from ledger.store import LedgerReader


@dataclass(frozen=True)
class Execution:
    entries: list[Entry]
    state: State


@dataclass(frozen=True)
class Tampered:
    execution_id: str
    where: str  # "seq 7: hash does not match content"


def database_url(args: argparse.Namespace) -> str:
    """``--db`` when given, else the ``STAGEHOLD_DATABASE_URL`` setting (raises ``SettingsError``)."""
    if getattr(args, "db", None):
        return str(args.db)
    from bot.settings import load_settings

    return load_settings().database_url


def open_ledger(args: argparse.Namespace) -> LedgerReader:
    """The ledger, to read only: a SQLite file through sqlite3 (no SQLAlchemy to import), any
    other database (or a file the reader declines) through the SQLModel store."""
    from ledger.sqlite_reader import open_reader

    url = database_url(args)
    reader = open_reader(url)
    if reader is not None:
        return reader
    from bot.bootstrap import open_store

    return open_store(url)


def read_execution(store: LedgerReader, execution_id: str, after: Execution | None = None) -> Execution | Tampered:
    """Every entry of ``execution_id`` verified and folded; ``after``: only read what is new since.

    An unknown execution folds to a state without a plan (callers say "no execution ...").
    """
    from execution.project import State, apply
    from execution.transitions import IllegalTransition

    known = after.entries if after is not None else []
    try:
        new = store.read(execution_id, after_seq=known[-1].seq if known else 0)
    except CorruptEntry as exc:
        return Tampered(execution_id, f"seq {exc.seq}: {exc.reason}")
    if after is not None and not new:
        return after
    entries = [*known, *new]
    result = verify_chain(entries, execution_id)
    if not result.ok:
        return Tampered(execution_id, f"seq {result.first_bad_seq}: {result.reason}")
    try:
        state = after.state if after is not None else State(execution_id)
        for entry in new:
            state = apply(state, entry)
    except (IllegalTransition, ValueError, KeyError, TypeError) as exc:
        return Tampered(execution_id, f"entries the engine could not have written ({type(exc).__name__}: {exc})")
    return Execution(entries, state)

"""Append-only, hash-chained ledger: the single source of truth of every execution.

This package imports nothing else of the project; the engine builds on it, never the reverse.
"""

from ledger.chain import GENESIS_HASH, canonical_json, entry_hash, format_ts, parse_ts, seal, verify_chain
from ledger.entry import Entry, NewEntry
from ledger.masking import mask
from ledger.store import AppendConflict, FencedOut, Lease, LedgerStore, VerifyResult

__all__ = [
    "GENESIS_HASH",
    "AppendConflict",
    "Entry",
    "FencedOut",
    "Lease",
    "LedgerStore",
    "NewEntry",
    "VerifyResult",
    "canonical_json",
    "entry_hash",
    "format_ts",
    "mask",
    "parse_ts",
    "seal",
    "verify_chain",
]

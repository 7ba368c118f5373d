"""The stored form of the ledger: table names and how a stored row becomes an entry.

Shared by the SQLModel store (``ledger.sql``, the schema's owner and the only writer) and the
read-only sqlite3 reader (``ledger.sqlite_reader``), so both decode and verify a row the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from ledger.chain import Canonical, hashed_bytes, is_canonical_json, parse_ts, string_token
from ledger.entry import Entry
from ledger.store import CorruptEntry

LEDGER_TABLE = "stagehold_ledger"
LEASE_TABLE = "stagehold_lease"


def decode_row(
    execution_id: str, seq: int, ts: str, kind: str, actor: str, body: str | bytes, prev_hash: str, digest: str
) -> Entry:
    # A row edited outside the store may not decode at all; name its seq instead of failing
    # with a bare JSON error, so verification can say where the chain is damaged.
    try:
        parsed_ts = parse_ts(ts)
    except ValueError:
        raise CorruptEntry(execution_id, seq, "stored timestamp cannot be read") from None
    try:
        parsed_body = json.loads(body.decode("utf-8") if isinstance(body, bytes) else body)
    except ValueError:
        raise CorruptEntry(execution_id, seq, "stored body is not JSON") from None
    return Entry(
        execution_id=execution_id,
        seq=seq,
        ts=parsed_ts,
        kind=kind,
        actor=actor,
        body=parsed_body,
        prev_hash=prev_hash,
        hash=digest,
    )


def canonical_rows(execution_id: str, rows: Iterable[Any]) -> Iterator[Canonical]:
    """Rows ``(seq, ts, kind, actor, body as UTF-8 bytes, prev_hash, hash)`` as ``verify_canonical`` items."""
    execution = string_token(execution_id)
    tokens: dict[str, bytes] = {}  # kinds and actors repeat: encode each once
    for row in rows:
        seq, ts, kind, actor, body, prev_hash, digest = row
        try:
            kind_token = tokens.get(kind) or tokens.setdefault(kind, string_token(kind))
            actor_token = tokens.get(actor) or tokens.setdefault(actor, string_token(actor))
            # Hashing the stored body is only the full check's answer when that body is canonical:
            # a row rewritten in another spelling (NaN, unsorted keys, whitespace) and hashed over
            # that spelling must fail as decoding and re-encoding it would fail it.
            canonical = (
                hashed_bytes(seq, ts, kind_token, actor_token, body, execution, prev_hash)
                if is_canonical_json(body)
                else None
            )
        except (TypeError, ValueError, AttributeError):  # a value edited into another type: the full check decides
            canonical = None
        if len(tokens) > 4096:  # stay constant-size whatever the chain holds
            tokens.clear()
        yield execution_id, seq, prev_hash, digest, canonical, row

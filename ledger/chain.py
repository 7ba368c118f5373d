"""Canonical encoding, hash chain and export lines (pure; no I/O).

The exact rules are in docs/ledger-encoding.md; every byte here must keep matching it, because
changing the encoding breaks every stored chain. In short:

* Canonical encoding: JSON as UTF-8 with no whitespace, object keys sorted by code point; strings
  escape only ``"``, ``\\`` and U+0000-U+001F (``\\b \\f \\n \\r \\t``, the rest ``\\u00xx``
  in lower-case hex), everything else written as itself; integers in plain decimal; floats as
  Python's ``repr`` (the shortest digits that read back as the same double; ``100.0``,
  ``1e-05``, ``1e+16``); NaN, the infinities and lone surrogates have no canonical form.
* Only the entry's ``ts`` is normalised (``YYYY-MM-DDTHH:MM:SS.ffffffZ``, UTC); every string in a
  body, timestamps included, is hashed exactly as written.
* An entry's hash is the lower-case hex SHA-256 of the canonical encoding of the object
  ``{"actor", "body", "execution", "kind", "prev", "seq", "ts"}``. ``prev`` is the previous
  entry's hash, or 64 zeros for seq 1. Sequence numbers start at 1 and are contiguous.
* An export is one line per entry: the keys ``execution, seq, ts, kind, actor, body, prev, hash``
  in that order, each value in its canonical encoding, no whitespace, ending in ``\\n``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from ledger.entry import Entry, NewEntry
from ledger.store import VerifyResult

GENESIS_HASH = "0" * 64
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_ts(ts: datetime) -> str:
    """Write a timestamp in the canonical form; naive datetimes are refused, not guessed."""
    if ts.tzinfo is None:
        raise ValueError("ledger timestamps must be timezone-aware")
    return ts.astimezone(UTC).strftime(_TS_FORMAT)


def parse_ts(text: str) -> datetime:
    return datetime.strptime(text, _TS_FORMAT).replace(tzinfo=UTC)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_json_value(value: Any, path: str) -> None:
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise TypeError(f"{path}: a lone surrogate is not Unicode text and has no canonical form")
        return
    if value is None or isinstance(value, (bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{path}: NaN and infinity have no canonical form")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json_value(item, f"{path}[{i}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{path}: object keys must be strings, not {type(key).__name__}")
            _check_json_value(key, f"{path} key")
            _check_json_value(item, f"{path}.{key}")
        return
    raise TypeError(f"{path}: {type(value).__name__} is not a JSON value")


def canonical_json(value: Any) -> bytes:
    """Encode ``value`` canonically (see the module docstring)."""
    _check_json_value(value, "$")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def entry_hash(
    execution_id: str,
    seq: int,
    ts: str,
    kind: str,
    actor: str,
    body: Mapping[str, Any],
    prev_hash: str,
) -> str:
    payload = {
        "actor": actor,
        "body": body,
        "execution": execution_id,
        "kind": kind,
        "prev": prev_hash,
        "seq": seq,
        "ts": ts,
    }
    return hashlib.sha256(canonical_json(payload)).hexdigest()


def seal(execution_id: str, seq: int, new: NewEntry, prev_hash: str) -> Entry:
    """Turn a proposed entry into a chained one at position ``seq``.

    The timestamp is truncated to what the canonical form keeps (microseconds, UTC) so the
    sealed entry equals what a reader later gets back from the store.
    """
    ts_text = format_ts(new.ts)
    body = json.loads(canonical_json(dict(new.body)))
    digest = entry_hash(execution_id, seq, ts_text, new.kind, new.actor, body, prev_hash)
    return Entry(
        execution_id=execution_id,
        seq=seq,
        ts=parse_ts(ts_text),
        kind=new.kind,
        actor=new.actor,
        body=body,
        prev_hash=prev_hash,
        hash=digest,
    )


EXPORT_KEYS = ("execution", "seq", "ts", "kind", "actor", "body", "prev", "hash")


def export_line(entry: Entry) -> str:
    """One exported entry (docs/ledger-encoding.md, "Export"): the fields in ``EXPORT_KEYS``
    order, each in its canonical encoding, no whitespace, one line ending in a line feed."""
    fields = entry.to_json()
    return "{" + ",".join(f'"{key}":{canonical_json(fields[key]).decode("utf-8")}' for key in EXPORT_KEYS) + "}\n"


def verify_chain(
    entries: Iterable[Entry],
    execution_id: str | None = None,
    head: tuple[int, str] | None = None,
) -> VerifyResult:
    """Recompute every hash and link; name the first bad sequence number.

    ``head`` is a checkpoint ``(seq, hash)`` saved earlier: the chain must still contain that
    entry unchanged, which is what catches truncation and wholesale rewrites.
    """
    expected_seq = 1
    prev = GENESIS_HASH
    count = 0
    last_hash = GENESIS_HASH
    head_seen = head is None
    for entry in entries:
        if execution_id is not None and entry.execution_id != execution_id:
            return VerifyResult(False, entry.seq, "entry belongs to another execution", count, prev)
        if entry.seq != expected_seq:
            return VerifyResult(
                False, expected_seq, f"sequence gap: expected {expected_seq}, found {entry.seq}", count, prev
            )
        if entry.prev_hash != prev:
            return VerifyResult(False, entry.seq, "previous-hash link broken", count, prev)
        try:
            recomputed = entry_hash(
                entry.execution_id,
                entry.seq,
                format_ts(entry.ts),
                entry.kind,
                entry.actor,
                entry.body,
                entry.prev_hash,
            )
        except (TypeError, ValueError) as exc:
            # Content with no canonical form (NaN, a naive time) was never sealed by the store.
            return VerifyResult(False, entry.seq, f"content has no canonical form: {exc}", count, prev)
        if recomputed != entry.hash:
            return VerifyResult(False, entry.seq, "hash does not match content", count, prev)
        if head is not None and entry.seq == head[0]:
            if entry.hash != head[1]:
                return VerifyResult(False, entry.seq, "differs from the saved head checkpoint", count, prev)
            head_seen = True
        count += 1
        prev = entry.hash
        last_hash = entry.hash
        expected_seq += 1
    if not head_seen and head is not None:
        return VerifyResult(
            False, count + 1, f"truncated: saved head is seq {head[0]}, chain ends at {count}", count, last_hash
        )
    return VerifyResult(True, None, "ok", count, last_hash)

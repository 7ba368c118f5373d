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
from _json import make_encoder, make_scanner
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any, cast

from ledger.entry import Entry, NewEntry
from ledger.store import CorruptEntry, VerifyResult

GENESIS_HASH = "0" * 64
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_ts(ts: datetime) -> str:
    """Write a timestamp in the canonical form; naive datetimes are refused, not guessed."""
    if ts.tzinfo is None:
        raise ValueError("ledger timestamps must be timezone-aware")
    utc = ts.astimezone(UTC)
    if utc.year < 1000:  # strftime's %Y of such years differs between platforms: keep what it writes
        return utc.strftime(_TS_FORMAT)
    # The same text as strftime(_TS_FORMAT), several times faster.
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


# Exactly the texts format_ts writes; for them fromisoformat reads what strptime would, and refuses
# (ValueError) what strptime refuses. Other spellings strptime still accepts go to strptime.
_CANONICAL_TS = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")


def parse_ts(text: str) -> datetime:
    if _CANONICAL_TS.fullmatch(text):
        return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)
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


# What json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
# builds on every call, built once.
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def canonical_json(value: Any) -> bytes:
    """Encode ``value`` canonically (see the module docstring)."""
    _check_json_value(value, "$")
    return _encode(value).encode("utf-8")


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
    return seal_texts(execution_id, seq, new, prev_hash)[0]


def seal_texts(execution_id: str, seq: int, new: NewEntry, prev_hash: str) -> tuple[Entry, str, str]:
    """``seal``, and the two texts a store keeps: the canonical timestamp and the canonical body.

    The body is checked and encoded once; the hashed bytes are spliced around it (the same bytes
    as encoding the whole payload: its keys are in this order and its strings encode alone).
    """
    ts_text = format_ts(new.ts)
    body_text = canonical_json(dict(new.body))
    body = json.loads(body_text)
    strings = {"actor": new.actor, "execution": execution_id, "kind": new.kind, "prev": prev_hash}
    if type(seq) is int and all(type(value) is str for value in strings.values()):
        for name, value in strings.items():
            _check_json_value(value, f"$.{name}")  # the refusal encoding the payload would give
        payload = b'{"actor":%s,"body":%s,"execution":%s,"kind":%s,"prev":%s,"seq":%d,"ts":%s}' % (
            string_token(new.actor),
            body_text,
            string_token(execution_id),
            string_token(new.kind),
            string_token(prev_hash),
            seq,
            string_token(ts_text),
        )
        digest = hashlib.sha256(payload).hexdigest()
    else:
        digest = entry_hash(execution_id, seq, ts_text, new.kind, new.actor, body, prev_hash)
    # parse_ts(ts_text) is this same instant whenever ts_text has its four-digit year.
    ts = new.ts.astimezone(UTC) if len(ts_text) == 27 else parse_ts(ts_text)
    entry = Entry(
        execution_id=execution_id,
        seq=seq,
        ts=ts,
        kind=new.kind,
        actor=new.actor,
        body=body,
        prev_hash=prev_hash,
        hash=digest,
    )
    return entry, ts_text, body_text.decode("utf-8")


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
    items = ((e.execution_id, e.seq, e.prev_hash, e.hash, None, e) for e in entries)
    return verify_canonical(items, execution_id, head, _itself)


def _itself(entry: Entry) -> Entry:
    return entry


def _full_check(entry: Entry, count: int, prev: str) -> VerifyResult | None:
    """Re-encode the entry from its values and compare hashes: None when it matches."""
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
    return None


# ---------------------------------------------------------------- streaming verification
#
# Verification walks a chain once, in seq order, holding one entry at a time, so memory does not
# grow with the chain. Each entry is first checked on its *stored text*: the canonical bytes are
# assembled from the fields as stored (body already canonical JSON text) and hashed, with no JSON
# parsing, value checks or timestamp parsing. That shortcut is exact: the fields are spliced in
# forms whose boundaries cannot move (string fields as JSON string tokens, seq as digits, prev as
# the 64 hex digits just checked, ts as 27 ASCII characters, the body between them), so equal bytes
# mean each field equals what was sealed, and the full check below would accept the entry too.
# Anything else (an edited row, a non-canonical export) is decided by the full check, which
# decodes the entry and re-encodes it from its values, exactly as verify_chain always has.

Canonical = tuple[str, int, str, str, bytes | None, Any]
"""(execution id, seq, prev, hash, the hashed bytes assembled from the stored text or None,
the source handed to ``decode`` when those bytes are absent or do not match)."""


def string_token(text: str) -> bytes:
    """``text`` as a canonical JSON string token; a lone surrogate raises ``UnicodeEncodeError``.

    ``encode_basestring`` is the escaper ``canonical_json`` itself goes through (``json.dumps``
    with ``ensure_ascii=False``): ``"``, ``\\`` and U+0000-U+001F escaped, all else as itself.
    """
    return encode_basestring(text).encode("utf-8")


def hashed_bytes(
    seq: int, ts: str, kind: bytes, actor: bytes, body: bytes, execution: bytes, prev: str
) -> bytes | None:
    """The canonical bytes an entry's hash covers, from its stored text: ``kind``, ``actor`` and
    ``execution`` as canonical string tokens, ``body`` as canonical JSON. None when ``ts`` is not
    in its 27-character form (only the full check can say what such an entry is)."""
    if type(ts) is not str or len(ts) != 27 or not ts.isascii():
        return None
    return spliced(seq, ts.encode("ascii"), kind, actor, body, execution, prev.encode("ascii"))


def spliced(seq: int, ts: bytes, kind: bytes, actor: bytes, body: bytes, execution: bytes, prev: bytes) -> bytes:
    """The hashed bytes from fields already in their canonical forms (``ts`` and ``prev`` without
    their quotes): the payload's keys in code point order, no whitespace."""
    return b'{"actor":%s,"body":%s,"execution":%s,"kind":%s,"prev":"%s","seq":%d,"ts":"%s"}' % (
        actor,
        body,
        execution,
        kind,
        prev,
        seq,
        ts,
    )


def _no_default(value: object) -> object:
    raise TypeError(type(value).__name__)  # unreachable: parsed JSON holds JSON values only


# The C halves of json.loads and of canonical_json's json.dumps (sort_keys, no whitespace,
# ensure_ascii=False, allow_nan=False), made once: the per-call set-up is most of their cost on a
# body of a few hundred bytes. Canonical text has no whitespace, so the value must end the text.
_scan_value = make_scanner(cast(Any, json.JSONDecoder()))
_encode_chunks = make_encoder(None, _no_default, encode_basestring, None, ":", ",", True, False, False)


def is_canonical_json(raw: bytes) -> bool:
    """Whether ``raw`` is exactly the canonical encoding (``canonical_json``) of the value it spells."""
    try:
        text = raw.decode("utf-8")
        value, end = _scan_value(text, 0)
        # A lone surrogate spelled as an escape comes back raw, so it differs from the text too.
        return end == len(text) and "".join(_encode_chunks(value, 0)) == text
    except (ValueError, StopIteration, RecursionError):  # not UTF-8 or JSON, or NaN: not canonical
        return False


def verify_canonical(
    items: Iterable[Canonical],
    execution_id: str | None,
    head: tuple[int, str] | None,
    decode: Callable[[Any], Entry],
) -> VerifyResult:
    """``verify_chain`` over entries in their stored form, streamed; same verdicts, same reasons.

    ``decode`` turns an item's source into an ``Entry`` for the full check; it may raise
    ``CorruptEntry`` (the stored text cannot be decoded), which names that entry.
    """
    sha256 = hashlib.sha256
    expected_seq = 1
    prev = GENESIS_HASH
    head_seq, head_hash = head if head is not None else (0, "")
    head_seen = head is None
    for eid, seq, prev_hash, digest, canonical, source in items:
        count = expected_seq - 1
        if execution_id is not None and eid != execution_id:
            return VerifyResult(False, seq, "entry belongs to another execution", count, prev)
        if seq != expected_seq:
            return VerifyResult(False, expected_seq, f"sequence gap: expected {expected_seq}, found {seq}", count, prev)
        if prev_hash != prev:
            return VerifyResult(False, seq, "previous-hash link broken", count, prev)
        if canonical is None or sha256(canonical).hexdigest() != digest:
            try:
                entry = decode(source)
            except CorruptEntry as exc:
                return VerifyResult(False, exc.seq, exc.reason, count, prev)
            failure = _full_check(entry, count, prev)
            if failure is not None:
                return failure
        if seq == head_seq:
            if digest != head_hash:
                return VerifyResult(False, seq, "differs from the saved head checkpoint", count, prev)
            head_seen = True
        prev = digest
        expected_seq += 1
    count = expected_seq - 1
    if not head_seen:
        return VerifyResult(
            False, count + 1, f"truncated: saved head is seq {head_seq}, chain ends at {count}", count, prev
        )
    return VerifyResult(True, None, "ok", count, prev)

"""Reading an export line on its own bytes, for streaming verification (see ledger.chain).

An exported line (docs/ledger-encoding.md, "Export") that is exactly what ``export_line`` writes
carries each hashed field in its canonical encoding, so the hashed bytes can be spliced from the
line instead of parsing the entry and encoding it again. That shortcut is only sound on canonical
text: a line hashed over a non-canonical spelling (unsorted keys, ``NaN``, an escaped letter)
must still fail verification as the specification's parse-and-re-encode would fail it. So every
field is checked to be in its canonical form first; the body, which no pattern can check, is
decoded and encoded again and must come back byte for byte. Anything else is left to the full
check (``None``), which parses the line as JSON and accepts any spelling of the sealed values.
"""

from __future__ import annotations

import json
import re
from _json import make_encoder, make_scanner
from datetime import datetime
from json.encoder import encode_basestring
from typing import Any, cast

from ledger.chain import Canonical, spliced

# String fields with nothing to escape (the usual ids, kinds and actors); anything else is decided
# by the full check. The time is the canonical 27 characters of a four-digit year from 1000.
_STRING = rb'("[^"\\\x00-\x1f]*")'
_EXPORT_LINE = re.compile(
    rb'\{"execution":'
    + _STRING
    + rb',"seq":(0|[1-9][0-9]*),"ts":"([1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z)","kind":'
    + _STRING
    + rb',"actor":'
    + _STRING
    + rb',"body":(\{.*\}),"prev":"([0-9a-f]{64})","hash":"([0-9a-f]{64})"\}\n?'
)


def _no_default(value: object) -> object:
    raise TypeError(type(value).__name__)  # unreachable: parsed JSON holds JSON values only


# The C halves of json.loads and of canonical_json's json.dumps (sort_keys, no whitespace,
# ensure_ascii=False, allow_nan=False), made once: the per-call set-up is most of their cost on a
# body of a few hundred bytes. Canonical text has no whitespace, so the value must end the text.
_scan = make_scanner(cast(Any, json.JSONDecoder()))
_encode = make_encoder(None, _no_default, encode_basestring, None, ":", ",", True, False, False)


def is_canonical_json(raw: bytes) -> bool:
    """Whether ``raw`` is exactly the canonical encoding (``canonical_json``) of the value it spells."""
    try:
        text = raw.decode("utf-8")
        value, end = _scan(text, 0)
        # A lone surrogate spelled as an escape comes back raw, so it differs from the text too.
        return end == len(text) and "".join(_encode(value, 0)) == text
    except (ValueError, StopIteration, RecursionError):  # not UTF-8 or JSON, or NaN: not canonical
        return False


def exported_item(line: bytes) -> Canonical | None:
    """A line in exactly the exported layout and canonical throughout, as a ``verify_canonical``
    item (its source: the line); None for any other line."""
    match = _EXPORT_LINE.fullmatch(line)
    if match is None:
        return None
    execution, seq, ts, kind, actor, body, prev, digest = match.groups()
    try:
        eid = execution[1:-1].decode("utf-8")
        kind.decode("utf-8"), actor.decode("utf-8")  # valid UTF-8 (and so no lone surrogate)
        datetime.fromisoformat(ts[:-1].decode("ascii"))  # a real date and time, as parse_ts reads it
    except ValueError:
        return None
    if not is_canonical_json(body):
        return None
    number = int(seq)
    hashed = spliced(number, ts, kind, actor, body, execution, prev)
    return eid, number, prev.decode("ascii"), digest.decode("ascii"), hashed, line

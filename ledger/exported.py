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

import re
from datetime import datetime

from ledger.chain import Canonical, is_canonical_json, spliced

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

"""An independent implementation of the ledger's canonical encoding and export format, written from
docs/ledger-encoding.md alone.

It shares nothing with ``ledger.chain``: no ``json.dumps``, no ``repr`` of floats. Floats are
found with exact rational arithmetic (the shortest digit string whose value lies inside the
interval of reals that round to the double), strings are escaped character by character, and
object keys are sorted by their UTF-8 bytes (the same order as code points). The tests compare it
with the real encoder and use it to verify real exports.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

GENESIS = "0" * 64
EXPORT_KEYS = ("execution", "seq", "ts", "kind", "actor", "body", "prev", "hash")
HASHED_KEYS = ("actor", "body", "execution", "kind", "prev", "seq", "ts")
TS_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")

_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_HEX = "0123456789abcdef"


class NoCanonicalForm(ValueError):
    """The value cannot be encoded (NaN, infinity, a lone surrogate, a non-string key...)."""


def encode_string(text: str) -> str:
    out = ['"']
    for ch in text:
        cp = ord(ch)
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif cp < 0x20:
            out.append("\\u00" + _HEX[cp >> 4] + _HEX[cp & 0xF])
        elif 0xD800 <= cp <= 0xDFFF:
            raise NoCanonicalForm(f"lone surrogate U+{cp:04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def encode_integer(n: int) -> str:
    if n == 0:
        return "0"
    sign, n = ("-", -n) if n < 0 else ("", n)
    digits = []
    while n:
        n, d = divmod(n, 10)
        digits.append(_HEX[d])
    return sign + "".join(reversed(digits))


def _is_even_significand(x: float) -> bool:
    return struct.unpack("<Q", struct.pack("<d", x))[0] & 1 == 0


def shortest_digits(x: float) -> tuple[str, int]:
    """For a positive finite double: the fewest decimal digits d1..dn, and k, such that
    0.d1..dn x 10^k reads back as ``x`` (round half to even), the closest such to ``x``, and of
    two equally close the one whose last digit is even."""
    exact = Fraction(x)
    below = Fraction(math.nextafter(x, 0.0))
    above_double = math.nextafter(x, math.inf)
    # Past the largest double the next step has the same width as the one below it.
    above = Fraction(above_double) if math.isfinite(above_double) else exact + (exact - below)
    low, high = (exact + below) / 2, (exact + above) / 2
    inclusive = _is_even_significand(x)  # a tie at the boundary rounds to the even significand

    def inside(c: Fraction) -> bool:
        return (low <= c <= high) if inclusive else (low < c < high)

    e = math.floor(math.log10(x))  # a first guess, made exact: 10^e <= x < 10^(e+1)
    while Fraction(10) ** (e + 1) <= exact:
        e += 1
    while Fraction(10) ** e > exact:
        e -= 1
    for n in range(1, 18):
        unit = Fraction(10) ** (e + 1 - n)
        floor_count = math.floor(exact / unit)
        candidates = [c for c in (floor_count, floor_count + 1) if inside(c * unit)]
        if not candidates:
            continue
        # The closest to x; exactly halfway (possible where doubles are 0.25 apart), the even one.
        count = min(candidates, key=lambda c: (abs(c * unit - exact), c % 2))
        digits = encode_integer(count)
        k = len(digits) + (e + 1 - n)
        return digits.rstrip("0"), k
    raise AssertionError(f"no shortest form for {x!r}")  # 17 digits always suffice


def encode_float(x: float) -> str:
    if not math.isfinite(x):
        raise NoCanonicalForm("NaN and infinity have no canonical form")
    sign = "-" if math.copysign(1.0, x) < 0 else ""
    if x == 0:
        return sign + "0.0"
    digits, k = shortest_digits(abs(x))
    n = len(digits)
    if -4 < k <= 16:
        if k <= 0:
            body = "0." + "0" * (-k) + digits
        elif k < n:
            body = digits[:k] + "." + digits[k:]
        else:
            body = digits + "0" * (k - n) + ".0"
    else:
        mantissa = digits[0] + ("." + digits[1:] if n > 1 else "")
        exponent = k - 1
        body = mantissa + "e" + ("-" if exponent < 0 else "+") + encode_integer(abs(exponent)).rjust(2, "0")
    return sign + body


def canonical(value: Any) -> str:
    """The canonical encoding as text (its UTF-8 bytes are what is hashed)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return encode_integer(value)
    if isinstance(value, float):
        return encode_float(value)
    if isinstance(value, str):
        return encode_string(value)
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise NoCanonicalForm("object keys must be strings")
        # UTF-8 byte order is code point order; surrogatepass only lets a lone surrogate reach
        # encode_string, which refuses it.
        keys = sorted(value, key=lambda k: k.encode("utf-8", "surrogatepass"))
        return "{" + ",".join(encode_string(k) + ":" + canonical(value[k]) for k in keys) + "}"
    if isinstance(value, Sequence):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    raise NoCanonicalForm(f"{type(value).__name__} is not a JSON value")


def entry_hash(entry: Mapping[str, Any]) -> str:
    payload = {k: entry[k] for k in HASHED_KEYS}
    return hashlib.sha256(canonical(payload).encode("utf-8")).hexdigest()


def export_line(entry: Mapping[str, Any]) -> str:
    """One exported entry: fixed key order, canonical values, LF-terminated."""
    return "{" + ",".join(encode_string(k) + ":" + canonical(entry[k]) for k in EXPORT_KEYS) + "}\n"


def parse_export_line(line: str) -> dict[str, Any]:
    """Read one line with the spec's number rule: a fraction or exponent makes a double."""

    def refuse(name: str) -> None:
        raise NoCanonicalForm(f"{name} is not JSON")

    data: dict[str, Any] = json.loads(line, parse_float=float, parse_int=int, parse_constant=refuse)
    return data


def verify_export(raw: bytes) -> tuple[bool, str]:
    """Verify an export file from the spec alone: line format, hashes, links, sequence."""
    if not raw.endswith(b"\n"):
        return False, "the file does not end with a line feed"
    lines = raw.decode("utf-8").split("\n")[:-1]
    prev, execution = GENESIS, None
    for number, line in enumerate(lines, start=1):
        entry = parse_export_line(line)
        if tuple(entry) != EXPORT_KEYS:
            return False, f"line {number}: keys {tuple(entry)}"
        if export_line(entry) != line + "\n":
            return False, f"line {number}: not in the export line format"
        if not TS_PATTERN.fullmatch(entry["ts"]):
            return False, f"line {number}: ts {entry['ts']!r}"
        execution = execution or entry["execution"]
        if entry["execution"] != execution or entry["seq"] != number or entry["prev"] != prev:
            return False, f"line {number}: execution, seq or prev link"
        if entry_hash(entry) != entry["hash"]:
            return False, f"line {number}: hash does not match"
        prev = entry["hash"]
    return True, f"{len(lines)} entries, head {prev}"

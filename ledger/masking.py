"""One masking function for everything that is written, posted, logged or exported.

Rules:
* Values under a sensitive key (token, password, secret, authorization, api key, credential,
  cookie, private key, or any key the plan marks sensitive) become ``"***"``; account-like keys
  (iban, account number) keep only their last 4 characters.
* In free text: ``Authorization``/``Bearer`` values, Slack tokens (``xox?-``, ``xapp-``),
  ``password=``/``token=`` style assignments (also ``access_token=``, ``"api_key": "..."``),
  passwords in URLs (``scheme://user:pw@host``) and private-key blocks become ``***``.
* Digit runs of 13 or more digits (optionally grouped by spaces or dashes) are treated as card
  numbers: at most the first 6 and the last 4 digits stay visible. A longer run is masked too,
  since a card glued to other digits is still a card. IBANs keep the country code and
  the last 4 characters. Masking a number that only looks like a card is the safe error.

Masking is idempotent: ``mask(mask(x)) == mask(x)``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

MASK = "***"

# Key names are split into words (snake, kebab, dotted and camelCase) so "tokenizer" or
# "passenger" are not mistaken for secrets while "bot_token" and "apiKey" are.
_SECRET_WORDS = frozenset(
    {
        "token",
        "password",
        "passwd",
        "pwd",
        "secret",
        "authorization",
        "credential",
        "credentials",
        "cookie",
        "apikey",
        "privatekey",
        "signingsecret",
        "sessionid",
        "pin",
        "cvv",
        "cvc",
        "passphrase",
    }
)
_ACCOUNT_WORDS = frozenset({"iban", "pan", "acct", "accountnumber", "accountno", "accountnum", "cardnumber"})
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")


@lru_cache(maxsize=4096)
def _key_words(name: str) -> frozenset[str]:
    # Key names repeat in every entry (a key name is not a secret, so it may be kept).
    words = [w.lower() for w in _WORD_SPLIT.split(name) if w]
    pairs = {a + b for a, b in itertools.pairwise(words)}
    return frozenset(words) | pairs


_BEARER = re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=\-]{4,}", re.IGNORECASE)
_AUTH_HEADER = re.compile(r"(authorization\s*[:=]\s*)(\"?)[^\s\",;]+(?:\s+[^\s\",;]+)?", re.IGNORECASE)
_SLACK_TOKEN = re.compile(r"\b(xox[abposer]|xapp)-[A-Za-z0-9-]{6,}")
# The name may carry a prefix (access_token, DB_PASSWORD) and a closing quote (JSON text). It
# starts only where a name starts (not at every "\b" inside "a.b-c"), which keeps this linear.
_ASSIGNMENT = re.compile(
    r"(?<![\w.-])([\w.-]*?(?:pass(?:word)?|passwd|pwd|token|secret(?:[_-]?key)?|api[_-]?key|access[_-]?key)"
    r"[\"']?\s*[=:]\s*)"
    r"(\"[^\"]*\"|'[^']*'|[^\s,;&\"']+)",
    re.IGNORECASE,
)
_URL_PASSWORD = re.compile(r"((?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)([^\s@/]+)(@)")
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL)
# 13 or more digits, optionally separated into groups by single spaces or dashes. The run is taken
# whole, so what remains after masking never joins into a new run; a neighbouring "*" (Slack bold)
# must not shield a card.
_CARD = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,}(?!\d)")
# A hex digest (plan or ledger hash) under a digest-named key contains long digit runs by chance;
# it is not a card number and must survive intact, or a recorded digest could not be compared.
_DIGEST_WORDS = frozenset({"sha256", "sha1", "sha512", "hash", "digest", "prev", "head"})
_HEX_DIGEST = re.compile(r"^[0-9a-f]{32,128}$")
_IBAN = re.compile(r"\b([A-Z]{2})(\d{2})((?:\s?[A-Z0-9]){11,30})\b")


def _mask_card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]


def _mask_assignment(match: re.Match[str]) -> str:
    value = match.group(2)
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group(1)}{quote}{MASK}{quote}"


def _mask_iban(match: re.Match[str]) -> str:
    compact = re.sub(r"\s", "", match.group(0))
    if not any(c.isdigit() for c in compact[4:]):
        return match.group(0)
    return compact[:2] + "*" * (len(compact) - 6) + compact[-4:]


def mask_text(text: str) -> str:
    text = _PRIVATE_KEY.sub(MASK, text)
    text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    text = _SLACK_TOKEN.sub(MASK, text)
    text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{MASK}{m.group(3)}", text)
    text = _ASSIGNMENT.sub(_mask_assignment, text)
    text = _IBAN.sub(_mask_iban, text)
    return _CARD.sub(_mask_card, text)


def _mask_account(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    text = str(value)
    keep = 4 if len(text) > 8 else 0
    return "*" * max(len(text) - keep, 3) + (text[-keep:] if keep else "")


def mask(value: Any, sensitive_keys: Iterable[str] = ()) -> Any:
    """Return a masked copy of ``value`` (JSON-like data or a string)."""
    extra = frozenset(k.lower() for k in sensitive_keys)
    return _mask(value, extra)


def _mask(value: Any, extra: frozenset[str]) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            name = str(key)
            words = _key_words(name)
            if name.lower() in extra or words & _SECRET_WORDS:
                out[key] = item if item is None or isinstance(item, bool) else MASK
            elif words & _ACCOUNT_WORDS:
                out[key] = _mask_account(item) if not isinstance(item, (Mapping, list, tuple)) else MASK
            elif words & _DIGEST_WORDS and isinstance(item, str) and _HEX_DIGEST.match(item):
                out[key] = item
            else:
                out[key] = _mask(item, extra)
        return out
    if isinstance(value, (list, tuple)):
        return [_mask(item, extra) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and len(str(abs(value))) >= 13:
        # A bare integer of card length is masked like one (it becomes a string).
        return mask_text(str(value))
    return value

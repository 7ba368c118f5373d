"""The keyring of trusted approver keys: whose each key is, in which role, and whether it is revoked.

Rules:

* The keyring is configured outside the packages directory (the ``STAGEHOLD_KEYRING`` setting):
  whoever can write a package must not be able to make their own key trusted.
* Each key is a verifier key ``NAME+KEYID+BASE64`` (what ``stagehold keygen`` prints, the form of
  c2sp.org/signed-note), given to exactly one owner (a Slack user id) and one role.
* A key listed twice is refused: one key, one owner, one role.
* ``revoked`` is the time from which the key's signatures no longer count, whatever time they claim.

``load_keyring(path)`` returns a ``Keyring`` or raises ``InvalidChange`` with every ``Problem``
(file, line, path, message), like a change package.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationError, model_validator

from execution.contract.load import InvalidChange, Problem, _parse, _read
from execution.contract.messages import explain
from execution.contract.models import AwareTime, Name, SlackId, Strict
from execution.contract.source import format_path
from ledger.note import NoteError, Verifier, parse_vkey


def _check_vkey(text: str) -> str:
    try:
        parse_vkey(text)
    except NoteError as exc:
        raise ValueError(str(exc)) from None
    return text


class KeyringEntry(Strict):
    vkey: Annotated[str, Field(max_length=400), AfterValidator(_check_vkey)] = Field(
        description="verifier key NAME+KEYID+BASE64 of the approver's Ed25519 key (stagehold keygen prints it)"
    )
    owner: SlackId = Field(description="Slack user id of the person who holds the private key")
    role: Name = Field(description="the approver role this key signs in, e.g. change-advisory-board")
    revoked: AwareTime | None = Field(None, description="from this time on the key's signatures never count")

    @property
    def verifier(self) -> Verifier:
        return parse_vkey(self.vkey)

    def revoked_at(self, now: datetime) -> datetime | None:
        return self.revoked if self.revoked is not None and self.revoked <= now else None


class Keyring(Strict):
    stagehold: Literal[1]
    kind: Literal["approver-keyring"]
    keys: Annotated[list[KeyringEntry], Field(max_length=1000)]

    @model_validator(mode="after")
    def _each_key_once(self) -> Keyring:
        seen: set[tuple[str, int]] = set()
        for entry in self.keys:
            v = entry.verifier
            if (v.name, v.key_id) in seen:
                raise ValueError(f"key {v.name}+{v.key_hex} is listed twice")
            seen.add((v.name, v.key_id))
        return self

    def index(self) -> dict[tuple[str, int], KeyringEntry]:
        """Entries by (key name, key id): the pair that identifies a key in a signed note."""
        return {(e.verifier.name, e.verifier.key_id): e for e in self.keys}


EMPTY_KEYRING = Keyring(stagehold=1, kind="approver-keyring", keys=[])


def load_keyring(path: str | Path) -> Keyring:
    shown = str(path)
    raw, problems = _read(Path(path), shown)
    if raw is None:
        raise InvalidChange(problems)
    doc, problems = _parse(raw, shown)
    if doc is None:
        raise InvalidChange(problems)
    if not isinstance(doc.data, dict):
        raise InvalidChange([Problem(shown, doc.line_of(()), "(document)", "expected a mapping of fields")])
    try:
        return Keyring.model_validate(doc.data)
    except ValidationError as exc:
        root = Keyring.model_json_schema(by_alias=True)
        found = []
        for err in exc.errors(include_url=False):
            loc, message = explain(err, root)
            found.append(Problem(shown, doc.line_of(loc), format_path(loc), message))
        raise InvalidChange(found) from None

"""Signed approvals of a change package: the statement an approver signs, and the pure check of a
package's signatures against the keyring and the package's approval policy.

Rules:

* An approval is a signed note (c2sp.org/signed-note, Ed25519) whose text states the package id,
  the SHA-256 of the package file's exact bytes (which pin the plan's digest), the signer's Slack
  id, the role claimed and the time. Change one byte of the package and every signature over it
  stops counting.
* Only the keyring says which keys are trusted, whose they are and in which role. A signature
  claiming another owner or role than the keyring gives its key is invalid.
* A revoked key's signatures never count, whatever time they claim: a stolen key can backdate.
* A valid signature over other bytes (an earlier version of the package, another package) is a
  replay and never counts.
* A person counts once: distinct owners fill the policy, even one holding keys in several roles.
* The policy is the package's ``approvals.require`` (COUNT distinct signers per ROLE); without
  it, every person in ``approved_by`` must sign in the role listed there. ``approved_by`` stays
  the readable list of who approves; the signatures are the proof.
* The check never raises: a malformed file is an invalid signature, not an error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from execution.contract.keyring import Keyring, KeyringEntry
from execution.contract.models import ChangePackage
from ledger.chain import format_ts, parse_ts
from ledger.note import NoteError, Signer, check_note, parse_note, sign_note

STATEMENT_HEADER = "stagehold approval v1"
_FIELDS = ("package", "sha256", "signer", "role", "at")

Status = Literal["valid", "invalid", "unknown", "revoked", "replayed"]


# ---------------------------------------------------------------- the signed statement


@dataclass(frozen=True)
class Statement:
    """What an approver signs. ``text()`` is the note text, one ``field value`` line each."""

    package: str
    sha256: str
    signer: str
    role: str
    at: datetime

    def text(self) -> str:
        values = (self.package, self.sha256, self.signer, self.role, format_ts(self.at))
        for name, value in zip(_FIELDS, values, strict=True):
            if not value or "\n" in value or any(ord(c) < 0x20 for c in value):
                raise ValueError(f"approval {name} must be one non-empty line")
        return STATEMENT_HEADER + "\n" + "".join(f"{n} {v}\n" for n, v in zip(_FIELDS, values, strict=True))


def parse_statement(text: str) -> Statement:
    lines = text.split("\n")
    if lines[0] != STATEMENT_HEADER or len(lines) != len(_FIELDS) + 2 or lines[-1] != "":
        raise ValueError(f"not a '{STATEMENT_HEADER}' statement")
    values: dict[str, str] = {}
    for name, line in zip(_FIELDS, lines[1:-1], strict=True):
        key, sep, value = line.partition(" ")
        if key != name or not sep or not value:
            raise ValueError(f"expected '{name} VALUE', found {line[:60]!r}")
        values[name] = value
    sha = values["sha256"]
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ValueError("sha256 is 64 lower-case hex digits")
    try:
        at = parse_ts(values["at"])
    except ValueError:
        raise ValueError("at is a time YYYY-MM-DDTHH:MM:SS.ffffffZ") from None
    return Statement(values["package"], sha, values["signer"], values["role"], at)


def sign_approval(signer: Signer, statement: Statement) -> str:
    """The approval file's content: ``statement`` signed by ``signer``."""
    return sign_note(statement.text(), signer)


# ---------------------------------------------------------------- the policy


@dataclass(frozen=True)
class Requirement:
    """``count`` distinct signers in ``role``; with ``user``, that one person in that role."""

    role: str
    count: int = 1
    user: str | None = None

    def describe(self) -> str:
        if self.user is not None:
            return f"{self.user} as {self.role}"
        return f"{self.count} from {self.role}"


def policy_of(package: ChangePackage) -> tuple[Requirement, ...]:
    """The approvals a live run of ``package`` needs (see the module rules)."""
    if package.approvals is not None:
        return tuple(Requirement(q.role, q.count) for q in package.approvals.require)
    named: dict[tuple[str, str], Requirement] = {}
    for a in package.approved_by:
        named.setdefault((a.user, a.role), Requirement(a.role, 1, a.user))
    return tuple(named.values())


# ---------------------------------------------------------------- the check


@dataclass(frozen=True)
class SignatureFinding:
    source: str
    status: Status
    detail: str
    key: str = ""
    owner: str | None = None
    role: str | None = None
    signed_sha256: str | None = None
    at: str | None = None

    def describe(self) -> str:
        who = f"{self.owner} as {self.role}" if self.owner else "unknown signer"
        return f"{self.source}: {self.status}: {who}{' (' + self.key + ')' if self.key else ''}: {self.detail}"


@dataclass(frozen=True)
class ApprovalReport:
    package_sha256: str
    policy: tuple[Requirement, ...]
    signatures: tuple[SignatureFinding, ...]
    counted: tuple[SignatureFinding, ...]
    missing: tuple[str, ...]

    @property
    def approved(self) -> bool:
        return bool(self.policy) and not self.missing

    def with_status(self, status: Status) -> tuple[SignatureFinding, ...]:
        return tuple(s for s in self.signatures if s.status == status)

    def record(self) -> dict[str, Any]:
        """What the execution's first ledger entry keeps of the approvals (JSON values only)."""
        return {
            "package_sha256": self.package_sha256,
            "approved": self.approved,
            "policy": [r.describe() for r in self.policy],
            "signed_by": [
                {"key": s.key, "owner": s.owner, "role": s.role, "sha256": s.signed_sha256, "at": s.at}
                for s in self.counted
            ],
            "refused": [
                {"source": s.source, "status": s.status, "key": s.key} for s in self.signatures if s.status != "valid"
            ],
            "missing": list(self.missing),
        }


def check_approvals(
    package_bytes: bytes,
    package_id: str | None,
    signatures: Sequence[tuple[str, bytes]],
    keyring: Keyring,
    policy: Sequence[Requirement],
    now: datetime,
) -> ApprovalReport:
    """Who signed ``package_bytes``, which signatures do not count and why, and what is missing.

    ``signatures`` are ``(source, content)`` pairs (the approval files). Never raises.

    Worked example: the policy asks for 2 from change-advisory-board. Dana's key (CAB) signed these
    bytes; Lee's key (CAB) signed the package before its window was edited; Mallory signed with a key
    the keyring does not hold. The report has Dana valid and counted, Lee ``replayed`` (signed
    another SHA-256), Mallory ``unknown``, and ``missing`` = ("1 more from change-advisory-board
    (have 1 of 2)",): not approved.
    """
    digest = hashlib.sha256(package_bytes).hexdigest()
    index = keyring.index()
    findings = tuple(_check_one(source, content, digest, package_id, index, now) for source, content in signatures)
    counted, missing = _fill(policy, [f for f in findings if f.status == "valid"])
    return ApprovalReport(digest, tuple(policy), findings, counted, missing)


def _check_one(
    source: str,
    content: bytes,
    digest: str,
    package_id: str | None,
    index: dict[tuple[str, int], KeyringEntry],
    now: datetime,
) -> SignatureFinding:
    try:
        note = parse_note(content)
    except NoteError as exc:
        return SignatureFinding(source, "invalid", f"not a signed approval: {exc}")
    if len(note.signatures) != 1:
        return SignatureFinding(
            source, "invalid", f"an approval carries one signature, this has {len(note.signatures)}"
        )
    sig = note.signatures[0]
    key = f"{sig.name}+{sig.key_hex}"
    try:
        claim: Statement | None = parse_statement(note.text)
    except ValueError:
        claim = None
    claimed = {
        "owner": claim.signer if claim else None,
        "role": claim.role if claim else None,
        "signed_sha256": claim.sha256 if claim else None,
        "at": format_ts(claim.at) if claim else None,
    }
    entry = index.get((sig.name, sig.key_id))
    if entry is None:
        return SignatureFinding(source, "unknown", "the keyring holds no such key", key, **claimed)
    trusted = {**claimed, "owner": entry.owner, "role": entry.role}
    revoked = entry.revoked_at(now)
    if revoked is not None:
        return SignatureFinding(source, "revoked", f"key revoked since {format_ts(revoked)}", key, **trusted)
    if not check_note(note, (entry.verifier,)).trusted:
        return SignatureFinding(source, "invalid", "the signature does not verify (forged or altered)", key, **trusted)
    if claim is None:
        return SignatureFinding(source, "invalid", "signed text is not an approval statement", key, **trusted)
    if (claim.signer, claim.role) != (entry.owner, entry.role):
        return SignatureFinding(
            source,
            "invalid",
            f"claims {claim.signer} as {claim.role}; the keyring gives this key to {entry.owner} as {entry.role}",
            key,
            **trusted,
        )
    if package_id is not None and claim.package != package_id:
        return SignatureFinding(source, "replayed", f"signed package {claim.package}, not {package_id}", key, **trusted)
    if claim.sha256 != digest:
        return SignatureFinding(
            source,
            "replayed",
            f"signed other bytes (sha256 {claim.sha256[:12]}…, this file is {digest[:12]}…): "
            "the package changed after it was signed",
            key,
            **trusted,
        )
    return SignatureFinding(source, "valid", "signature verifies over these bytes", key, **trusted)


def _fill(
    policy: Sequence[Requirement], valid: Sequence[SignatureFinding]
) -> tuple[tuple[SignatureFinding, ...], tuple[str, ...]]:
    """Match distinct signers to the policy's places (a small bipartite matching); what stays empty is missing."""
    people: dict[str, list[SignatureFinding]] = {}
    for f in valid:
        assert f.owner is not None
        people.setdefault(f.owner, []).append(f)
    slots = [(i, r) for i, r in enumerate(policy) for _ in range(r.count)]

    def fits(owner: str, req: Requirement) -> SignatureFinding | None:
        for f in people[owner]:
            if f.role == req.role and (req.user is None or req.user == owner):
                return f
        return None

    holder: dict[int, str] = {}  # slot index -> owner

    def place(owner: str, seen: set[int]) -> bool:
        for s, (_, req) in enumerate(slots):
            if s in seen or fits(owner, req) is None:
                continue
            seen.add(s)
            if s not in holder or place(holder[s], seen):
                holder[s] = owner
                return True
        return False

    for owner in sorted(people):
        place(owner, set())
    chosen = {id(fits(owner, slots[s][1])) for s, owner in holder.items()}
    counted = [v for v in valid if id(v) in chosen]  # in the order the files were given
    missing = []
    for i, req in enumerate(policy):
        have = sum(1 for s in holder if slots[s][0] == i)
        if have < req.count:
            missing.append(
                f"a signature by {req.user} as {req.role}"
                if req.user is not None
                else f"{req.count - have} more from {req.role} (have {have} of {req.count})"
            )
    return tuple(counted), tuple(missing)


def refusal(report: ApprovalReport | None) -> str | None:
    """Why a live run may not start on these approvals (one line), or None when it may.

    >>> refusal(None)
    'no signed approvals were checked (no keyring configured: set STAGEHOLD_KEYRING)'
    """
    if report is None:
        return "no signed approvals were checked (no keyring configured: set STAGEHOLD_KEYRING)"
    if report.approved:
        return None
    bad = [f"{s.source} {s.status}" for s in report.signatures if s.status != "valid"]
    return (
        f"not approved: missing {'; '.join(report.missing)}"
        + (f"; not counted: {', '.join(bad)}" if bad else "")
        + f" (package sha256 {report.package_sha256[:12]}…)"
    )

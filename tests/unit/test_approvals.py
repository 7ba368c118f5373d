"""The pure check of signed approvals: who signed, what does not count and why, and what is missing."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from execution.approvals import (
    Requirement,
    Statement,
    check_approvals,
    parse_statement,
    policy_of,
    sign_approval,
)
from execution.contract import InvalidChange, load_change
from execution.contract.keyring import Keyring, KeyringEntry, load_keyring
from execution.contract.models import ChangePackage
from execution.contract.signatures import read_signatures, write_signature
from ledger.note import Signer, generate_private_key, sign_note

NOW = datetime(2026, 11, 28, 21, 0, tzinfo=UTC)
PACKAGE = b"stagehold: 1\nkind: change-package\nid: CHG-2041\n"
DIGEST = hashlib.sha256(PACKAGE).hexdigest()
CAB = "change-advisory-board"

DANA = Signer("dana", generate_private_key())
LEE = Signer("lee", generate_private_key())
RIA = Signer("ria", generate_private_key())
MALLORY = Signer("dana", generate_private_key())  # same name as Dana's key, another key


def entry(signer: Signer, owner: str, role: str = CAB, revoked: datetime | None = None) -> KeyringEntry:
    return KeyringEntry(vkey=signer.verifier.vkey, owner=owner, role=role, revoked=revoked)


KEYRING = Keyring(
    stagehold=1,
    kind="approver-keyring",
    keys=[entry(DANA, "U01DANA"), entry(LEE, "U02LEE"), entry(RIA, "U04RIA", role="security")],
)
TWO_CAB = (Requirement(CAB, 2),)


def approval(signer: Signer, owner: str, role: str = CAB, data: bytes = PACKAGE, package: str = "CHG-2041") -> bytes:
    statement = Statement(package, hashlib.sha256(data).hexdigest(), owner, role, NOW - timedelta(hours=1))
    return sign_approval(signer, statement).encode()


def check(*sigs: tuple[str, bytes], policy: tuple[Requirement, ...] = TWO_CAB, keyring: Keyring = KEYRING):  # type: ignore[no-untyped-def]
    return check_approvals(PACKAGE, "CHG-2041", list(sigs), keyring, policy, NOW)


def test_two_distinct_cab_signers_approve() -> None:
    report = check(("a.sig", approval(DANA, "U01DANA")), ("b.sig", approval(LEE, "U02LEE")))
    assert report.approved, report.missing
    assert [s.owner for s in report.counted] == ["U01DANA", "U02LEE"]
    assert all(s.status == "valid" and s.signed_sha256 == DIGEST for s in report.signatures)
    record = report.record()
    assert record["package_sha256"] == DIGEST and record["approved"] is True
    assert {a["key"] for a in record["signed_by"]} == {
        f"dana+{DANA.verifier.key_hex}",
        f"lee+{LEE.verifier.key_hex}",
    }


def test_one_signer_is_not_two() -> None:
    report = check(("a.sig", approval(DANA, "U01DANA")), ("a2.sig", approval(DANA, "U01DANA")))
    assert not report.approved
    assert report.missing == ("1 more from change-advisory-board (have 1 of 2)",)


def test_altered_after_signing_is_a_replay() -> None:
    earlier = PACKAGE.replace(b"CHG-2041", b"CHG-2041\n# window moved")
    report = check(("a.sig", approval(DANA, "U01DANA", data=earlier)), ("b.sig", approval(LEE, "U02LEE")))
    assert not report.approved
    (dana, lee) = report.signatures
    assert dana.status == "replayed" and "changed after it was signed" in dana.detail
    assert lee.status == "valid"


def test_a_signature_for_another_package_is_a_replay() -> None:
    report = check(("a.sig", approval(DANA, "U01DANA", package="CHG-9999")), ("b.sig", approval(LEE, "U02LEE")))
    assert report.signatures[0].status == "replayed" and "CHG-9999" in report.signatures[0].detail
    assert not report.approved


def test_unknown_key_even_with_a_trusted_name() -> None:
    report = check(("m.sig", approval(MALLORY, "U01DANA")), ("b.sig", approval(LEE, "U02LEE")))
    assert report.signatures[0].status == "unknown"
    assert report.signatures[0].owner == "U01DANA"  # what it claims, shown so a human sees the impersonation
    assert not report.approved


def test_forged_signature_bytes() -> None:
    good = approval(DANA, "U01DANA").decode()
    sig_line = good.rsplit("\n", 2)[1]
    blob = sig_line.split(" ")[2]
    flipped = blob[:10] + ("A" if blob[10] != "A" else "B") + blob[11:]
    report = check(("a.sig", good.replace(blob, flipped).encode()), ("b.sig", approval(LEE, "U02LEE")))
    assert report.signatures[0].status == "invalid" and "does not verify" in report.signatures[0].detail
    assert not report.approved


def test_statement_edited_after_signing_does_not_verify() -> None:
    good = approval(DANA, "U01DANA").decode()
    edited = good.replace("role change-advisory-board", "role security")
    assert check(("a.sig", edited.encode())).signatures[0].status == "invalid"


def test_claims_must_match_the_keyring() -> None:
    report = check(("a.sig", approval(DANA, "U02LEE")), ("b.sig", approval(LEE, "U02LEE")))
    first = report.signatures[0]
    assert first.status == "invalid" and "keyring gives this key to U01DANA" in first.detail
    assert not report.approved


def test_revoked_key_never_counts_whatever_time_it_claims() -> None:
    keyring = Keyring(
        stagehold=1,
        kind="approver-keyring",
        keys=[entry(DANA, "U01DANA", revoked=NOW - timedelta(minutes=1)), entry(LEE, "U02LEE")],
    )
    report = check(("a.sig", approval(DANA, "U01DANA")), ("b.sig", approval(LEE, "U02LEE")), keyring=keyring)
    assert report.signatures[0].status == "revoked" and "revoked since" in report.signatures[0].detail
    assert not report.approved


def test_a_revocation_scheduled_for_later_does_not_apply_yet() -> None:
    keyring = Keyring(
        stagehold=1,
        kind="approver-keyring",
        keys=[entry(DANA, "U01DANA", revoked=NOW + timedelta(days=1)), entry(LEE, "U02LEE")],
    )
    assert check(("a.sig", approval(DANA, "U01DANA")), ("b.sig", approval(LEE, "U02LEE")), keyring=keyring).approved


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x00\x01binary",
        b"not a note at all\n",
        sign_note("hello\n", DANA).encode(),
        sign_note("stagehold approval v1\npackage CHG-2041\n", DANA).encode(),
        sign_note(Statement("CHG-2041", DIGEST, "U01DANA", CAB, NOW).text(), DANA, LEE).encode(),
        b"\xff" * 70_000,
    ],
)
def test_malformed_files_are_invalid_never_an_exception(content: bytes) -> None:
    report = check(("x.sig", content))
    assert report.signatures[0].status in ("invalid", "unknown")
    assert not report.approved


def test_distinct_people_fill_several_roles() -> None:
    policy = (Requirement(CAB, 1), Requirement("security", 1))
    dual = Keyring(
        stagehold=1,
        kind="approver-keyring",
        keys=[*KEYRING.keys, entry(Signer("dana-sec", DANA.private_key), "U01DANA", role="security")],
    )
    dana_sec = Signer("dana-sec", DANA.private_key)
    # Dana alone holds keys in both roles: one person, one place.
    alone = check(
        ("a.sig", approval(DANA, "U01DANA")),
        ("b.sig", approval(dana_sec, "U01DANA", role="security")),
        policy=policy,
        keyring=dual,
    )
    assert not alone.approved and len(alone.missing) == 1
    # Dana (either role) and Ria (security): the matching puts Dana on CAB.
    both = check(
        ("b.sig", approval(dana_sec, "U01DANA", role="security")),
        ("a.sig", approval(DANA, "U01DANA")),
        ("r.sig", approval(RIA, "U04RIA", role="security")),
        policy=policy,
        keyring=dual,
    )
    assert both.approved, both.missing


def test_default_policy_is_every_listed_approver() -> None:
    path = Path(__file__).parents[2] / "examples" / "payments-cutover" / "package.yaml"
    change = load_change(path)
    policy = policy_of(change.package)
    assert policy == tuple(Requirement(a.role, 1, a.user) for a in change.package.approved_by)
    report = check_approvals(path.read_bytes(), change.package.id, [], KEYRING, policy, NOW)
    assert not report.approved
    assert report.missing == tuple(f"a signature by {a.user} as {a.role}" for a in change.package.approved_by)


def test_explicit_policy_in_the_package(tmp_path: Path) -> None:
    src = Path(__file__).parents[2] / "examples" / "payments-cutover"
    (tmp_path / "plan.yaml").write_bytes((src / "plan.yaml").read_bytes())
    text = (src / "package.yaml").read_text()
    (tmp_path / "package.yaml").write_text(text + f"approvals:\n  require:\n    - {{role: {CAB}, count: 2}}\n")
    package: ChangePackage = load_change(tmp_path / "package.yaml").package
    assert policy_of(package) == (Requirement(CAB, 2),)
    (tmp_path / "package.yaml").write_text(
        text + f"approvals:\n  require:\n    - {{role: {CAB}, count: 1}}\n    - {{role: {CAB}, count: 1}}\n"
    )
    with pytest.raises(InvalidChange, match="name each role once"):
        load_change(tmp_path / "package.yaml")


def test_statement_round_trip_and_refusals() -> None:
    s = Statement("CHG-2041", DIGEST, "U01DANA", CAB, NOW)
    assert parse_statement(s.text()) == s
    with pytest.raises(ValueError, match="one non-empty line"):
        Statement("CHG\n2041", DIGEST, "U01DANA", CAB, NOW).text()
    with pytest.raises(ValueError, match="64 lower-case hex"):
        parse_statement(s.text().replace(DIGEST, DIGEST.upper()))


def test_signature_files_beside_the_package(tmp_path: Path) -> None:
    package = tmp_path / "package.yaml"
    package.write_bytes(PACKAGE)
    assert read_signatures(package) == ([], [])
    write_signature(package, DANA.verifier.key_hex, approval(DANA, "U01DANA").decode())
    write_signature(package, LEE.verifier.key_hex, approval(LEE, "U02LEE").decode())
    (tmp_path / "package.yaml.approvals" / "README").write_text("ignored")
    (tmp_path / "package.yaml.approvals" / "big.sig").write_bytes(b"x" * 70_000)
    sigs, problems = read_signatures(package)
    assert sorted(name for name, _ in sigs) == sorted([f"{DANA.verifier.key_hex}.sig", f"{LEE.verifier.key_hex}.sig"])
    assert len(problems) == 1 and "larger than" in problems[0].message
    assert check_approvals(package.read_bytes(), "CHG-2041", sigs, KEYRING, TWO_CAB, NOW).approved


def test_keyring_file_problems_name_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "keyring.yaml"
    path.write_text(
        "stagehold: 1\nkind: approver-keyring\nkeys:\n"
        f"  - vkey: {DANA.verifier.vkey}\n    owner: U01DANA\n    role: {CAB}\n"
        f"  - vkey: {DANA.verifier.vkey[:-4]}AAAA\n    owner: U01DANA\n    role: {CAB}\n"
        "  - vkey: x+y+z\n    owner: lowercase\n    role: r\n"
    )
    with pytest.raises(InvalidChange) as err:
        load_keyring(path)
    text = str(err.value)
    assert f"{path}:7: keys[1].vkey: key id" in text
    assert f"{path}:10: keys[2].vkey:" in text
    assert f"{path}:11: keys[2].owner:" in text
    path.write_text(
        "stagehold: 1\nkind: approver-keyring\nkeys:\n"
        + "".join(f"  - vkey: {DANA.verifier.vkey}\n    owner: U01DANA\n    role: {CAB}\n" for _ in range(2))
    )
    with pytest.raises(InvalidChange, match="listed twice"):
        load_keyring(path)

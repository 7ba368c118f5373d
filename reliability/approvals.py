"""Family: approvals and the witness — nothing unapproved verifies, nothing rewritten goes unseen.

Two parts:

* **Unapproved packages.** A keyring (three change-advisory-board keys, one security key, one
  revoked board key) and packages whose policy asks for two board signatures. Each trial writes a
  package to disk with approval files that are forged (signature bytes changed, the statement
  edited to the new digest, a signature line lifted from another approval, a security key claiming
  the board role), replayed (approvals of another package, or of this package's earlier version),
  re-signed by an unknown key (often under a trusted key's name, claiming its owner), signed by the
  revoked key, or genuinely signed and then altered (a field, a comment, line endings, a re-pinned
  plan). At most one genuine board signature is added, so the package is approved only if a bad
  signature were counted. The package, its approvals and the keyring are read back from disk the
  way ``stagehold validate`` reads them. Every tenth trial is a genuinely approved package, which
  must verify (a check that refused everything would otherwise pass).
* **Rewritten chains.** Three rehearsals are written to SQLite and to PostgreSQL and the bot's key
  signs a checkpoint at every hold, every stage passed and at the end, as the Slack thread gets
  them. Each trial, inside a transaction that is rolled back, rewrites a chain from a seq the
  witness has seen with new content and consistent hashes (wholesale from seq 1, one entry edited
  and the rest re-hashed, rows dropped and re-sequenced, truncated and regrown), confirms the chain
  alone still verifies, and checks it against the checkpoints read from the witness text.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import multiprocessing
import os
import random
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import text

from bot.cli import main
from bot.keys import approvals_checker
from execution.approvals import Statement, check_approvals, policy_of, refusal, sign_approval
from execution.contract import InvalidChange, load_change
from execution.contract.keyring import load_keyring
from execution.contract.signatures import read_signatures, write_signature
from ledger.chain import GENESIS_HASH, verify_chain
from ledger.note import Note, NoteSignature, Signer, generate_private_key, parse_note
from ledger.sql import SqlLedgerStore
from ledger.store import CorruptEntry
from ledger.witness import check_against_witness, read_witness, sign_checkpoint
from reliability import plans
from reliability.harness import FamilyResult, Recorder, Size, Violation
from reliability.tamper import _INSERT, Row, _build, _edit_body, _InTransaction, _pg_database, _rowdict, _semantic

CAB = "change-advisory-board"
NOW = datetime(2026, 10, 31, 12, 0, tzinfo=UTC)

INVARIANTS = [
    "no forged, replayed, unknown-key, revoked-key or altered-after-signing package verifies as approved",
    "none starts: stagehold run refuses each (exit 2) and writes no ledger",
    "each bad signature is reported as what it is (invalid, replayed, unknown, revoked)",
    "every genuinely approved package verifies as approved and passes the start gate",
    "no exception from reading or checking approvals",
    "every chain rewritten from a witnessed seq (consistent hashes, new content) is caught against the witness",
    "the rewritten chain verifies on its own (the witness is what catches it); no false alarm on untouched chains",
]

KINDS = ("forged", "replayed", "unknown-key", "revoked-key", "altered")
EXPECTED = {
    "forged": "invalid",
    "replayed": "replayed",
    "unknown-key": "unknown",
    "revoked-key": "revoked",
    "altered": "replayed",
}


# ---------------------------------------------------------------- part 1: unapproved packages


class _People:
    def __init__(self, rng: random.Random) -> None:
        self.cab = [Signer(n, generate_private_key()) for n in ("dana", "lee", "kim")]
        self.cab_owners = ["U01DANA", "U02LEE", "U07KIM"]
        self.security = Signer("ria", generate_private_key())
        self.revoked = Signer("old-cab", generate_private_key())
        self.rng = rng

    def keyring_yaml(self) -> str:
        lines = ["stagehold: 1", "kind: approver-keyring", "keys:"]
        for signer, owner in zip(self.cab, self.cab_owners, strict=True):
            lines += [f"  - vkey: {signer.verifier.vkey}", f"    owner: {owner}", f"    role: {CAB}"]
        lines += [f"  - vkey: {self.security.verifier.vkey}", "    owner: U04RIA", "    role: security"]
        lines += [
            f"  - vkey: {self.revoked.verifier.vkey}",
            "    owner: U08OLD",
            f"    role: {CAB}",
            "    revoked: 2026-10-01T00:00:00Z",
        ]
        return "\n".join(lines) + "\n"


def _package(change_id: str, rng: random.Random) -> dict[str, Any]:
    data = plans.package(change_id)
    data["title"] = f"trial {change_id} {rng.randrange(10**6)}"
    data["approved_by"] = [{"user": u, "role": CAB, "at": "2026-10-30T12:00:00Z"} for u in ("U01DANA", "U02LEE")]
    data["approvals"] = {"require": [{"role": CAB, "count": 2}]}
    return data


def _sign(signer: Signer, owner: str, role: str, package_id: str, data: bytes) -> str:
    return sign_approval(signer, Statement(package_id, hashlib.sha256(data).hexdigest(), owner, role, NOW))


def _alter(path: Path, rng: random.Random) -> str:
    """Change the package after it was signed; returns how."""
    raw = path.read_bytes()
    how = rng.choice(["field", "comment", "crlf", "whitespace", "authority", "repin"])
    if how == "comment":
        path.write_bytes(raw + b"# approved\n")
    elif how == "crlf":
        path.write_bytes(raw.replace(b"\n", b"\r\n"))
    elif how == "whitespace":
        path.write_bytes(raw.replace(b": ", b":  ", 1))
    else:
        data = yaml.safe_load(raw)
        if how == "field":
            data["window"]["closes"] = "2027-06-01T00:00:00Z"
        elif how == "authority":
            data["authorities"]["release"]["users"].append("U0MALLORY")
        else:  # a new plan, re-pinned in the package: the approvers never saw it
            plan_path = path.parent / "plan.yaml"
            plan_path.write_bytes(plan_path.read_bytes() + b"# changed\n")
            data["plan_sha256"] = hashlib.sha256(plan_path.read_bytes()).hexdigest()
        path.write_text(plans.dump(data), encoding="utf-8")
    return how


def _bad_signatures(kind: str, people: _People, path: Path, pkg_id: str, rng: random.Random, other: Path) -> str:
    """Write the trial's bad approval file(s) beside ``path``; returns the variant."""
    data = path.read_bytes()
    dana, dana_owner = people.cab[0], people.cab_owners[0]
    if kind == "forged":
        variant = rng.choice(["signature-bytes", "statement-edited", "lifted-line", "random-signature", "role-claim"])
        if variant == "role-claim":
            note = _sign(people.security, "U04RIA", CAB, pkg_id, data)
            key = people.security.verifier.key_hex
        else:
            genuine = _sign(dana, dana_owner, CAB, pkg_id, data + b"#")
            key = dana.verifier.key_hex
            parsed = parse_note(genuine)
            sig = parsed.signatures[0]
            if variant == "signature-bytes":
                blob = bytearray(sig.signature)
                blob[rng.randrange(len(blob))] ^= 1 << rng.randrange(8)
                note = Note(parsed.text, (NoteSignature(sig.name, sig.key_id, bytes(blob)),)).encode()
            elif variant == "statement-edited":
                old = parsed.text.split("\n")[2]
                note = genuine.replace(old, f"sha256 {hashlib.sha256(data).hexdigest()}")
            elif variant == "lifted-line":
                real = _sign(dana, dana_owner, CAB, "CHG-OTHER", b"other")
                note = _sign(dana, dana_owner, CAB, pkg_id, data).split("\n\n")[0] + "\n\n" + real.split("\n\n")[1]
            else:
                fake = NoteSignature(sig.name, sig.key_id, rng.randbytes(64))
                digest = hashlib.sha256(data).hexdigest()
                note = Note(Statement(pkg_id, digest, dana_owner, CAB, NOW).text(), (fake,)).encode()
        write_signature(path, key, note)
        return variant
    if kind == "replayed":
        variant = rng.choice(["other-package", "earlier-version"])
        if variant == "other-package":
            other_bytes, other_id = other.read_bytes(), "CHG-OTHER"
            write_signature(path, dana.verifier.key_hex, _sign(dana, dana_owner, CAB, other_id, other_bytes))
        else:
            earlier = data.replace(b"trial ", b"trial (draft) ", 1)
            write_signature(path, dana.verifier.key_hex, _sign(dana, dana_owner, CAB, pkg_id, earlier))
        return variant
    if kind == "unknown-key":
        variant = rng.choice(["trusted-name", "new-name"])
        name = "dana" if variant == "trusted-name" else "mallory"
        intruder = Signer(name, generate_private_key())
        write_signature(path, intruder.verifier.key_hex, _sign(intruder, dana_owner, CAB, pkg_id, data))
        return variant
    if kind == "revoked-key":
        write_signature(path, people.revoked.verifier.key_hex, _sign(people.revoked, "U08OLD", CAB, pkg_id, data))
        return "revoked-board-key"
    # altered: two genuine board signatures, then the package changes
    for signer, owner in zip(people.cab[:2], people.cab_owners[:2], strict=True):
        write_signature(path, signer.verifier.key_hex, _sign(signer, owner, CAB, pkg_id, data))
    return _alter(path, rng)


def _run_refused(path: Path, keyring: Path, workdir: Path) -> str:
    """``stagehold run`` on the package, as an operator would: '' when refused with exit 2 and no ledger written."""
    db = workdir / "run.db"
    env = {f"STAGEHOLD_CREDENTIAL_{r}": "trial" for r in ("PREFLIGHT", "EXECUTOR", "VERIFIER", "ROLLBACK")}
    env["STAGEHOLD_KEYRING"] = str(keyring)
    saved = {k: os.environ.get(k) for k in env}
    err = io.StringIO()
    try:
        os.environ.update(env)
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["run", str(path), "--as", "U05OPS", "--db", f"sqlite:///{db}"])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if code != 2:
        return f"stagehold run exited {code}: {err.getvalue()[:300]}"
    if db.exists():
        return "stagehold run created a ledger"
    return ""


def _check_from_disk(path: Path, keyring: Path) -> tuple[bool, list[str], str]:
    """(approved, statuses, problem) as ``stagehold validate`` reads package, approvals and keyring."""
    try:
        change = load_change(path)
    except InvalidChange as exc:
        return False, [], f"package refused by validation: {exc.problems[0]}"
    sigs, _problems = read_signatures(path)
    report = check_approvals(
        path.read_bytes(), change.package.id, sigs, load_keyring(keyring), policy_of(change.package), NOW
    )
    return report.approved, [s.status for s in report.signatures], ""


def run_packages(size: Size, workdir: Path, rec: Recorder) -> tuple[Counter[str], int]:
    rng = random.Random(f"{size.seed}-approvals")
    people = _People(rng)
    keyring = workdir / "keyring.yaml"
    workdir.mkdir(parents=True, exist_ok=True)
    keyring.write_text(people.keyring_yaml(), encoding="utf-8")
    other = plans.write_change(workdir / "other", _package("CHG-OTHER", rng), plans.crash_drill())
    count = size.pick(60, 1_200)
    kinds: Counter[str] = Counter()
    genuine = 0
    for n in range(count):
        trial = f"pkg-{n + 1:04d}"
        pkg_id = f"CHG-A{n + 1:04d}"
        path = plans.write_change(workdir / trial, _package(pkg_id, rng), plans.crash_drill())
        try:
            if n % 10 == 9:
                data = path.read_bytes()
                for signer, owner in zip(people.cab[1:], people.cab_owners[1:], strict=True):
                    write_signature(path, signer.verifier.key_hex, _sign(signer, owner, CAB, pkg_id, data))
                approved, statuses, problem = _check_from_disk(path, keyring)
                genuine += 1
                gate = refusal(approvals_checker(str(keyring), lambda: NOW)(load_change(path)))
                if not approved or gate is not None:
                    rec.add(trial, "genuine approval verifies", f"refused: {statuses} {problem} {gate}")
                rec.trial_done()
                continue
            kind = KINDS[(n - n // 10) % len(KINDS)]  # the genuine tenth does not shift the rotation
            variant = _bad_signatures(kind, people, path, pkg_id, rng, other)
            if kind != "altered" and rng.random() < 0.7:
                # One genuine board signature: the package is approved only if the bad one counts.
                kim = people.cab[2]
                write_signature(
                    path, kim.verifier.key_hex, _sign(kim, people.cab_owners[2], CAB, pkg_id, path.read_bytes())
                )
            kinds[f"{kind}/{variant}"] += 1
            approved, statuses, problem = _check_from_disk(path, keyring)
            if approved:
                rec.add(trial, "no unapproved package verifies", f"{kind}/{variant} verified as approved: {statuses}")
            started = _run_refused(path, keyring, workdir / trial)
            if started:
                rec.add(trial, "no unapproved package starts", f"{kind}/{variant}: {started}")
            if not problem and EXPECTED[kind] not in statuses:
                rec.add(
                    trial,
                    "bad signature reported as what it is",
                    f"{kind}/{variant}: expected {EXPECTED[kind]}, saw {statuses}",
                )
            if problem:
                kinds["refused before the signature check (package no longer validates)"] += 1
        except Exception as exc:  # an exception is itself a finding: the check must never raise
            rec.add(trial, "no exception", f"{type(exc).__name__}: {exc}")
        rec.trial_done()
    return kinds, genuine


# ---------------------------------------------------------------- part 2: rewritten chains


WITNESSED_KINDS = (
    "hold.opened",
    "stage.passed",
    "execution.completed",
    "execution.rolled_back",
    "execution.needs_human",
)


def _witness_text(ledgers: dict[str, list[Row]], bot: Signer) -> tuple[str, dict[str, int]]:
    """The checkpoints the bot would post: at every hold, stage passed and at the end."""
    notes: list[str] = []
    last: dict[str, int] = {}
    for eid, rows in ledgers.items():
        for r in rows:
            if r.kind in WITNESSED_KINDS or r is rows[-1]:
                notes.append(sign_checkpoint(bot, eid, r.seq, r.hash))
                last[eid] = r.seq
    return "\n".join(notes), last


def _forge(rows: list[Row], witnessed: int, rng: random.Random) -> tuple[str, list[Row], int]:
    """A consistent rewrite of ``rows`` from a seq the witness saw; returns (how, new rows, first changed seq)."""
    how = rng.choice(["wholesale", "edit-and-rehash", "drop-and-resequence", "truncate-and-regrow"])
    k = 1 if how == "wholesale" else rng.randint(1, witnessed)
    kept = rows[: k - 1]
    tail = [Row(**_rowdict(r)) for r in rows[k - 1 :]]
    if how == "wholesale":
        for r in tail:
            if rng.random() < 0.5:
                r.actor = rng.choice(["U0MALLORY", "U01DANA", "role:executor"])
        tail[0].body = _changed_body(tail[0].body, rng)
    elif how == "edit-and-rehash":
        tail[0].body = _changed_body(tail[0].body, rng)
    elif how == "drop-and-resequence":
        if len(tail) > 1:
            del tail[rng.randrange(len(tail))]
        else:
            tail[0].body = _changed_body(tail[0].body, rng)
    else:
        tail = tail[: rng.randint(0, len(tail))]
        tail += [Row(**_rowdict(rng.choice(rows))) for _ in range(rng.randint(1, 6))]
        tail[0].body = _changed_body(tail[0].body, rng)
    prev = kept[-1].hash if kept else GENESIS_HASH
    forged: list[Row] = []
    for i, r in enumerate(tail):
        sealed = Row(r.execution_id, k + i, r.ts, r.kind, r.actor, r.body, prev, "").sealed()
        forged.append(sealed)
        prev = sealed.hash
    return how, kept + forged, k


def _changed_body(body: str, rng: random.Random) -> str:
    for _ in range(20):
        new, _how = _edit_body(body, rng)
        try:
            json.loads(new)
        except ValueError:
            continue
        if _semantic(new, body):
            return new
    doc = json.loads(body)
    doc["forged"] = True
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _chain_backend(
    backend: str, url: str, workdir: Path, count: int, seed: int
) -> tuple[list[Violation], int, dict[str, int]]:
    ledgers = _build(url, workdir)
    bot = Signer("stagehold", generate_private_key())
    text_, last = _witness_text(ledgers, bot)
    heads = {eid: read_witness(text_, bot.verifier, eid).heads for eid in ledgers}
    rng = random.Random(f"{seed}-witness-{backend}")
    rec = Recorder()
    kinds: Counter[str] = Counter()
    store = SqlLedgerStore(url)
    try:
        with store.engine.connect() as conn:
            for n in range(count):
                eid = rng.choice(sorted(ledgers))
                how, forged, first = _forge(ledgers[eid], last[eid], rng)
                kinds[how] += 1
                trans = conn.begin()
                try:
                    conn.execute(
                        text("DELETE FROM stagehold_ledger WHERE execution_id = :e AND seq >= :k"),
                        {"e": eid, "k": first},
                    )
                    for r in forged[first - 1 :]:
                        conn.execute(text(_INSERT), _rowdict(r))
                    view = _InTransaction(conn, store.is_postgres)
                    try:
                        entries = view.read(eid)
                    except CorruptEntry as exc:
                        rec.add(f"{backend}-{n + 1}", "rewrite is consistent", f"{how}: {exc}")
                        continue
                    if not verify_chain(entries, eid).ok:
                        rec.add(
                            f"{backend}-{n + 1}",
                            "rewrite is consistent",
                            f"{how} from seq {first} breaks the chain itself",
                        )
                    if check_against_witness(entries, eid, heads[eid]).ok:
                        rec.add(
                            f"{backend}-{n + 1}",
                            "rewrite caught against the witness",
                            f"{how} of {eid} from seq {first} went unnoticed",
                        )
                finally:
                    trans.rollback()
                    rec.trial_done()
                if n % 250 == 0:
                    clean = _InTransaction(conn, store.is_postgres)
                    with conn.begin():
                        for e in ledgers:
                            if not check_against_witness(clean.read(e), e, heads[e]).ok:
                                rec.add(
                                    f"{backend}-{n + 1}", "no false alarm", f"untouched {e} fails against the witness"
                                )
    finally:
        store.close()
    kinds["checkpoints"] = sum(len(h) for h in heads.values())
    return rec.violations, rec.trials, dict(kinds)


def run(size: Size, workdir: Path) -> list[FamilyResult]:
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    rec = Recorder()
    pkg_kinds, genuine = run_packages(size, workdir / "packages", rec)
    packages = rec.trials
    per_backend = size.pick(40, 1_000)
    pg_url, drop = _pg_database()
    backends = {"sqlite": f"sqlite:///{workdir / 'ledger.db'}", "postgresql": pg_url}
    chain_kinds: Counter[str] = Counter()
    done: dict[str, int] = {}
    try:
        with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {
                name: pool.submit(_chain_backend, name, url, workdir / name, per_backend, size.seed)
                for name, url in backends.items()
            }
            for name, future in futures.items():
                violations, n, k = future.result()
                for v in violations:
                    rec.add(v.trial, v.invariant, v.detail)
                done[name] = n
                chain_kinds.update(k)
    finally:
        drop()
    checkpoints = chain_kinds.pop("checkpoints", 0)
    notes = [
        f"{packages:,} packages: {packages - genuine:,} unapproved, {genuine:,} genuinely approved (every tenth)",
        "unapproved by kind: " + ", ".join(f"{k} {n:,}" for k, n in sorted(pkg_kinds.items())),
        "every unapproved package is also given to `stagehold run` (credentials and keyring set, as an operator "
        "would): each must be refused with exit 2 before any ledger is written",
        "policy: two distinct change-advisory-board signers; 70% of unapproved packages also carry one genuine "
        "board signature, so only counting the bad one would approve them",
        f"rewritten chains: {sum(done.values()):,} ("
        + ", ".join(f"{b} {n:,}" for b, n in done.items())
        + "); "
        + ", ".join(f"{k} {n:,}" for k, n in sorted(chain_kinds.items())),
        f"witness: {checkpoints // 2} checkpoints per backend signed at every hold, stage passed and end of three "
        "rehearsals; every rewrite starts at or before the last witnessed seq (what the witness never saw, it cannot vouch for)",
    ]
    return [
        rec.result(
            "approvals",
            "Approvals and the witness",
            "trials",
            INVARIANTS,
            notes,
            size,
            started,
            trials=packages + sum(done.values()),
        )
    ]

"""``stagehold keygen``, ``stagehold approve`` and ``stagehold ledger checkpoint|verify --witness`` end to end."""

from __future__ import annotations

import shutil
import sqlite3
import stat
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.cli import main
from execution.approvals import check_approvals, policy_of
from execution.contract import load_change
from execution.contract.keyring import load_keyring
from execution.contract.signatures import approvals_dir, read_signatures
from ledger.entry import NewEntry
from ledger.sql import SqlLedgerStore

EXAMPLE = Path(__file__).parents[2] / "examples" / "payments-cutover"
EXEC = "CHG-2041-r1"
T0 = datetime(2026, 11, 28, 22, 0, tzinfo=UTC)

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    for name in (
        "STAGEHOLD_KEYRING",
        "STAGEHOLD_WITNESS_KEY",
        "STAGEHOLD_WITNESS_NAME",
        "STAGEHOLD_WITNESS_VKEY",
        "STAGEHOLD_WITNESS_FILE",
    ):
        monkeypatch.delenv(name, raising=False)

    def _run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return _run


@pytest.fixture
def change(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLE, tmp_path / "change")
    return tmp_path / "change" / "package.yaml"


def keyring(tmp_path: Path, run: Run, *people: tuple[str, str, str]) -> Path:
    lines = ["stagehold: 1", "kind: approver-keyring", "keys:"]
    for name, owner, role in people:
        code, out, err = run("keygen", "--name", name, "--out", str(tmp_path / f"{name}.pem"))
        assert code == 0, err
        lines += [f"  - vkey: {out.strip()}", f"    owner: {owner}", f"    role: {role}"]
    path = tmp_path / "keyring.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_keygen_writes_a_private_key_once(tmp_path: Path, run: Run) -> None:
    key = tmp_path / "dana.pem"
    code, out, err = run("keygen", "--name", "dana", "--out", str(key), "--owner", "U01DANA", "--role", "cab")
    assert code == 0, err
    assert out.startswith("dana+") and len(out.strip().split("+")[1]) == 8
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "owner: U01DANA" in err and "role: cab" in err
    assert run("keygen", "--name", "dana", "--key", str(key))[1] == out
    code, _, err = run("keygen", "--name", "dana", "--out", str(key))
    assert code == 2 and "never overwritten" in err
    code, _, err = run("keygen", "--name", "has space", "--out", str(tmp_path / "x.pem"))
    assert code == 2 and "spaces" in err


def test_an_openssl_key_signs_too(tmp_path: Path, run: Run, change: Path) -> None:
    key = tmp_path / "openssl.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(key)], check=True, capture_output=True)
    code, out, err = run("keygen", "--name", "dana", "--key", str(key))
    assert code == 0, err
    ring = tmp_path / "keyring.yaml"
    ring.write_text(
        f"stagehold: 1\nkind: approver-keyring\nkeys:\n  - vkey: {out.strip()}\n    owner: U01DANA\n    role: change-authority\n"
    )
    code, out, err = run("approve", str(change), "--key", str(key), "--keyring", str(ring))
    assert code == 0, err
    loaded = load_change(change)
    sigs, _ = read_signatures(change)
    report = check_approvals(change.read_bytes(), "CHG-2041", sigs, load_keyring(ring), policy_of(loaded.package), T0)
    assert report.approved, report.signatures


def test_approve_takes_identity_from_the_keyring(tmp_path: Path, run: Run, change: Path) -> None:
    ring = keyring(tmp_path, run, ("dana", "U01DANA", "change-authority"))
    code, out, err = run("approve", str(change), "--key", str(tmp_path / "dana.pem"), "--keyring", str(ring))
    assert code == 0, err
    assert "signed CHG-2041 sha256 " in out and "as U01DANA (change-authority) with key dana+" in out
    (sig,) = approvals_dir(change).iterdir()
    text = sig.read_text()
    assert text.startswith("stagehold approval v1\npackage CHG-2041\nsha256 ")
    assert "\nsigner U01DANA\nrole change-authority\n" in text and "\n\n— dana " in text


def test_approve_refuses_a_claim_the_keyring_contradicts(tmp_path: Path, run: Run, change: Path) -> None:
    ring = keyring(tmp_path, run, ("dana", "U01DANA", "change-authority"))
    code, _, err = run(
        "approve", str(change), "--key", str(tmp_path / "dana.pem"), "--keyring", str(ring), "--role", "security"
    )
    assert code == 2 and "--role security: the keyring lists this key as change-authority" in err
    assert not approvals_dir(change).exists()


def test_approve_an_unlisted_key_needs_every_claim(tmp_path: Path, run: Run, change: Path) -> None:
    keyring(tmp_path, run, ("dana", "U01DANA", "change-authority"))
    key = str(tmp_path / "dana.pem")
    code, _, err = run("approve", str(change), "--key", key)
    assert code == 2 and "give --name, --as and --role" in err
    code, _, err = run("approve", str(change), "--key", key, "--name", "dana", "--as", "U01DANA", "--role", "cab")
    assert code == 0 and "no keyring lists this key" in err


def test_approve_refuses_a_package_that_does_not_validate(tmp_path: Path, run: Run, change: Path) -> None:
    ring = keyring(tmp_path, run, ("dana", "U01DANA", "change-authority"))
    plan = change.parent / "plan.yaml"
    plan.write_text(plan.read_text() + "\n# edited after approval\n")
    code, _, err = run("approve", str(change), "--key", str(tmp_path / "dana.pem"), "--keyring", str(ring))
    assert code == 2
    assert "plan changed after approval" in err and "refusing to sign" in err


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: p.write_text("not a key"), "not a PEM private key"),
        (lambda p: None, "cannot read"),
    ],
)
def test_approve_with_a_bad_key_file(
    tmp_path: Path, run: Run, change: Path, setup: Callable[[Path], None], message: str
) -> None:
    key = tmp_path / "bad.pem"
    setup(key)
    code, _, err = run("approve", str(change), "--key", str(key), "--name", "x", "--as", "U01X", "--role", "r")
    assert code == 2 and message in err


# ---------------------------------------------------------------- the witness


def _ledger(url: str, n: int) -> None:
    store = SqlLedgerStore(url)
    try:
        store.append(
            EXEC,
            1,
            [NewEntry("stage.passed", "role:verifier", {"n": i}, T0 + timedelta(seconds=i)) for i in range(1, n + 1)],
        )
    finally:
        store.close()


def test_checkpoints_witness_a_chain_and_catch_a_wholesale_rewrite(
    tmp_path: Path, run: Run, ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STAGEHOLD_WITNESS_NAME", "stagehold.example/witness")
    code, vkey, err = run("keygen", "--name", "stagehold.example/witness", "--out", str(tmp_path / "bot.pem"))
    assert code == 0, err
    witness = tmp_path / "witness.log"
    bot = ("--key", str(tmp_path / "bot.pem"), "--append", str(witness))
    _ledger(ledger_url, 4)
    code, note, err = run("ledger", "checkpoint", EXEC, *bot, "--db", ledger_url)
    assert code == 0, err
    assert note.startswith(f"stagehold.example/witness/{EXEC}\n4\n") and "\n\n— stagehold.example/witness " in note
    store = SqlLedgerStore(ledger_url)
    store.append(EXEC, 5, [NewEntry("stage.passed", "role:verifier", {"n": 5}, T0 + timedelta(seconds=5))])
    store.close()
    assert run("ledger", "checkpoint", EXEC, *bot, "--db", ledger_url)[0] == 0

    code, out, err = run(
        "ledger", "verify", EXEC, "--witness", str(witness), "--vkey", vkey.strip(), "--db", ledger_url
    )
    assert code == 0, err
    assert "agrees with 2 witnessed head(s), the latest at seq 5" in out

    # A forger rewrites the whole chain with new content and consistent hashes.
    store = SqlLedgerStore(ledger_url)
    with store.engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(text("DELETE FROM stagehold_ledger WHERE execution_id = :e"), {"e": EXEC})
    store.close()
    store = SqlLedgerStore(ledger_url)
    store.append(
        EXEC, 1, [NewEntry("stage.passed", "U0MALLORY", {"n": i}, T0 + timedelta(seconds=i)) for i in range(1, 6)]
    )
    store.close()
    assert run("ledger", "verify", EXEC, "--db", ledger_url)[0] == 0  # the chain alone cannot tell
    code, out, err = run(
        "ledger", "verify", EXEC, "--witness", str(witness), "--vkey", vkey.strip(), "--db", ledger_url
    )
    assert code == 1
    assert f"{EXEC}: TAMPERED at seq 4: rewritten: entry 4 differs from the head the witness saw" in out


def test_witness_truncation_and_bad_witness_files(tmp_path: Path, run: Run) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    _ledger(url, 6)
    key = str(tmp_path / "bot.pem")
    vkey = run("keygen", "--name", "stagehold", "--out", key)[1].strip()
    witness = tmp_path / "witness.log"
    assert run("ledger", "checkpoint", EXEC, "--key", key, "--append", str(witness), "--db", url)[0] == 0
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        conn.execute("DELETE FROM stagehold_ledger WHERE seq > 3")
    conn.close()
    code, out, _ = run("ledger", "verify", EXEC, "--witness", str(witness), "--vkey", vkey, "--db", url)
    assert code == 1 and "TAMPERED at seq 4: truncated: the witness saw seq 6 (line 1), the chain ends at 3" in out

    other = run("keygen", "--name", "stagehold", "--out", str(tmp_path / "other.pem"))[1].strip()
    code, _, err = run("ledger", "verify", EXEC, "--witness", str(witness), "--vkey", other, "--db", url)
    assert (
        code == 2 and "no checkpoint of 'CHG-2041-r1' signed by stagehold+" in err and "1 signed by other keys" in err
    )

    forged = tmp_path / "forged.log"
    forged.write_text(witness.read_text().replace("\n6\n", "\n3\n"))
    code, _, err = run("ledger", "verify", EXEC, "--witness", str(forged), "--vkey", vkey, "--db", url)
    assert code == 2 and "witness cannot be trusted: line 1: signature by stagehold does not verify" in err

    code, _, err = run("ledger", "verify", "--witness", str(witness), "--vkey", vkey, "--db", url)
    assert code == 2 and "--witness needs an EXECUTION" in err
    code, _, err = run("ledger", "verify", EXEC, "--witness", str(witness), "--db", url)
    assert code == 2 and "no witness verifier key" in err
    code, _, err = run("ledger", "checkpoint", EXEC, "--db", url)
    assert code == 2 and "STAGEHOLD_WITNESS_KEY" in err


@pytest.mark.parametrize("where", ["environment", "lower-case environment", ".env file", "none"])
def test_validate_finds_the_configured_keyring(
    tmp_path: Path, run: Run, change: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """validate reads the settings only when something could set the keyring; wherever it is set,
    the approvals are checked against it."""
    ring = keyring(tmp_path, run, ("dana", "U01DANA", "change-authority"))
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    if where == "environment":
        monkeypatch.setenv("STAGEHOLD_KEYRING", str(ring))
    elif where == "lower-case environment":
        monkeypatch.setenv("stagehold_keyring", str(ring))
    elif where == ".env file":
        (workdir / ".env").write_text(f"STAGEHOLD_KEYRING={ring}\n", encoding="utf-8")
    code, out, err = run("validate", str(change))
    assert code == 0, err
    if where == "none":
        assert "not checked, no keyring" in out
    else:
        assert "approvals needed:" in out and "NOT APPROVED" in out

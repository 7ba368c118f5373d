"""``stagehold run``: a live execution against the package's real targets (here a sandbox that
enforces per-role credentials), in real time, started only inside the window."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import exits
from bot.cli import main
from execution.sandbox import Sandbox
from ledger.sql import SqlLedgerStore
from tests.fakes import approver

TOKENS = {"executor": "tok-exec", "rollback": "tok-rb", "preflight": "tok-pre", "verifier": "tok-ver"}

PLAN = """stagehold: 1
kind: execution-plan
# No rate window: a windowed query would read pre-change data for its whole window, and such
# samples never count toward the bake (DESIGN rule 11), which would make this run last a minute.
name: one-stage
version: 1
signals:
  error_rate:
    prometheus: {target: metrics, query: 'max(authz_errors_total{svc="tokenizer"})'}
    max_age: 60s
  legacy_ok: {http: {target: router, path: /backends/legacy/health, field: ok}, max_age: 60s}
rollback_readiness:
  - {signal: legacy_ok, pass: "== true"}
stages:
  - id: canary
    blast_radius: 5
    action: {http: {target: router, method: PUT, path: /weights, json: {tokenizer: 5, legacy: 95}}}
    confirm: {http: {target: router, path: /weights, expect: {tokenizer: 5}}}
    verify:
      bake: 1s
      every: 1s
      checks:
        - {signal: error_rate, pass: "< 0.01", hold: "< 0.02"}
    rollback:
      action: {http: {target: router, method: PUT, path: /weights, json: {tokenizer: 0, legacy: 100}}}
      confirm: {http: {target: router, path: /weights, expect: {tokenizer: 0}}}
"""

PACKAGE = """stagehold: 1
kind: change-package
id: CHG-RUN
title: one live stage
plan: plan.yaml
plan_sha256: "{digest}"
window: {{opens: "{opens}", closes: "{closes}"}}
channel: C0CHANGES
scope: {{targets: [router], max_blast_radius: 100}}
approved_by: [{{user: U01DANA, role: change-authority, at: "2025-01-01T00:00:00Z"}}]
authorities:
  initiate: {{users: [U05OPS]}}
  release: {{users: [U01DANA, U02LEE]}}
  rollback: {{users: [U03RESP]}}
targets:
  router: {{kind: http, url: "{url}"}}
  metrics: {{kind: prometheus, url: "{url}"}}
"""


@pytest.fixture(autouse=True)
def keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The approver's key and the keyring naming it (outside the package's directory): ``_package`` signs with it."""
    _, path = approver(tmp_path / "keys")
    monkeypatch.setenv("STAGEHOLD_KEYRING", str(path))
    return path


@pytest.fixture
def live_sandbox() -> Iterator[Sandbox]:
    with Sandbox(tokens=TOKENS) as sandbox:  # the wall clock: a live run reads real time
        yield sandbox


def _package(
    tmp_path: Path,
    url: str,
    opens: str = "2020-01-01T00:00:00Z",
    closes: str = "2099-01-01T00:00:00Z",
    *,
    sign: bool = True,
) -> Path:
    (tmp_path / "plan.yaml").write_text(PLAN, encoding="utf-8")
    digest = hashlib.sha256(PLAN.encode()).hexdigest()
    path = tmp_path / "package.yaml"
    path.write_text(PACKAGE.format(digest=digest, url=url, opens=opens, closes=closes), encoding="utf-8")
    if sign:
        assert main(["approve", str(path), "--key", str(tmp_path / "keys" / "dana.pem")]) == exits.OK
    return path


def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for role, token in TOKENS.items():
        monkeypatch.setenv(f"STAGEHOLD_CREDENTIAL_{role.upper()}", token)


def test_run_drives_a_live_execution_with_each_roles_own_credential(
    tmp_path: Path, live_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _credentials(monkeypatch)
    db = f"sqlite:///{tmp_path / 'run.db'}"
    code = main(
        ["run", str(_package(tmp_path, live_sandbox.url)), "--as", "U05OPS", "--db", db, "--out", str(tmp_path / "out")]
    )
    out = capsys.readouterr().out
    assert code == exits.OK, out
    assert "COMPLETED" in out
    applied = live_sandbox.applied()
    assert [(a["path"], a["role"]) for a in applied] == [("/weights", "executor")]
    store = SqlLedgerStore(db)
    (eid,) = store.executions()
    started = store.read(eid)[0]
    assert started.body["mode"] == "live" and started.body["speed"] == 1.0
    approvals = started.body["approvals"]
    assert approvals["approved"] is True
    assert approvals["package_sha256"] == hashlib.sha256((tmp_path / "package.yaml").read_bytes()).hexdigest()
    assert [(a["owner"], a["role"], a["key"].split("+")[0]) for a in approvals["signed_by"]] == [
        ("U01DANA", "change-authority", "dana")
    ]
    assert (tmp_path / "out" / "state.json").exists() and not (tmp_path / "out" / "packet.json").exists()


def test_run_names_the_missing_credential_and_starts_nothing(
    tmp_path: Path, live_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _credentials(monkeypatch)
    monkeypatch.delenv("STAGEHOLD_CREDENTIAL_ROLLBACK")
    code = main(
        ["run", str(_package(tmp_path, live_sandbox.url)), "--as", "U05OPS", "--db", f"sqlite:///{tmp_path / 'r.db'}"]
    )
    err = capsys.readouterr().err
    assert code == exits.INVALID
    assert err.strip().splitlines() == ["stagehold: missing setting: set STAGEHOLD_CREDENTIAL_ROLLBACK"]
    assert live_sandbox.applied() == []


def test_run_refuses_outside_the_window(
    tmp_path: Path, live_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _credentials(monkeypatch)
    package = _package(tmp_path, live_sandbox.url, opens="2099-01-01T00:00:00Z", closes="2099-01-02T00:00:00Z")
    code = main(["run", str(package), "--as", "U05OPS", "--db", f"sqlite:///{tmp_path / 'w.db'}"])
    assert code == exits.INVALID
    assert "the change window opens at 2099-01-01T00:00:00.000000Z; not before" in capsys.readouterr().err
    assert live_sandbox.applied() == []


def test_run_refuses_an_unsigned_package(
    tmp_path: Path, live_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _credentials(monkeypatch)
    package = _package(tmp_path, live_sandbox.url, sign=False)
    code = main(["run", str(package), "--as", "U05OPS", "--db", f"sqlite:///{tmp_path / 'u.db'}"])
    err = capsys.readouterr().err
    assert code == exits.INVALID
    assert "stagehold: refused: CHG-RUN not approved: missing a signature by U01DANA as change-authority" in err
    assert live_sandbox.applied() == [] and not (tmp_path / "u.db").exists()


def test_run_refuses_a_package_altered_after_signing(
    tmp_path: Path, live_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _credentials(monkeypatch)
    package = _package(tmp_path, live_sandbox.url)
    package.write_text(package.read_text().replace("users: [U01DANA, U02LEE]", "users: [U01DANA, U0MALLORY]"))
    capsys.readouterr()
    code = main(["run", str(package), "--as", "U05OPS", "--db", f"sqlite:///{tmp_path / 'a.db'}"])
    err = capsys.readouterr().err
    assert code == exits.INVALID
    assert "not counted:" in err and "replayed" in err and "the package changed after it was signed" in err
    assert live_sandbox.applied() == []


def test_run_refuses_without_a_keyring(
    tmp_path: Path, live_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _credentials(monkeypatch)
    package = _package(tmp_path, live_sandbox.url)
    monkeypatch.delenv("STAGEHOLD_KEYRING")
    code = main(["run", str(package), "--as", "U05OPS", "--db", f"sqlite:///{tmp_path / 'k.db'}"])
    assert code == exits.INVALID
    assert "no keyring configured: set STAGEHOLD_KEYRING" in capsys.readouterr().err
    assert live_sandbox.applied() == []

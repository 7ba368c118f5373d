"""A rehearsal may run unsigned, and says UNSIGNED in every output; a signed one records who signed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bot import exits
from bot.cli import main

EXAMPLE = Path(__file__).parents[2] / "examples" / "payments-cutover"
ARGS = ["--auto-release", "--fault", "error-rate-degraded@canary-25", "--speed", "600"]


def _rehearse(tmp_path: Path, package: Path, name: str) -> tuple[int, str, Path]:
    out = tmp_path / name
    code = main(["rehearse", str(package), *ARGS, "--db", f"sqlite:///{tmp_path / (name + '.db')}", "--out", str(out)])
    return code, "", out


def test_unsigned_rehearsal_is_marked_in_every_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STAGEHOLD_KEYRING", raising=False)
    shutil.copytree(EXAMPLE, tmp_path / "change")
    code, _, out = _rehearse(tmp_path, tmp_path / "change" / "package.yaml", "unsigned")
    console = capsys.readouterr().out
    assert code == exits.HELD
    assert "mode rehearsal, speed x600, UNSIGNED" in console
    assert json.loads((out / "state.json").read_text())["approval"]["status"] == "UNSIGNED"
    assert json.loads((out / "packet.json").read_text())["approval"]["status"] == "UNSIGNED"
    assert "**UNSIGNED** rehearsal" in (out / "packet.md").read_text()


def test_signed_rehearsal_records_its_approvals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(EXAMPLE, tmp_path / "change")
    package = tmp_path / "change" / "package.yaml"
    assert main(["keygen", "--name", "dana", "--out", str(tmp_path / "dana.pem")]) == 0
    vkey = capsys.readouterr().out.strip()
    ring = tmp_path / "keyring.yaml"
    ring.write_text(
        f"stagehold: 1\nkind: approver-keyring\nkeys:\n  - {{vkey: {vkey}, owner: U01DANA, role: change-authority}}\n"
    )
    monkeypatch.setenv("STAGEHOLD_KEYRING", str(ring))
    assert main(["approve", str(package), "--key", str(tmp_path / "dana.pem")]) == 0
    code, _, out = _rehearse(tmp_path, package, "signed")
    console = capsys.readouterr().out
    assert code == exits.HELD and "UNSIGNED" not in console
    approval = json.loads((out / "state.json").read_text())["approval"]
    assert approval["status"] == "signed" and approval["signed_by"][0]["owner"] == "U01DANA"
    assert "UNSIGNED" not in (out / "packet.md").read_text()

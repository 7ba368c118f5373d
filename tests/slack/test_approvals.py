"""/stagehold start needs signed approvals for a live run; rehearsals say UNSIGNED; the thread carries signed heads."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from bot.cli import main
from bot.clock import utc_now
from bot.keys import approvals_checker
from ledger.note import Signer, generate_private_key
from ledger.witness import check_against_witness, read_witness
from tests.fakes import approver
from tests.slack.conftest import CHANGE, CHANNEL, INITIATOR, BotFactory, Harness
from tests.slack.fake_slack import Message
from tests.slack.test_commands import command


def _open_window(package: Path) -> None:
    data = yaml.safe_load(package.read_text())
    data["window"] = {"opens": "2020-01-01T00:00:00Z", "closes": "2099-01-01T00:00:00Z"}
    package.write_text(yaml.safe_dump(data, sort_keys=False))


def test_a_live_start_needs_the_signatures_and_records_them(
    make_bot: BotFactory, packages: Path, tmp_path: Path
) -> None:
    key, ring = approver(tmp_path)
    package = packages / "chg-2041" / "package.yaml"
    _open_window(package)
    h = make_bot(start_mode="live", start_speed=1.0, approvals=approvals_checker(str(ring), utc_now))

    refused = str(command(h, f"start {CHANGE}", INITIATOR)["shown"])
    assert "Not started: CHG-2041 not approved: missing a signature by U01DANA as change-authority" in refused
    assert h.bot.engine.executions() == []

    assert main(["approve", str(package), "--key", str(key), "--keyring", str(ring)]) == 0
    package.write_text(package.read_text() + "# edited after signing\n")
    altered = str(command(h, f"start {CHANGE}", INITIATOR)["shown"])
    assert "replayed" in altered and h.bot.engine.executions() == []

    assert main(["approve", str(package), "--key", str(key), "--keyring", str(ring)]) == 0
    started = str(command(h, f"start {CHANGE}", INITIATOR)["shown"])
    assert "Started" in started, started
    first = h.bot.engine.entries(h.execution().execution_id)[0]
    assert first.body["mode"] == "live" and first.body["approvals"]["approved"] is True
    assert [a["owner"] for a in first.body["approvals"]["signed_by"]] == ["U01DANA"]
    assert "UNSIGNED" not in h.root().text + json.dumps(h.root().blocks)


def test_an_unsigned_rehearsal_is_marked_and_the_thread_carries_signed_heads(
    make_bot: BotFactory, tmp_path: Path
) -> None:
    witness = Signer("stagehold", generate_private_key())
    shipped = tmp_path / "witness.log"
    h: Harness = make_bot(witness=witness, witness_file=str(shipped))
    assert "Started" in str(command(h, f"start {CHANGE}", INITIATOR)["shown"])
    state = h.wait_state(lambda s: s.hold is not None, what="the first hold")
    assert state.unsigned

    def marked_root() -> Message | None:
        r = h.root()
        return r if "UNSIGNED" in json.dumps(r.blocks) else None

    root = h.fake.wait_for(marked_root, 15, "the UNSIGNED root card")
    assert root.text.endswith("· UNSIGNED")

    def heads() -> str | None:
        text = "\n".join(json.dumps(m.blocks) for m in h.fake.thread(CHANNEL, root.ts))
        pasted = "\n".join(b.get("text", {}).get("text", "") for m in h.fake.thread(CHANNEL, root.ts) for b in m.blocks)
        return pasted if "Signed ledger head" in text and "hold.opened" in text else None

    pasted = h.fake.wait_for(heads, 20, "a signed head in the thread")
    eid = state.execution_id
    found = read_witness(pasted, witness.verifier, eid)
    assert found.heads and not found.forged
    kinds = {e.seq: e.kind for e in h.bot.engine.entries(eid)}
    assert all(kinds[head.checkpoint.size] in ("stage.passed", "hold.opened") for head in found.heads)
    assert check_against_witness(h.bot.engine.entries(eid), eid, found.heads).ok
    in_file = read_witness(shipped.read_text(), witness.verifier, eid)
    assert {hd.checkpoint for hd in found.heads} <= {hd.checkpoint for hd in in_file.heads}
    assert check_against_witness(h.bot.engine.entries(eid), eid, in_file.heads).ok
    replies = h.fake.thread(CHANNEL, root.ts)
    assert replies and all("UNSIGNED" in json.dumps(m.blocks) for m in replies)

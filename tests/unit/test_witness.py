"""Signed checkpoints (c2sp.org/tlog-checkpoint) of one execution's chain, and checking a chain against them."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ledger.chain import GENESIS_HASH, seal
from ledger.entry import Entry, NewEntry
from ledger.note import NoteError, Signer, generate_private_key, parse_note, sign_note
from ledger.witness import (
    Checkpoint,
    WitnessedHead,
    append_checkpoint,
    check_against_witness,
    find_notes,
    parse_checkpoint,
    read_witness,
    sign_checkpoint,
)

T0 = datetime(2026, 11, 28, 22, 0, tzinfo=UTC)
EXEC = "CHG-2041-r1"
BOT = Signer("stagehold", generate_private_key())


def chain(n: int, salt: str = "") -> list[Entry]:
    out: list[Entry] = []
    prev = GENESIS_HASH
    for i in range(1, n + 1):
        e = seal(
            EXEC, i, NewEntry("stage.passed", "role:verifier", {"n": i, "s": salt}, T0 + timedelta(seconds=i)), prev
        )
        out.append(e)
        prev = e.hash
    return out


def heads(entries: list[Entry], *seqs: int) -> list[WitnessedHead]:
    text = "".join(sign_checkpoint(BOT, EXEC, s, entries[s - 1].hash) + "\n" for s in seqs)
    return list(read_witness(text, BOT.verifier, EXEC).heads)


def test_checkpoint_text_is_origin_size_and_base64_root() -> None:
    entries = chain(3)
    note = sign_checkpoint(BOT, EXEC, 3, entries[2].hash)
    lines = note.split("\n")
    assert lines[0] == "stagehold/CHG-2041-r1"
    assert lines[1] == "3"
    assert base64.b64decode(lines[2]) == bytes.fromhex(entries[2].hash)
    assert lines[3] == ""
    assert lines[4].startswith("— stagehold ")
    assert base64.b64decode(lines[4].split(" ")[2])[:4] == BOT.verifier.key_id.to_bytes(4, "big")
    cp = parse_checkpoint(parse_note(note).text)
    assert cp == Checkpoint("stagehold/CHG-2041-r1", 3, bytes.fromhex(entries[2].hash))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("o\n3\n", "three non-empty lines"),
        ("o\n03\n" + "A" * 43 + "=\n", "leading zeros"),
        ("o\n-3\n" + "A" * 43 + "=\n", "decimal"),
        ("o\n3\nAAAA\n", "32 bytes"),
        ("o\n3\n!!!!\n", "base64"),
    ],
)
def test_malformed_checkpoints(text: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        parse_checkpoint(text)


def test_the_intact_chain_agrees_with_every_head() -> None:
    entries = chain(12)
    result = check_against_witness(entries, EXEC, heads(entries, 1, 5, 12))
    assert result.ok and result.checked == 12


def test_an_appended_chain_still_agrees_with_earlier_heads() -> None:
    entries = chain(12)
    assert check_against_witness(chain(20), EXEC, heads(entries, 5, 12)).ok


def test_truncation_is_caught_at_the_first_missing_seq() -> None:
    entries = chain(12)
    result = check_against_witness(entries[:9], EXEC, heads(entries, 5, 12))
    assert not result.ok
    assert result.first_bad_seq == 10
    assert "truncated" in result.reason and "agrees up to the witnessed head at seq 5" in result.reason


def test_a_wholesale_rewrite_with_consistent_hashes_is_caught() -> None:
    entries = chain(12)
    forged = chain(12, salt="rewritten")
    result = check_against_witness(forged, EXEC, heads(entries, 5, 12))
    assert not result.ok and result.first_bad_seq == 5 and "rewritten" in result.reason


def test_a_tail_rewrite_names_the_first_disagreeing_head() -> None:
    entries = chain(12)
    forged = entries[:8]
    prev = forged[-1].hash
    for i in range(9, 13):
        e = seal(EXEC, i, NewEntry("stage.passed", "role:verifier", {"n": i, "s": "x"}, T0), prev)
        forged.append(e)
        prev = e.hash
    result = check_against_witness(forged, EXEC, heads(entries, 5, 12))
    assert (result.ok, result.first_bad_seq) == (False, 12)
    assert "agrees up to the witnessed head at seq 5" in result.reason


def test_a_fork_in_the_witness_is_reported() -> None:
    entries, other = chain(6), chain(6, salt="fork")
    both = heads(entries, 6) + heads(other, 6)
    result = check_against_witness(entries, EXEC, both)
    assert not result.ok and result.first_bad_seq == 6 and "fork" in result.reason


def test_a_chain_that_is_broken_on_its_own_reports_that_first() -> None:
    entries = chain(6)
    entries[2] = replace(entries[2], kind="hold.released")
    result = check_against_witness(entries, EXEC, heads(chain(6), 6))
    assert not result.ok and result.first_bad_seq == 3 and "hash does not match" in result.reason


def test_read_witness_sorts_trusted_other_untrusted_and_forged() -> None:
    entries = chain(4)
    mallory = Signer("stagehold", generate_private_key())
    good = sign_checkpoint(BOT, EXEC, 4, entries[3].hash)
    other_exec = sign_checkpoint(BOT, "OPS-1-r1", 2, entries[1].hash)
    untrusted = sign_checkpoint(mallory, EXEC, 4, chain(4, "m")[3].hash)
    forged = good.replace("\n4\n", "\n3\n")
    not_checkpoint = sign_note("hello\n", BOT)
    text = "\n".join([good, other_exec, untrusted, forged, not_checkpoint])
    w = read_witness(text, BOT.verifier, EXEC)
    assert [h.checkpoint.size for h in w.heads] == [4]
    assert (w.other_origins, w.untrusted) == (1, 1)
    assert len(w.forged) == 2
    assert "does not verify" in w.forged[0] and "not a checkpoint" in w.forged[1]


def test_notes_are_found_in_a_pasted_slack_thread() -> None:
    entries = chain(3)
    a = sign_checkpoint(BOT, EXEC, 2, entries[1].hash)
    b = sign_checkpoint(BOT, EXEC, 3, entries[2].hash)
    c = sign_checkpoint(BOT, EXEC, 1, entries[0].hash)  # fenced on its own lines, as Slack copies it
    pasted = (
        "stagehold  10:02 PM\nStage canary-5 passed. Signed head:\n```\n"
        + a
        + "```\nstagehold  10:09 PM\r\nHeld at canary-25.\r\n```\r\n"
        + b.replace("\n", "\r\n")
        + "```\n"
        + "```"
        + c
        + "```\n"
    )
    found = find_notes(pasted)
    assert [note for _, note in found] == [a, b, c]
    w = read_witness(pasted, BOT.verifier, EXEC)
    assert [h.checkpoint.size for h in w.heads] == [2, 3, 1]
    assert check_against_witness(entries, EXEC, w.heads).ok


def test_append_checkpoint_keeps_a_readable_file(tmp_path: Path) -> None:
    entries = chain(3)
    path = tmp_path / "witness.log"
    for seq in (1, 2, 3):
        append_checkpoint(path, sign_checkpoint(BOT, EXEC, seq, entries[seq - 1].hash))
    w = read_witness(path.read_text(), BOT.verifier, EXEC)
    assert [h.checkpoint.size for h in w.heads] == [1, 2, 3]
    assert [h.line for h in w.heads] == [1, 7, 13]

"""``stagehold ledger verify|head|export|verify-file`` against a SQLite ledger file."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot import exits
from bot.cli import main
from ledger.entry import NewEntry
from ledger.sql import SqlLedgerStore

T0 = datetime(2026, 11, 28, 22, 0, tzinfo=UTC)
EXEC = "CHG-2041-r1"
OTHER = "OPS-7730-r1"

Verifier = Callable[[list[str]], tuple[bool, int | None]]


def entries(n: int) -> list[NewEntry]:
    return [
        NewEntry(
            kind="stage.entered",
            actor="role:executor" if i % 2 else "U01DANA",
            body={"stage": f"s{i}", "weights": {"tokenizer": i * 5}, "note": "Zoë ✓", "ratio": i / 3},
            ts=T0 + timedelta(seconds=i),
        )
        for i in range(1, n + 1)
    ]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    store = SqlLedgerStore(url)
    store.append(EXEC, 1, entries(5))
    store.append(OTHER, 1, entries(3))
    store.close()
    yield url, path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def sql(path: Path, statement: str, *params: object) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(statement, params)
    conn.close()


# ---------------------------------------------------------------- verify


def test_verify_all_ok(capsys: pytest.CaptureFixture[str], db: tuple[str, Path]) -> None:
    url, _ = db
    code, out, err = run(capsys, "ledger", "verify", "--db", url)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{EXEC}: ok, 5 entries, head 5 ")
    assert lines[1].startswith(f"{OTHER}: ok, 3 entries, head 3 ")
    assert len(lines[0].rsplit(" ", 1)[1]) == 64


def test_verify_one_execution(capsys: pytest.CaptureFixture[str], db: tuple[str, Path]) -> None:
    url, _ = db
    code, out, _ = run(capsys, "ledger", "verify", OTHER, "--db", url)
    assert code == 0
    assert out.startswith(f"{OTHER}: ok, 3 entries, head 3 ")
    assert EXEC not in out


def test_verify_uses_the_database_setting(
    capsys: pytest.CaptureFixture[str], db: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url, _ = db
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("STAGEHOLD_DATABASE_URL", url)
    code, out, _ = run(capsys, "ledger", "verify", EXEC)
    assert code == 0 and out.startswith(f"{EXEC}: ok, 5 entries")


def test_hand_edited_body_is_tampering(capsys: pytest.CaptureFixture[str], db: tuple[str, Path]) -> None:
    url, path = db
    sql(path, "UPDATE stagehold_ledger SET body = ? WHERE execution_id = ? AND seq = 3", '{"stage":"s9"}', EXEC)
    code, out, _ = run(capsys, "ledger", "verify", "--db", url)
    assert code == 1
    assert f"{EXEC}: TAMPERED at seq 3: hash does not match content" in out.splitlines()
    assert any(line.startswith(f"{OTHER}: ok") for line in out.splitlines()), "other executions are still reported"
    code, out, _ = run(capsys, "ledger", "verify", EXEC, "--db", url)
    assert (code, out.strip()) == (1, f"{EXEC}: TAMPERED at seq 3: hash does not match content")


def test_body_edited_into_garbage_is_tampering_not_a_crash(
    capsys: pytest.CaptureFixture[str], db: tuple[str, Path]
) -> None:
    url, path = db
    sql(path, "UPDATE stagehold_ledger SET body = 'not json {' WHERE execution_id = ? AND seq = 2", EXEC)
    code, out, err = run(capsys, "ledger", "verify", EXEC, "--db", url)
    assert code == 1, err
    assert out.startswith(f"{EXEC}: TAMPERED at seq 2: ")
    code, _, err = run(capsys, "ledger", "export", EXEC, "--db", url)
    assert code == 1 and "TAMPERED at seq 2" in err


def test_deleted_row_is_tampering(capsys: pytest.CaptureFixture[str], db: tuple[str, Path]) -> None:
    url, path = db
    sql(path, "DELETE FROM stagehold_ledger WHERE execution_id = ? AND seq = 2", EXEC)
    code, out, _ = run(capsys, "ledger", "verify", EXEC, "--db", url)
    assert code == 1
    assert out.startswith(f"{EXEC}: TAMPERED at seq 2: sequence gap")


def test_head_then_truncation_is_detected(
    capsys: pytest.CaptureFixture[str], db: tuple[str, Path], tmp_path: Path
) -> None:
    url, path = db
    code, out, _ = run(capsys, "ledger", "head", EXEC, "--db", url)
    assert code == 0
    checkpoint = json.loads(out)
    assert out.count("\n") == 1
    assert checkpoint["execution"] == EXEC and checkpoint["seq"] == 5 and len(checkpoint["hash"]) == 64
    head_file = tmp_path / "head.json"
    head_file.write_text(out)

    assert run(capsys, "ledger", "verify", EXEC, "--head", str(head_file), "--db", url)[0] == 0

    sql(path, "DELETE FROM stagehold_ledger WHERE execution_id = ? AND seq >= 4", EXEC)
    code, out, _ = run(capsys, "ledger", "verify", EXEC, "--db", url)
    assert code == 0, "a cleanly cut tail looks like a short chain without the checkpoint"
    code, out, _ = run(capsys, "ledger", "verify", EXEC, "--head", str(head_file), "--db", url)
    assert code == 1
    assert out.startswith(f"{EXEC}: TAMPERED at seq 4: truncated: saved head is seq 5, chain ends at 3")


def test_head_catches_an_execution_deleted_outright(
    capsys: pytest.CaptureFixture[str], db: tuple[str, Path], tmp_path: Path
) -> None:
    url, path = db
    head_file = tmp_path / "head.json"
    head_file.write_text(run(capsys, "ledger", "head", EXEC, "--db", url)[1])
    sql(path, "DELETE FROM stagehold_ledger WHERE execution_id = ?", EXEC)
    assert run(capsys, "ledger", "verify", EXEC, "--db", url)[0] == 2, "without a checkpoint: unknown execution"
    code, out, _ = run(capsys, "ledger", "verify", EXEC, "--head", str(head_file), "--db", url)
    assert code == 1
    assert out.startswith(f"{EXEC}: TAMPERED at seq 1: truncated: saved head is seq 5, chain ends at 0")


def test_head_detects_a_rewrite(capsys: pytest.CaptureFixture[str], db: tuple[str, Path], tmp_path: Path) -> None:
    url, path = db
    head_file = tmp_path / "head.json"
    head_file.write_text(run(capsys, "ledger", "head", EXEC, "--db", url)[1])
    # Throw the chain away and write a different, self-consistent one in its place.
    sql(path, "DELETE FROM stagehold_ledger WHERE execution_id = ?", EXEC)
    store = SqlLedgerStore(url)
    store.append(EXEC, 1, [NewEntry("stage.entered", "U99EVIL", {"n": i}, T0) for i in range(6)])
    store.close()
    assert run(capsys, "ledger", "verify", EXEC, "--db", url)[0] == 0
    code, out, _ = run(capsys, "ledger", "verify", EXEC, "--head", str(head_file), "--db", url)
    assert code == 1
    assert out.startswith(f"{EXEC}: TAMPERED at seq 5: differs from the saved head checkpoint")


def test_head_refuses_to_checkpoint_a_damaged_chain(capsys: pytest.CaptureFixture[str], db: tuple[str, Path]) -> None:
    url, path = db
    sql(path, "UPDATE stagehold_ledger SET actor = 'U99EVIL' WHERE execution_id = ? AND seq = 1", EXEC)
    code, out, err = run(capsys, "ledger", "head", EXEC, "--db", url)
    assert (code, out) == (1, "")
    assert "TAMPERED at seq 1" in err


# ---------------------------------------------------------------- export and verify-file


def test_export_verifies_on_its_own(
    capsys: pytest.CaptureFixture[str], db: tuple[str, Path], tmp_path: Path, independent_verifier: Verifier
) -> None:
    url, _ = db
    out_file = tmp_path / "export.jsonl"
    code, out, err = run(capsys, "ledger", "export", EXEC, "--out", str(out_file), "--db", url)
    assert (code, out, err) == (0, "", "")
    lines = out_file.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5
    first = json.loads(lines[0])
    assert set(first) == {"execution", "seq", "ts", "kind", "actor", "body", "prev", "hash"}
    assert first["body"]["note"] == "Zoë ✓"
    assert "Zoë ✓" in lines[0], "UTF-8 text, not \\u escapes"

    code, out, _ = run(capsys, "ledger", "verify-file", str(out_file))
    assert code == 0
    assert out.strip() == f"{EXEC}: ok, 5 entries, head 5 {json.loads(lines[-1])['hash']}"
    assert independent_verifier(lines) == (True, None)

    # The same export on standard output.
    code, out, _ = run(capsys, "ledger", "export", EXEC, "--db", url)
    assert code == 0 and out.splitlines() == lines


def test_modified_export_is_rejected(
    capsys: pytest.CaptureFixture[str], db: tuple[str, Path], tmp_path: Path, independent_verifier: Verifier
) -> None:
    url, _ = db
    out_file = tmp_path / "export.jsonl"
    assert run(capsys, "ledger", "export", EXEC, "--out", str(out_file), "--db", url)[0] == 0
    lines = out_file.read_text(encoding="utf-8").splitlines()
    entry = json.loads(lines[3])
    entry["body"]["weights"]["tokenizer"] = 100
    lines[3] = json.dumps(entry, ensure_ascii=False)
    out_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, _ = run(capsys, "ledger", "verify-file", str(out_file))
    assert code == 1
    assert out.strip() == f"{EXEC}: TAMPERED at seq 4: hash does not match content"
    assert independent_verifier(lines) == (False, 4)

    # A dropped line.
    out_file.write_text("\n".join(lines[:1] + lines[2:]) + "\n", encoding="utf-8")
    code, out, _ = run(capsys, "ledger", "verify-file", str(out_file))
    assert code == 1 and "TAMPERED at seq 2: sequence gap" in out


def test_verify_file_accepts_any_json_spelling_of_the_entries(
    capsys: pytest.CaptureFixture[str], db: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = db
    out_file = tmp_path / "export.jsonl"
    assert run(capsys, "ledger", "export", EXEC, "--out", str(out_file), "--db", url)[0] == 0
    lines = out_file.read_text(encoding="utf-8").splitlines()
    # Spaces after separators, sorted keys, \u escapes: the same values, none of the exported bytes.
    respelled = [json.dumps(json.loads(line), sort_keys=True) for line in lines]
    for mixed in (respelled, [lines[0], respelled[1], *lines[2:]]):
        out_file.write_text("\n".join(mixed) + "\n", encoding="utf-8")
        code, out, _ = run(capsys, "ledger", "verify-file", str(out_file))
        assert (code, out.split(", head ")[0]) == (0, f"{EXEC}: ok, 5 entries")


def test_verify_file_with_a_head(capsys: pytest.CaptureFixture[str], db: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = db
    head_file = tmp_path / "head.json"
    head_file.write_text(run(capsys, "ledger", "head", EXEC, "--db", url)[1])
    export = tmp_path / "export.jsonl"
    run(capsys, "ledger", "export", EXEC, "--out", str(export), "--db", url)
    assert run(capsys, "ledger", "verify-file", str(export), "--head", str(head_file))[0] == 0
    lines = export.read_text(encoding="utf-8").splitlines()
    export.write_text("\n".join(lines[:3]) + "\n", encoding="utf-8")
    code, out, _ = run(capsys, "ledger", "verify-file", str(export), "--head", str(head_file))
    assert code == 1 and "TAMPERED at seq 4: truncated" in out


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ("{not json\n", 1, "not a JSON line"),
        ('{"seq": 1}\n', 1, "not a ledger entry (missing execution"),
        ("[1, 2]\n", 1, "expected a JSON object"),
    ],
)
def test_verify_file_refuses_a_file_that_is_not_an_export(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, line: int, message: str
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content, encoding="utf-8")
    code, out, err = run(capsys, "ledger", "verify-file", str(bad))
    assert code == exits.INVALID and out == ""
    assert err.startswith(f"stagehold ledger: {bad}:{line}: {message}")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ("GOOD\n\nGOOD2\n{broken\n", 4, "not a JSON line"),
        ("GOOD\nNAN\n", 2, "not a JSON line"),
        ("GOOD\nBADTS\n", 2, "'ts' is not a canonical timestamp"),
        ("GOOD\nSEQSTR\n", 2, "'seq' must be an integer"),
        ("GOOD\nEXTRA\n", 2, "not a ledger entry (unexpected x)"),
        ("GOOD\nGOOD2[:40]", 2, "truncated: the last line ends mid-entry"),
    ],
)
def test_an_export_damaged_after_its_first_entry_is_tampering(
    capsys: pytest.CaptureFixture[str], db: tuple[str, Path], tmp_path: Path, content: str, line: int, message: str
) -> None:
    """Once the file is an export (its first line is an entry), a later line that is not an entry
    means the export was cut or edited: exit 1, naming the line and the last good seq."""
    url, _ = db
    export = tmp_path / "export.jsonl"
    run(capsys, "ledger", "export", EXEC, "--out", str(export), "--db", url)
    good = export.read_text(encoding="utf-8").splitlines()
    second = json.loads(good[1])
    variants = {
        "GOOD": good[0],
        "GOOD2": good[1],
        "GOOD2[:40]": good[1][:40],
        "NAN": good[1].replace('"ratio":0.6666666666666666', '"ratio":NaN'),
        "BADTS": json.dumps({**second, "ts": "2026-11-28T22:00:02Z"}),
        "SEQSTR": json.dumps({**second, "seq": "2"}),
        "EXTRA": json.dumps({**second, "x": 1}),
    }
    assert variants["NAN"] != good[1]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(variants.get(part, part) for part in content.split("\n")), encoding="utf-8")
    code, out, err = run(capsys, "ledger", "verify-file", str(bad))
    assert code == exits.TAMPERED and err == ""
    last_good = 2 if line == 4 else 1
    assert len(out.splitlines()) == 1
    assert out.startswith(f"{EXEC}: TAMPERED at {bad}:{line} (after seq {last_good}): {message}")


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        pytest.param('{"b":1,"a":2}', "stage.entered", id="unsorted-keys"),
        pytest.param('{"a": 2}', "stage.entered", id="whitespace"),
        pytest.param('{"a":2.50}', "stage.entered", id="float-spelling"),
        pytest.param('{"a":"\\u0041"}', "stage.entered", id="needless-escape"),
        pytest.param('{"a":NaN}', "stage.entered", id="nan"),
        pytest.param('{"a":2}', "stage.\\u0065ntered", id="escaped-kind"),
    ],
)
def test_a_line_hashed_over_a_non_canonical_spelling_is_tampering(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, body: str, kind: str
) -> None:
    """The hash covers the canonical encoding of an entry's values, never the bytes as written: a
    line in the export layout whose hash was computed over a non-canonical spelling of its fields
    (spliced exactly where the canonical bytes would be) fails, as parsing and re-encoding it per
    docs/ledger-encoding.md fails it, even though its own bytes hash to its hash."""
    from ledger.chain import GENESIS_HASH, export_line, seal

    first = seal(EXEC, 1, entries(1)[0], GENESIS_HASH)
    ts = "2026-11-28T22:00:02.000000Z"
    hashed = (
        f'{{"actor":"U01DANA","body":{body},"execution":"{EXEC}","kind":"{kind}",'
        f'"prev":"{first.hash}","seq":2,"ts":"{ts}"}}'
    )
    digest = hashlib.sha256(hashed.encode("utf-8")).hexdigest()
    line = (
        f'{{"execution":"{EXEC}","seq":2,"ts":"{ts}","kind":"{kind}","actor":"U01DANA","body":{body},'
        f'"prev":"{first.hash}","hash":"{digest}"}}\n'
    )
    export = tmp_path / "export.jsonl"
    export.write_text(export_line(first) + line, encoding="utf-8")
    code, out, err = run(capsys, "ledger", "verify-file", str(export))
    assert (code, err) == (exits.TAMPERED, "")
    assert out.startswith(f"{EXEC}: TAMPERED at "), out
    assert "seq 2" in out or "after seq 1" in out, out


def test_an_export_cut_inside_its_first_line_is_tampering(
    capsys: pytest.CaptureFixture[str], db: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = db
    export = tmp_path / "export.jsonl"
    run(capsys, "ledger", "export", EXEC, "--out", str(export), "--db", url)
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(export.read_bytes()[:60])
    code, out, _ = run(capsys, "ledger", "verify-file", str(cut))
    assert code == exits.TAMPERED
    assert out.strip() == f"{cut}: TAMPERED at line 1: truncated: the last line ends mid-entry"
    # Text that never was an export, without a final newline either, is still the wrong input.
    other = tmp_path / "notes.txt"
    other.write_text("hello", encoding="utf-8")
    assert run(capsys, "ledger", "verify-file", str(other))[0] == exits.INVALID


def test_verify_file_refuses_binary_and_empty_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    binary = tmp_path / "junk.jsonl"
    binary.write_bytes(b'"a"\n\xff\xfe\n')
    code, _, err = run(capsys, "ledger", "verify-file", str(binary))
    assert code == 2 and f"{binary}:1: expected a JSON object" in err
    binary.write_bytes(b"\n\xff\xfe\n")
    code, _, err = run(capsys, "ledger", "verify-file", str(binary))
    assert code == 2 and f"{binary}:2: not UTF-8 text" in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, _, err = run(capsys, "ledger", "verify-file", str(empty))
    assert code == 2 and "no ledger entries" in err
    code, _, err = run(capsys, "ledger", "verify-file", str(tmp_path / "missing.jsonl"))
    assert code == 2 and "cannot read" in err


# ---------------------------------------------------------------- errors: one line, exit 2


def test_unknown_execution(capsys: pytest.CaptureFixture[str], db: tuple[str, Path]) -> None:
    url, _ = db
    for command in ("verify", "head", "export"):
        code, out, err = run(capsys, "ledger", command, "NOPE-1", "--db", url)
        assert (code, out) == (2, "")
        assert err.strip() == "stagehold ledger: unknown execution 'NOPE-1': the ledger has no entries for it"


@pytest.mark.parametrize(
    ("db_url", "message"),
    [
        (
            "postgresql://postgres@127.0.0.1:1/stagehold",
            "cannot open database postgresql://postgres@127.0.0.1:1/stagehold",
        ),
        ("postgresql://postgres:hunter2@127.0.0.1:1/x", "cannot open database postgresql://postgres:***@127.0.0.1:1/x"),
        ("not a url", "invalid database URL"),
        ("nosuchdialect://x/y", "cannot open database nosuchdialect://x/y"),
        ("sqlite:////nonexistent/dir/ledger.db", "sqlite:////nonexistent/dir/ledger.db: database file not found"),
    ],
)
def test_unreachable_or_bad_database(capsys: pytest.CaptureFixture[str], db_url: str, message: str) -> None:
    code, out, err = run(capsys, "ledger", "verify", "--db", db_url)
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"stagehold ledger: {message}")
    assert "Traceback" not in err and "hunter2" not in err


def test_missing_sqlite_file_is_not_created(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    code, _, err = run(capsys, "ledger", "verify", "--db", f"sqlite:///{path}")
    assert code == 2 and "database file not found" in err
    assert not path.exists()


def test_empty_ledger(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    SqlLedgerStore(url).close()
    code, out, err = run(capsys, "ledger", "verify", "--db", url)
    assert (code, out) == (0, "")
    assert "no executions" in err


def test_head_file_problems(capsys: pytest.CaptureFixture[str], db: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = db
    code, _, err = run(capsys, "ledger", "verify", "--head", str(tmp_path / "h.json"), "--db", url)
    assert code == 2 and "--head needs an EXECUTION" in err
    head = tmp_path / "h.json"
    for content, message in [
        ("nonsense", "not JSON"),
        ('{"seq": 1}', "not a head checkpoint"),
        ('{"execution": "CHG-2041-r1", "seq": true, "hash": "x"}', "not a head checkpoint"),
        (json.dumps({"execution": OTHER, "seq": 1, "hash": "x"}), f"checkpoint is for execution '{OTHER}'"),
    ]:
        head.write_text(content)
        code, _, err = run(capsys, "ledger", "verify", EXEC, "--head", str(head), "--db", url)
        assert code == 2 and message in err, err
    code, _, err = run(capsys, "ledger", "verify", EXEC, "--head", str(tmp_path / "missing.json"), "--db", url)
    assert code == 2 and "cannot read" in err


@pytest.mark.postgres
def test_verify_and_export_on_postgres(capsys: pytest.CaptureFixture[str], pg_url: str, tmp_path: Path) -> None:
    store = SqlLedgerStore(pg_url)
    try:
        store.append(EXEC, 1, entries(4))
    finally:
        store.close()
    code, out, _ = run(capsys, "ledger", "verify", "--db", pg_url)
    assert code == 0 and out.startswith(f"{EXEC}: ok, 4 entries, head 4 ")
    export = tmp_path / "pg.jsonl"
    assert run(capsys, "ledger", "export", EXEC, "--out", str(export), "--db", pg_url)[0] == 0
    assert run(capsys, "ledger", "verify-file", str(export))[0] == 0


def test_there_is_no_command_that_changes_the_ledger(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("delete", "update", "repair", "truncate", "rewrite", "append"):
        with pytest.raises(SystemExit) as caught:
            main(["ledger", command])
        assert caught.value.code == 2
    capsys.readouterr()


def test_a_sqlite_ledger_that_fails_while_read_is_reported_not_a_crash(
    capsys: pytest.CaptureFixture[str], db: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read-only commands read SQLite with sqlite3: its errors say what SQLAlchemy's would."""
    from ledger.sqlite_reader import SqliteLedgerReader

    def failing(*_: object) -> list[str]:
        raise sqlite3.OperationalError("disk I/O error")

    url, _ = db
    monkeypatch.setattr(SqliteLedgerReader, "executions", failing)
    code, _, err = run(capsys, "list", "--db", url)
    assert code == exits.INVALID
    assert "the ledger database does not answer (disk I/O error)" in err and "Traceback" not in err
    code, _, err = run(capsys, "ledger", "verify", "--db", url)
    assert code == exits.INVALID
    assert f"database error on {url}: disk I/O error" in err

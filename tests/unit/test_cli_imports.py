"""The command line answers at once: asking for help, or parsing any command, imports none of the
heavy libraries; each command imports what it needs when it runs, and no more.

Guarded by what is imported (sys.modules in a fresh interpreter), never by timing; the wall
times are measured by ``python -m bench --part cli``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import build_parser

HEAVY = (
    "slack_bolt",
    "slack_sdk",
    "sqlalchemy",
    "sqlmodel",
    "psycopg",
    "httpx",
    "jinja2",
    "matplotlib",
    "pydantic",
    "pydantic_settings",
    "apscheduler",
    "cryptography",
    "yaml",
    "uvicorn",
    "promql_parser",
)

_PROBE = """
import contextlib, io, json, sys
from bot.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exit:
        code = exit.code
print(json.dumps([code, sorted({m.split(".")[0] for m in sys.modules})]))
"""


def heavy_imports(*argv: str, cwd: Path | None = None) -> set[str]:
    """The heavy top-level packages a fresh ``stagehold ARGV`` has imported when it is done (it must
    have succeeded: a command that failed early proves nothing about what it needs)."""
    out = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, check=True, cwd=cwd)
    code, modules = json.loads(out.stdout)
    assert code in (0, None), f"stagehold {' '.join(argv)} exited {code}"
    return set(modules) & set(HEAVY)


def test_help_imports_nothing_heavy() -> None:
    assert heavy_imports("--help") == set()
    assert heavy_imports("--version") == set()


@pytest.mark.parametrize(
    "command", sorted({c.split()[0] for c in build_parser()._subparsers._group_actions[0].choices})
)  # type: ignore[union-attr]
def test_each_commands_help_imports_nothing_heavy(command: str) -> None:
    assert heavy_imports(command, "--help") == set()


def test_verify_file_imports_no_database_or_slack(tmp_path: Path) -> None:
    from ledger.chain import GENESIS_HASH, export_line, seal
    from ledger.entry import NewEntry
    from tests.unit.test_chain import T0

    export = tmp_path / "export.jsonl"
    export.write_text(export_line(seal("E1", 1, NewEntry("k", "a", {"n": 1}, T0), GENESIS_HASH)), encoding="utf-8")
    assert heavy_imports("ledger", "verify-file", str(export)) == set()


def _one_entry_ledger(url: str) -> None:
    from ledger.entry import NewEntry
    from ledger.sql import SqlLedgerStore
    from tests.unit.test_chain import T0

    store = SqlLedgerStore(url)
    store.append("E1", 1, [NewEntry("k", "a", {"n": 1}, T0)])
    store.close()


def test_ledger_verify_on_sqlite_imports_nothing_heavy(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    _one_entry_ledger(url)
    # The standard library's sqlite3 reads the file: no SQLAlchemy, SQLModel or pydantic.
    for argv in (("verify", "E1"), ("verify",), ("head", "E1"), ("export", "E1")):
        assert heavy_imports("ledger", *argv, "--db", url) == set(), argv


@pytest.mark.postgres
def test_ledger_verify_on_postgresql_imports_the_database_only(pg_url: str) -> None:
    _one_entry_ledger(pg_url)
    # SQLModel brings SQLAlchemy and pydantic; nothing of Slack, HTTP, templates, charts or keys.
    assert heavy_imports("ledger", "verify", "E1", "--db", pg_url) <= {"sqlmodel", "sqlalchemy", "pydantic", "psycopg"}


def test_status_imports_no_slack_http_templates_or_keys(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from execution.commands import start
    from execution.contract import load_change
    from ledger.sql import SqlLedgerStore
    from tests.fakes import EXAMPLES

    change = load_change(EXAMPLES / "first-change" / "package.yaml")
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    store = SqlLedgerStore(url)
    store.append("E1", 1, start(change, "U08OPS", (), datetime(2027, 3, 2, 10, tzinfo=UTC), mode="rehearsal"))
    store.close()
    # Reading and folding one execution needs the contract models (pydantic, and the PromQL parser
    # they name) and sqlite3: not SQLAlchemy or SQLModel, not the settings, Slack or templates.
    assert heavy_imports("status", "E1", "--db", url) <= {"pydantic", "promql_parser"}
    assert heavy_imports("status", "E1", "--db", url, "--json") <= {"pydantic", "promql_parser"}


def test_validate_imports_the_contract_only(tmp_path: Path) -> None:
    from tests.fakes import EXAMPLES

    # No keyring given and none configured (no STAGEHOLD_KEYRING, no .env where it runs): the
    # settings are not loaded, nor the cryptography that checks signatures: the models and YAML.
    package = EXAMPLES / "first-change" / "package.yaml"
    assert heavy_imports("validate", str(package), cwd=tmp_path) <= {"pydantic", "promql_parser", "yaml"}

"""``stagehold db init``: create stagehold's tables as their owner and grant a runtime role exactly
what it needs.

Rules:
* Run it with the owner's URL. It creates every stagehold table that is missing (existing ones and
  their rows are left alone) and the execution registry's trigger (``ledger.registry``), so
  running it again is harmless.
* On PostgreSQL, ``--runtime-role ROLE`` grants that role, in the same transaction: CONNECT on the
  database, USAGE on the schema, SELECT and INSERT on the ledger (history is never updated,
  deleted or truncated), SELECT on the execution registry (its trigger writes it with the
  owner's rights), SELECT, INSERT and UPDATE on the coordination tables (leases, Slack thread
  positions, channel leases), SELECT, INSERT and DELETE on the Slack post intents (an intent is
  removed once its post is recorded), and USAGE and SELECT on any sequence those tables own. Anything else the role held
  on these tables is revoked first, so the result is exactly that list.
* The runtime role must be a different, non-superuser role: a table's owner and a superuser can
  always UPDATE, DELETE and TRUNCATE, whatever is granted.
* Exit codes: 0 done; 2 a problem the operator fixes (bad URL, unknown role, the role owns the
  tables, SQLite given a role, the database refused).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

from bot import exits
from ledger.registry import REGISTRY_TABLE

LEDGER_TABLE = "stagehold_ledger"
LEDGER_PRIVILEGES = ("SELECT", "INSERT")
REGISTRY_PRIVILEGES = ("SELECT",)
COORDINATION_PRIVILEGES = ("SELECT", "INSERT", "UPDATE")
INTENT_TABLE = "stagehold_slack_intent"
INTENT_PRIVILEGES = ("SELECT", "INSERT", "DELETE")
SEQUENCE_PRIVILEGES = ("USAGE", "SELECT")
# SQLSTATEs for a missing grant and a missing table: a setup problem, not a bug.
_REFUSALS = {"42501": "permission denied", "42P01": "a stagehold table does not exist"}


class _Problem(Exception):
    """One line for the operator; exit 2."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("db", help="set up the ledger database")
    dsub = p.add_subparsers(dest="db_command", required=True)
    i = dsub.add_parser(
        "init",
        help="create stagehold's tables (run as their owner) and grant a runtime role exactly what it needs",
    )
    i.add_argument("--db", metavar="URL", help="the owner's database URL (default: the STAGEHOLD_DATABASE_URL setting)")
    i.add_argument(
        "--runtime-role",
        metavar="ROLE",
        help="PostgreSQL role stagehold runs as: ledger SELECT+INSERT only, coordination tables SELECT+INSERT+UPDATE",
    )
    i.set_defaults(handler=cmd_init)


def cmd_init(args: argparse.Namespace) -> int:
    try:
        for line in init(args.db or _settings_url(), args.runtime_role):
            print(line)
    except _Problem as exc:
        print(f"stagehold db init: {exc}", file=sys.stderr)
        return exits.INVALID
    return exits.OK


def stagehold_tables() -> list[Any]:
    """Every table stagehold uses, ledger first (importing the modules registers their models)."""
    from sqlmodel import SQLModel

    import handlers.channels
    import handlers.storage  # noqa: F401 - registers the Slack bookkeeping tables
    import ledger.sql  # noqa: F401 - registers the ledger and lease tables

    tables = [t for t in SQLModel.metadata.sorted_tables if t.name.startswith("stagehold_")]
    return sorted(tables, key=lambda t: (t.name != LEDGER_TABLE, t.name))


@dataclass(frozen=True)
class Grant:
    """One privilege statement pair: revoke everything, then grant exactly ``privileges``."""

    kind: str  # TABLE | SEQUENCE
    name: str
    privileges: tuple[str, ...]


def grants_for(tables: list[str], sequences: list[str]) -> list[Grant]:
    """What the runtime role gets on each object (pure).

    Example: (["stagehold_ledger", "stagehold_lease"], []) ->
    [Grant("TABLE", "stagehold_ledger", ("SELECT", "INSERT")),
     Grant("TABLE", "stagehold_lease", ("SELECT", "INSERT", "UPDATE"))]
    """
    special = {LEDGER_TABLE: LEDGER_PRIVILEGES, REGISTRY_TABLE: REGISTRY_PRIVILEGES, INTENT_TABLE: INTENT_PRIVILEGES}
    out = [Grant("TABLE", t, special.get(t, COORDINATION_PRIVILEGES)) for t in tables]
    out += [Grant("SEQUENCE", s, SEQUENCE_PRIVILEGES) for s in sequences]
    return out


def init(url: str, runtime_role: str | None) -> list[str]:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from ledger.sql import install_registry_in, make_engine, normalise_url

    try:
        postgres = make_url(normalise_url(url)).get_backend_name() == "postgresql"
        shown = make_url(url).render_as_string(hide_password=True)  # as the operator spelled it
    except (ArgumentError, ValueError) as exc:
        raise _Problem(f"invalid database URL: {_first_line(exc)}") from None
    if runtime_role is not None and not postgres:
        raise _Problem(f"{shown}: SQLite has no roles; protect the database file with file permissions instead")
    tables = stagehold_tables()
    try:
        engine = make_engine(url)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise _Problem(f"cannot open database {shown}: {_first_line(exc)}") from None
    try:
        with engine.begin() as conn:
            existing = {t.name for t in tables if engine.dialect.has_table(conn, t.name)}
            for table in tables:
                table.create(conn, checkfirst=True)
            created = [t.name for t in tables if t.name not in existing]
            install_registry_in(conn)
            lines = [
                f"{shown}: tables {', '.join(t.name for t in tables)}"
                f" ({len(created)} created, {len(existing)} already there)"
            ]
            if runtime_role is not None:
                lines += _grant(conn, runtime_role, [t.name for t in tables])
    except SQLAlchemyError as exc:
        raise _Problem(f"database error on {shown}: {_first_line(exc)}") from None
    finally:
        engine.dispose()
    return lines


def _grant(conn: Any, role: str, tables: list[str]) -> list[str]:
    from sqlalchemy import text

    info = conn.execute(
        text("SELECT rolsuper FROM pg_roles WHERE rolname = :role"),
        {"role": role},
    ).first()
    if info is None:
        raise _Problem(f"role '{role}' does not exist; create it first (CREATE ROLE {role} LOGIN PASSWORD '…')")
    if info.rolsuper:
        raise _Problem(f"role '{role}' is a superuser: it bypasses every grant; run stagehold as an ordinary role")
    owners = conn.execute(
        text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tableowner = :role"),
        {"role": role},
    ).all()
    if owners:
        raise _Problem(
            f"role '{role}' owns {', '.join(sorted(r.tablename for r in owners))}; an owner can always UPDATE, "
            "DELETE and TRUNCATE: run db init as the owner and give stagehold a separate runtime role"
        )
    database, schema = conn.execute(text("SELECT current_database(), current_schema()")).one()
    sequences = [
        r.relname
        for r in conn.execute(
            text(
                "SELECT DISTINCT s.relname FROM pg_class s JOIN pg_depend d ON d.objid = s.oid "
                "JOIN pg_class t ON d.refobjid = t.oid "
                "WHERE s.relkind = 'S' AND t.relname = ANY(:tables) AND t.relnamespace = current_schema()::regnamespace "
                "ORDER BY s.relname"
            ),
            {"tables": tables},
        ).all()
    ]
    q = conn.dialect.identifier_preparer.quote
    conn.execute(text(f"GRANT CONNECT ON DATABASE {q(database)} TO {q(role)}"))
    conn.execute(text(f"GRANT USAGE ON SCHEMA {q(schema)} TO {q(role)}"))
    lines = [f"role {role}: CONNECT on database {database}, USAGE on schema {schema}"]
    for g in grants_for(tables, sequences):
        conn.execute(text(f"REVOKE ALL ON {g.kind} {q(g.name)} FROM {q(role)}"))
        conn.execute(text(f"GRANT {', '.join(g.privileges)} ON {g.kind} {q(g.name)} TO {q(role)}"))
        note = " (history: no UPDATE, DELETE or TRUNCATE)" if g.name == LEDGER_TABLE else ""
        lines.append(f"role {role}: {g.name} {', '.join(g.privileges)}{note}")
    if not sequences:
        lines.append(f"role {role}: no sequences to grant")
    return lines


def database_refusal(exc: BaseException) -> str | None:
    """One line when ``exc`` is the database refusing for want of a grant or a table, else None.

    Example: psycopg's ``permission denied for table stagehold_lease`` (SQLSTATE 42501), wrapped
    by SQLAlchemy -> "the database refused: permission denied for table stagehold_lease; ...".
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        orig = getattr(current, "orig", None)
        for candidate in (orig, current):
            state = getattr(candidate, "sqlstate", None)
            if state in _REFUSALS:
                detail = str(candidate).strip().splitlines()[0] if str(candidate).strip() else _REFUSALS[state]
                return (
                    f"the database refused: {detail}; as the tables' owner run "
                    "`stagehold db init --runtime-role ROLE` for the role stagehold runs as"
                )
        current = current.__cause__ or current.__context__
    return None


def _settings_url() -> str:
    from bot.settings import SettingsError, load_settings

    try:
        return load_settings().database_url
    except SettingsError as exc:
        raise _Problem(str(exc)) from None


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

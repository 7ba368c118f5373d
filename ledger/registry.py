"""The execution registry: one row per execution, so listing executions, their heads and which of
them are still open does not read, or fold, the whole ledger.

Why: ``stagehold serve`` asks for the head of every execution every few seconds (lapsed leases,
entries another replica wrote, undelivered Slack posts). Answered by ``GROUP BY execution_id``
over the ledger, that read grows with every sample ever recorded — about 200 ms at a million
entries on both databases, twice per poll — until the poll cannot keep up. With the registry it
reads one row per execution and one index probe for that execution's last seq.

And a process that starts (or a sweep that looks for executions to drive) used to fold every
execution ever recorded to learn that almost all of them had finished: 28 s of CPU for 2,000
finished executions, and a read per execution at every sweep. The registry also records the seq
of an execution's closing entry (``CLOSING_KINDS``: completed, rolled back, needs a human,
abandoned — the terminal phases nothing leaves), so only open executions are read.

How it stays complete:
* A trigger on the ledger table writes the registry row when an execution's first entry (seq 1)
  is inserted, and marks it closed when a closing entry is, in the same transaction. Being in the
  database, it also registers executions written by anything that does not know about it (an
  older stagehold during a rolling upgrade, a restore with plain INSERTs). No other append runs
  more than the trigger's WHEN test.
* Installing it (``SqlLedgerStore`` at open, or ``stagehold db init``) creates the table and the
  trigger and registers every execution already in the ledger, in one transaction that holds the
  ledger's write lock (SQLite's database lock; on PostgreSQL, CREATE TRIGGER's table lock), so no
  first entry can land between the backfill and the trigger.
* The registry is used only where the trigger is found installed; otherwise (a role that may not
  create it, on a database ``db init`` has not upgraded yet) the queries fall back to reading the
  ledger as before, and say so once.
* On PostgreSQL the trigger function runs with its owner's rights (SECURITY DEFINER, a fixed
  search_path), so the runtime role needs only SELECT on the registry and no grant can be
  forgotten that would refuse every start.

Registry rows are never deleted; the closing seq is the one column ever updated (once). An
execution whose entries are all gone (tampering) is not listed, as before: the queries only name
executions with at least one entry. The registry only says which executions to read; what an
execution's state is always comes from folding its chain.

This module is plain SQL text: the SQLModel store and the sqlite3 reader run the same statements.
"""

from __future__ import annotations

REGISTRY_TABLE = "stagehold_execution"
TRIGGER = "stagehold_ledger_registers"  # a new version of the trigger gets a new name
FUNCTION = "stagehold_register_execution"
# The kinds of entry that close an execution: the events that lead into execution.transitions'
# TERMINAL phases (a test holds the two to each other).
CLOSING_KINDS = ("execution.completed", "execution.rolled_back", "execution.needs_human", "execution.abandoned")

# The statements name the tables as written here (stagehold_ledger is ledger.rows.LEDGER_TABLE; a
# test holds them to the models).

# ---------------------------------------------------------------- reads

# (execution, last seq, closing seq or NULL) per execution.
HEADS = (
    "SELECT r.execution_id, (SELECT max(l.seq) FROM stagehold_ledger l WHERE l.execution_id = r.execution_id), "
    "r.closed_seq FROM stagehold_execution r"
)
OPEN_HEADS = HEADS + " WHERE r.closed_seq IS NULL"
_LISTED = (
    "SELECT r.execution_id FROM stagehold_execution r "
    "WHERE EXISTS (SELECT 1 FROM stagehold_ledger l WHERE l.execution_id = r.execution_id)"
)
_ORDER = " ORDER BY r.started_at, r.execution_id"
EXECUTIONS = _LISTED + _ORDER
OPEN_EXECUTIONS = _LISTED + " AND r.closed_seq IS NULL" + _ORDER
# Without the registry: every row of the ledger is read, and every execution counts as open.
LEDGER_HEADS = "SELECT execution_id, max(seq), NULL FROM stagehold_ledger GROUP BY execution_id"
LEDGER_EXECUTIONS = "SELECT execution_id FROM stagehold_ledger GROUP BY execution_id ORDER BY min(ts), execution_id"

# ---------------------------------------------------------------- is it installed?

SQLITE_INSTALLED = "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = 'stagehold_ledger_registers'"
POSTGRES_INSTALLED = (
    "SELECT 1 FROM pg_trigger WHERE tgname = 'stagehold_ledger_registers' "
    "AND tgrelid = to_regclass('stagehold_ledger') AND NOT tgisinternal"
)

# ---------------------------------------------------------------- installing (the table itself is created from the model)

# Written out in full (the closing kinds are CLOSING_KINDS); the one UPDATE sets a registry row's
# closing seq, the one column ever updated. "@S" is the schema on PostgreSQL (postgres_install).
SQLITE_INSTALL = (
    "CREATE TRIGGER IF NOT EXISTS stagehold_ledger_registers AFTER INSERT ON stagehold_ledger FOR EACH ROW "
    "WHEN NEW.seq = 1 OR NEW.kind IN "
    "('execution.completed', 'execution.rolled_back', 'execution.needs_human', 'execution.abandoned') BEGIN "
    "INSERT OR IGNORE INTO stagehold_execution (execution_id, started_at) "
    "SELECT NEW.execution_id, NEW.ts WHERE NEW.seq = 1; "
    "UPDATE stagehold_execution SET closed_seq = NEW.seq WHERE execution_id = NEW.execution_id "
    "AND closed_seq IS NULL AND NEW.kind IN "
    "('execution.completed', 'execution.rolled_back', 'execution.needs_human', 'execution.abandoned'); END",
    "INSERT OR IGNORE INTO stagehold_execution (execution_id, started_at) "
    "SELECT execution_id, ts FROM stagehold_ledger WHERE seq = 1",
    "UPDATE stagehold_execution SET closed_seq = (SELECT min(l.seq) FROM stagehold_ledger l "
    "WHERE l.execution_id = stagehold_execution.execution_id AND l.kind IN "
    "('execution.completed', 'execution.rolled_back', 'execution.needs_human', 'execution.abandoned')) "
    "WHERE closed_seq IS NULL",
)
_POSTGRES_INSTALL = (
    "CREATE FUNCTION @S.stagehold_register_execution() RETURNS trigger LANGUAGE plpgsql "
    "SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$ BEGIN "
    "IF NEW.seq = 1 THEN INSERT INTO @S.stagehold_execution (execution_id, started_at) "
    "VALUES (NEW.execution_id, NEW.ts) ON CONFLICT DO NOTHING; END IF; "
    "IF NEW.kind IN ('execution.completed', 'execution.rolled_back', 'execution.needs_human', "
    "'execution.abandoned') THEN "
    "UPDATE @S.stagehold_execution SET closed_seq = NEW.seq "
    "WHERE execution_id = NEW.execution_id AND closed_seq IS NULL; END IF; "
    "RETURN NULL; END $$",
    "REVOKE ALL ON FUNCTION @S.stagehold_register_execution() FROM PUBLIC",
    # Takes the ledger's SHARE ROW EXCLUSIVE lock: no append commits until this transaction does.
    "CREATE TRIGGER stagehold_ledger_registers AFTER INSERT ON @S.stagehold_ledger FOR EACH ROW "
    "WHEN (NEW.seq = 1 OR NEW.kind IN "
    "('execution.completed', 'execution.rolled_back', 'execution.needs_human', 'execution.abandoned')) "
    "EXECUTE FUNCTION @S.stagehold_register_execution()",
    "INSERT INTO @S.stagehold_execution (execution_id, started_at) "
    "SELECT execution_id, ts FROM @S.stagehold_ledger WHERE seq = 1 ON CONFLICT DO NOTHING",
    "UPDATE @S.stagehold_execution r SET closed_seq = (SELECT min(l.seq) FROM @S.stagehold_ledger l "
    "WHERE l.execution_id = r.execution_id AND l.kind IN "
    "('execution.completed', 'execution.rolled_back', 'execution.needs_human', 'execution.abandoned')) "
    "WHERE r.closed_seq IS NULL",
)


def postgres_install(schema: str) -> tuple[str, ...]:
    """The statements that install the registry's trigger in ``schema`` (as quoted by the server's
    ``quote_ident``: the only value spliced into them).

    The function names its table with the schema and searches nothing else, as a SECURITY DEFINER
    function must (PostgreSQL's documentation: "Writing SECURITY DEFINER Functions Safely").
    """
    return tuple(statement.replace("@S", schema) for statement in _POSTGRES_INSTALL)

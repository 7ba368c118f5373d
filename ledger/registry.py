"""The execution registry: one row per execution, so listing executions and their heads does not
read the whole ledger.

Why: ``stagehold serve`` asks for the head of every execution every few seconds (lapsed leases,
entries another replica wrote, undelivered Slack posts). Answered by ``GROUP BY execution_id``
over the ledger, that read grows with every sample ever recorded — about 200 ms at a million
entries on both databases, twice per poll — until the poll cannot keep up. With the registry it
reads one row per execution and one index probe for that execution's last seq.

How it stays complete:
* A trigger on the ledger table writes the registry row when an execution's first entry (seq 1)
  is inserted, in the same transaction. Being in the database, it also registers executions
  written by anything that does not know about it (an older stagehold during a rolling upgrade, a
  restore with plain INSERTs).
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

Registry rows are never deleted. An execution whose entries are all gone (tampering) is not listed,
as before: both queries only name executions with at least one entry.

This module is plain SQL text: the SQLModel store and the sqlite3 reader run the same statements.
"""

from __future__ import annotations

REGISTRY_TABLE = "stagehold_execution"
TRIGGER = "stagehold_ledger_registers"  # a new version of the trigger gets a new name
FUNCTION = "stagehold_register_execution"

# The statements name the tables as written here (stagehold_ledger is ledger.rows.LEDGER_TABLE; a
# test holds them to the models).

# ---------------------------------------------------------------- reads

HEADS = (
    "SELECT r.execution_id, (SELECT max(l.seq) FROM stagehold_ledger l WHERE l.execution_id = r.execution_id) "
    "FROM stagehold_execution r"
)
EXECUTIONS = (
    "SELECT r.execution_id FROM stagehold_execution r "
    "WHERE EXISTS (SELECT 1 FROM stagehold_ledger l WHERE l.execution_id = r.execution_id) "
    "ORDER BY r.started_at, r.execution_id"
)
# Without the registry: every row of the ledger is read.
LEDGER_HEADS = "SELECT execution_id, max(seq) FROM stagehold_ledger GROUP BY execution_id"
LEDGER_EXECUTIONS = "SELECT execution_id FROM stagehold_ledger GROUP BY execution_id ORDER BY min(ts), execution_id"

# ---------------------------------------------------------------- is it installed?

SQLITE_INSTALLED = "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = 'stagehold_ledger_registers'"
POSTGRES_INSTALLED = (
    "SELECT 1 FROM pg_trigger WHERE tgname = 'stagehold_ledger_registers' "
    "AND tgrelid = to_regclass('stagehold_ledger') AND NOT tgisinternal"
)

# ---------------------------------------------------------------- installing (the table itself is created from the model)

SQLITE_INSTALL = (
    "CREATE TRIGGER IF NOT EXISTS stagehold_ledger_registers AFTER INSERT ON stagehold_ledger "
    "FOR EACH ROW WHEN NEW.seq = 1 BEGIN "
    "INSERT OR IGNORE INTO stagehold_execution (execution_id, started_at) VALUES (NEW.execution_id, NEW.ts); END",
    "INSERT OR IGNORE INTO stagehold_execution (execution_id, started_at) "
    "SELECT execution_id, ts FROM stagehold_ledger WHERE seq = 1",
)


def postgres_install(schema: str) -> tuple[str, ...]:
    """The statements that install the registry's trigger in ``schema`` (as quoted by the server's
    ``quote_ident``).

    The function names its table with the schema and searches nothing else, as a SECURITY DEFINER
    function must (PostgreSQL's documentation: "Writing SECURITY DEFINER Functions Safely").
    """
    function = f"{schema}.stagehold_register_execution"
    # The only value spliced in is the schema's name as quote_ident returned it.
    return (
        f"CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql "  # noqa: S608
        "SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$ BEGIN "
        f"INSERT INTO {schema}.stagehold_execution (execution_id, started_at) VALUES (NEW.execution_id, NEW.ts) "
        "ON CONFLICT DO NOTHING; RETURN NULL; END $$",
        f"REVOKE ALL ON FUNCTION {function}() FROM PUBLIC",
        # Takes the ledger's SHARE ROW EXCLUSIVE lock: no append commits until this transaction does.
        f"CREATE TRIGGER stagehold_ledger_registers AFTER INSERT ON {schema}.stagehold_ledger "
        f"FOR EACH ROW WHEN (NEW.seq = 1) EXECUTE FUNCTION {function}()",
        f"INSERT INTO {schema}.stagehold_execution (execution_id, started_at) "  # noqa: S608
        f"SELECT execution_id, ts FROM {schema}.stagehold_ledger WHERE seq = 1 ON CONFLICT DO NOTHING",
    )

"""Documented exit codes of the ``stagehold`` command (the README lists the same table)."""

OK = 0  # success; for rehearse/run: the execution completed
TAMPERED = 1  # ledger verification found a bad entry, gap or truncation
INVALID = 2  # invalid input, usage or configuration (message says file, field and line)
HELD = 3  # the execution stopped at a hold that needs a human
ROLLED_BACK = 4  # the execution rolled back
NEEDS_HUMAN = 5  # rollback failed or the outcome is unknown: a human must take over
INTERNAL = 70  # a bug in stagehold (EX_SOFTWARE); appends are atomic, so the ledger stays whole

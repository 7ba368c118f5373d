"""Documented exit codes of the ``stagehold`` command (the README lists the same table; a test keeps
them in agreement).

A command that reports on an execution (``rehearse``, ``run``, ``resume``, ``watch``) exits with
the code of where that execution stands: the script around it learns who must act next.

* 3 and 5 both mean "a human": 3 is a stop the execution waits at — an open hold (including an
  action whose outcome is unknown: the hold's release re-reads the target), or nothing driving
  it — and it moves on when a person acts; 5 means automation has ended for good (a rollback
  failed or could not be resolved) and a person takes over the live system by hand.
* 1 is reserved for evidence that the ledger (or an export of it) was altered, truncated or
  damaged: a script must not act on such an execution.
"""

OK = 0  # success; for rehearse/run/resume/watch: the execution completed
TAMPERED = 1  # a ledger, or an export of it, was altered, truncated or damaged
INVALID = 2  # invalid input, usage or configuration (the message says file, field and line)
HELD = 3  # the execution waits for a human: an open hold (outcome unknown included) or nothing driving it
ROLLED_BACK = 4  # the execution rolled back
NEEDS_HUMAN = 5  # automation has ended: a rollback failed or its outcome is unknown; take over by hand
ABANDONED = 6  # a person abandoned the execution (a rehearsal nobody will finish); nothing was undone
INTERNAL = 70  # a bug in stagehold (EX_SOFTWARE); appends are atomic, so the ledger stays whole
TIMED_OUT = 124  # watch --timeout: the deadline passed while the execution was still moving
INTERRUPTED = 130  # interrupted (Ctrl-C); a foreground run stops where the ledger says, resumable

# The README's exit-code table, in order (code, name).
ALL = {
    OK: "OK",
    TAMPERED: "TAMPERED",
    INVALID: "INVALID",
    HELD: "HELD",
    ROLLED_BACK: "ROLLED_BACK",
    NEEDS_HUMAN: "NEEDS_HUMAN",
    ABANDONED: "ABANDONED",
    INTERNAL: "INTERNAL",
    TIMED_OUT: "TIMED_OUT",
    INTERRUPTED: "INTERRUPTED",
}

"""The rehearsal sandbox's fault names and per-signal modes, on their own so that the command
line can list them in its help without importing the sandbox."""

from __future__ import annotations

FAULTS = (
    "error-rate-high",
    "error-rate-degraded",
    "dependency-down",
    "snapshot-stale",
    "snapshot-missing",
    "no-data",
    "apply-timeout",
    "readback-fail",
    "rollback-fail",
)
# What a fault on one signal makes the sandbox answer (signal:NAME=MODE).
MODES = ("fail", "degraded", "no-data", "stale", "error")

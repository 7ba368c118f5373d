"""What each kind of hold means, in one short phrase, for every place a person reads a hold's kind
(the run log, text and Slack cards, ``status``, ``watch``, the packet).

Rule: every kind the engine can open is listed here; a test fails when a new kind is opened
without a phrase. The phrase says *why it stopped*; the hold's own ``reason`` has the details.
"""

from __future__ import annotations

MEANING: dict[str, str] = {
    "protected": "protected stage: entered only on a named authority's release",
    "degraded": "evidence inside the tolerated band, not passing: release accepts this checkpoint",
    "conflicting": "checks disagree: some pass, others have no usable evidence",
    "no_data": "a signal returned no data, which never counts as a pass",
    "stale": "evidence older than its max_age, which is never used",
    "error": "a signal could not be read",
    "hold": "evidence inside the tolerated band",
    "fail": "checks fail and the plan says hold rather than roll back",
    "preflight": "a preflight check does not pass before entering the stage",
    "readiness_lost": "the way back (rollback readiness) is not ready",
    "rollback_unsafe": "checks call for rollback but the way back is not ready",
    "ambiguous": "the action was sent but its outcome is unknown (the read-back failed)",
    "not_applied": "the action did not take effect on the target",
    "window_closed": "the change window closed: nothing expands further",
    "manual": "a person placed this hold",
    "narrowed": "stepped back one tier after bad evidence",
    "reconcile_mismatch": "on restart the live target did not match the ledger",
}


def meaning(kind: str) -> str:
    """``meaning("protected")`` -> "protected stage: entered only on a named authority's release"."""
    return MEANING.get(kind, "a hold the engine opened; its reason says why")

"""Ledger entry kinds written by the engine (past tense: each records something that happened).

Body fields, by kind (all JSON, masked before writing):

execution.started     change_id, title, package, plan, plan_sha256, channel, mode (live|rehearsal),
                      speed, window{opens,closes}, initiator, approvals{package_sha256, approved, policy[],
                      signed_by[{key, owner, role, sha256, at}], refused[], missing[]} (absent: not checked)
execution.resumed     owner, reconcile{stage, direction, expect, observed, matches, detail} | null
gate.checked          stage, purpose (enter|release), results[], outcome
hold.opened           hold, stage, index, kind, reason, results[], categories{}, evidence_version,
                      evidence_expires_at, releasers{users,groups}, required, releasable, resume,
                      resume_phase, expires_at, remind_at, rollback_path, supersedes
hold.requested        reason (a manual hold asked for while an action resolves)
hold.evidence_expired hold, evidence_version (the new version; earlier release buttons go stale)
hold.reminded         hold, expires_at
hold.escalated        hold, expires_at, notify{users,groups}
release.granted       hold, evidence_version, count, required
release.denied        hold, reason (not an authority, initiator under two-person control, ...)
release.ignored       hold, reason, released_by, released_at (stale, repeated or superseded click)
hold.released         hold, by[], resume
release.not_carried   hold, why, changes[]
action.intended       stage, index, direction (apply|rollback), attempt, key, target, action
action.sent           stage, direction, key, outcome (ok|ambiguous|rejected), status, detail, response
action.read_back      stage, direction, key, matches (true|false|null), expect, observed, detail
action.resend_intended stage, direction, key, reason
action.confirmed      stage, index, direction, key, observed
verification.sampled  stage, results[], outcome, reaction, consecutive, required,
                      gap{since_previous_s, limit_s} (only when a gap restarted the streak)
stage.passed          stage, index, basis (verified|released), hold, consecutive
rollback.started      trigger, reason, scope (full|narrow), undo[], requested_by
rollback.denied       reason
hold.ignored          reason (a manual hold that could not be placed now)
hold.denied           reason (the person is not a listed operator)
execution.completed   stages[]
execution.rolled_back undone[]
execution.needs_human why, stage
execution.abandoned   reason, phase, hold (an execution nobody will finish, ended by a person; frees the change)
abandon.denied        reason (not allowed to abandon, or nothing left to abandon)
"""

from __future__ import annotations

EXECUTION_STARTED = "execution.started"
EXECUTION_RESUMED = "execution.resumed"
GATE_CHECKED = "gate.checked"
HOLD_OPENED = "hold.opened"
HOLD_REQUESTED = "hold.requested"
HOLD_EVIDENCE_EXPIRED = "hold.evidence_expired"
HOLD_REMINDED = "hold.reminded"
HOLD_ESCALATED = "hold.escalated"
HOLD_IGNORED = "hold.ignored"
HOLD_DENIED = "hold.denied"
RELEASE_GRANTED = "release.granted"
RELEASE_DENIED = "release.denied"
RELEASE_IGNORED = "release.ignored"
HOLD_RELEASED = "hold.released"
RELEASE_NOT_CARRIED = "release.not_carried"
ACTION_INTENDED = "action.intended"
ACTION_SENT = "action.sent"
ACTION_READ_BACK = "action.read_back"
ACTION_RESEND_INTENDED = "action.resend_intended"
ACTION_CONFIRMED = "action.confirmed"
VERIFICATION_SAMPLED = "verification.sampled"
STAGE_PASSED = "stage.passed"
ROLLBACK_STARTED = "rollback.started"
ROLLBACK_DENIED = "rollback.denied"
EXECUTION_COMPLETED = "execution.completed"
EXECUTION_ROLLED_BACK = "execution.rolled_back"
EXECUTION_NEEDS_HUMAN = "execution.needs_human"
EXECUTION_ABANDONED = "execution.abandoned"
ABANDON_DENIED = "abandon.denied"

# Kinds that only record a human's attempt and never change where the execution is.
NO_OP_KINDS = frozenset({RELEASE_DENIED, RELEASE_IGNORED, ROLLBACK_DENIED, HOLD_IGNORED, HOLD_DENIED, ABANDON_DENIED})

# The moments the bot signs a checkpoint of the chain's head (ledger.witness) and posts it in the thread.
WITNESSED = frozenset(
    {HOLD_OPENED, STAGE_PASSED, EXECUTION_COMPLETED, EXECUTION_ROLLED_BACK, EXECUTION_NEEDS_HUMAN, EXECUTION_ABANDONED}
)

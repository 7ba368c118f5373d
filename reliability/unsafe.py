"""The negative control's switch: an engine without idempotency keys and without read-back.

This module exists only in the reliability harness; the shipped package has no such switch. It
patches ``Engine`` in the process that imports it (``python -m reliability.unsafe_cli``) so that:

* every send carries a fresh idempotency key (``{key}~{nonce}``), so the target cannot recognise
  a repeat of an action it already applied;
* the read-back is skipped: an action counts as applied when its send was answered ``ok``, and as
  not applied otherwise (no answer recorded because the process died, or a timeout), which makes
  the engine send it again — the blind retry the real engine never does.

Crash trials run against this build must report duplicate effects; if they did not, the checks
would be blind to exactly the failure the real engine is built to avoid.
"""

from __future__ import annotations

import uuid
from typing import Any

from execution.model import ActionResult, ReadbackResult, Role
from execution.project import State
from execution.service import Engine

SEPARATOR = "~"


def transition_of(key: str) -> str:
    """The ledger key an unsafe send served (the key without its nonce)."""
    return key.split(SEPARATOR, 1)[0]


def install() -> None:
    original_apply = Engine._safe_apply

    def fresh_key_apply(
        self: Engine, state: State, action: Any, key: str, role: Role, timeout_s: float
    ) -> ActionResult:
        return original_apply(self, state, action, f"{key}{SEPARATOR}{uuid.uuid4().hex[:8]}", role, timeout_s)

    def assumed_read_back(self: Engine, state: State, confirm: Any, role: Role, timeout_s: float) -> ReadbackResult:
        pending = state.pending
        if pending is not None and pending.last_send != "ok":
            return ReadbackResult(False, None, "read-back skipped: no answer on record, assumed not applied")
        return ReadbackResult(True, dict(confirm.expect), "read-back skipped: assumed applied")

    Engine._safe_apply = fresh_key_apply  # type: ignore[method-assign]
    Engine._safe_read_back = assumed_read_back  # type: ignore[method-assign]

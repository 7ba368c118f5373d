"""Rehearsal connections: every kind of signal, action and read-back goes to the sandbox.

HTTP and Prometheus specs need only their target URLs pointed at the sandbox; the real adapters
then run unchanged. Command and HAProxy specs cannot run for real in a rehearsal (they would touch
the live system), so this bridge carries them to the sandbox over HTTP, through the same HTTP
adapter and so under the same rules (idempotency key, role credential, rejected vs ambiguous):

* an action is ``POST /_sim/act`` with ``{"kind", "spec"}``;
* a read-back is ``GET /_sim/docs/KIND/TARGET/...`` compared with the read-back's ``expect``;
* a command signal is ``GET /_sim/signals/NAME``, its ``value`` field.

``teach`` sends a plan to a sandbox (``POST /plans``), so it can derive the plan's signals and the
effects of its actions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import httpx

from execution.adapters.haproxy import HaproxyRuntime
from execution.adapters.http import HttpTargets
from execution.adapters.live import LiveTargets
from execution.contract.models import Action, Confirm, Plan, Signal, Target
from execution.model import ActionResult, Clock, Credentials, Evidence, ReadbackResult, Role
from execution.sandbox_world import action_spec_json, bridged_doc_key

_SANDBOX = "stagehold-sandbox"


def teach(client: httpx.Client, url: str, plan: Plan, timeout_s: float = 10.0) -> str | None:
    """Teach ``plan`` to the sandbox at ``url``; the sandbox's refusal as text, or None."""
    body = {"plan": plan.model_dump(mode="json", by_alias=True, exclude_none=True)}
    try:
        response = client.post(url.rstrip("/") + "/plans", json=body, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return f"cannot reach the sandbox at {url}: {type(exc).__name__}: {exc}"
    if response.is_success:
        return None
    try:
        return str(response.json().get("error") or response.text)
    except ValueError:
        return f"the sandbox answered HTTP {response.status_code}: {response.text[:300]}"


class Bridge:
    """Command and HAProxy specs, carried to the sandbox."""

    def __init__(self, http: HttpTargets) -> None:
        self._http = http

    def read(self, name: str, signal: Signal) -> Signal:
        assert signal.command is not None
        return Signal.model_validate(
            {
                "http": {"target": _SANDBOX, "path": f"/_sim/signals/{name}", "field": "value"},
                "max_age": signal.max_age,
            }
        )

    def action(self, action: Action) -> Action:
        body = {"kind": action.kind, "spec": action_spec_json(action)}
        spec = {"target": _SANDBOX, "method": "POST", "path": "/_sim/act", "json": body}
        return Action.model_validate({"http": spec})

    def confirm(self, confirm: Confirm) -> Confirm:
        path = "/_sim/docs/" + bridged_doc_key(confirm)
        return Confirm.model_validate({"http": {"target": _SANDBOX, "path": path, "expect": confirm.expect}})


class SandboxTargets(LiveTargets):
    """``LiveTargets`` for a rehearsal against the sandbox at ``url``: nothing real is touched."""

    def __init__(
        self,
        url: str,
        targets: Mapping[str, Target],
        credentials: Credentials,
        client: httpx.Client,
        clock: Clock,
        *,
        read_timeout_s: float = 10.0,
        sensitive_fields: Iterable[str] = (),
    ) -> None:
        pointed = {
            name: t.model_copy(update={"url": url}) if t.kind in ("http", "prometheus") else t
            for name, t in targets.items()
        }
        pointed[_SANDBOX] = Target(kind="http", url=url)
        super().__init__(
            pointed, credentials, client, clock, read_timeout_s=read_timeout_s, sensitive_fields=sensitive_fields
        )
        self.haproxy = HaproxyRuntime({})  # never reached: every haproxy spec is bridged
        self._bridge = Bridge(self.http)

    def read(self, name: str, signal: Signal, role: Role) -> Evidence:
        if signal.command is not None:
            return self.http.read(name, self._bridge.read(name, signal), role)
        return super().read(name, signal, role)

    def apply(self, action: Action, idempotency_key: str, role: Role, timeout_s: float) -> ActionResult:
        if action.http is None:
            action = self._bridge.action(action)
        return super().apply(action, idempotency_key, role, timeout_s)

    def read_back(self, confirm: Confirm, role: Role, timeout_s: float) -> ReadbackResult:
        if confirm.http is None:
            confirm = self._bridge.confirm(confirm)
        return super().read_back(confirm, role, timeout_s)

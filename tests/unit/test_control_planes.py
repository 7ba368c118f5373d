"""What real control planes need from actions and read-backs: form bodies, per-action headers,
expected statuses, redirects, answer fields (HTTP), and stdin, error patterns and JSON answers
(commands). Against httpx.MockTransport and small Python child processes."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from pydantic import ValidationError

from execution.adapters.haproxy import parse_servers_state
from execution.contract.models import Action, Confirm
from execution.model import Role

from .test_adapters import BACK_TOKEN, EXEC_TOKEN, http_targets, py, runner

KEY = "CHG-1:canary-5:apply:1"


def http_action(**fields: Any) -> Action:
    return Action.model_validate({"http": {"target": "router", "method": "POST", "path": "/stats", **fields}})


# ---------------------------------------------------------------- plan fields


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"json": {"a": 1}, "form": {"a": "1"}}, "json or form, not both"),
        ({"headers": {"Authorization": "Bearer x"}}, "set by stagehold itself"),
        ({"headers": {"idempotency-key": "k"}}, "set by stagehold itself"),
        ({"headers": {"X-Bad": "line\r\nInjected: 1"}}, "headers"),
        ({"expect_status": [99]}, "expect_status"),
        ({"expect_status": []}, "expect_status"),
        ({"redirect": "always"}, "redirect"),
        ({"expect_location": "st=("}, "not a regular expression"),
    ],
)
def test_bad_http_action_fields_are_refused_with_a_reason(spec: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as caught:
        http_action(**spec)
    assert fragment in str(caught.value)


def test_a_haproxy_action_needs_weights_or_states_and_a_haproxy_target_needs_a_socket() -> None:
    with pytest.raises(ValidationError, match="give weights or states"):
        Action.model_validate({"haproxy": {"target": "lb", "backend": "app"}})
    with pytest.raises(ValidationError, match="weights"):
        Action.model_validate({"haproxy": {"target": "lb", "backend": "app", "weights": {"a": 257}}})
    from execution.contract.models import Target

    with pytest.raises(ValidationError, match="needs a socket"):
        Target(kind="haproxy")
    with pytest.raises(ValidationError, match="socket"):
        Target(kind="haproxy", socket="relative/admin.sock")


# ---------------------------------------------------------------- HTTP actions


def test_a_form_action_sends_an_urlencoded_body_with_its_own_headers_and_the_role_credential() -> None:
    adapter, recorder = http_targets(lambda r: httpx.Response(303, headers={"Location": "/stats;st=DONE"}))
    action = http_action(
        form={"s": ["canary", "stable"], "action": "drain", "b": "app"},
        headers={"X-Tenant": "payments", "Accept": "text/html"},
        expect_status=[303],
        expect_location="st=DONE",
    )
    result = adapter.apply(action, KEY, Role.EXECUTOR, 10)
    assert (result.outcome, result.status) == ("ok", 303), result.detail
    (sent,) = recorder.requests
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(sent.content.decode()) == {"s": ["canary", "stable"], "action": ["drain"], "b": ["app"]}
    assert sent.headers["x-tenant"] == "payments"
    assert sent.headers["accept"] == "text/html"
    assert sent.headers["authorization"] == f"Bearer {EXEC_TOKEN}"
    assert sent.headers["idempotency-key"] == KEY


@pytest.mark.parametrize(
    ("status", "location", "spec", "outcome"),
    [
        (303, "/stats;st=DONE", {}, "ambiguous"),  # a redirect after a write: it was processed
        (302, "/done", {}, "ambiguous"),
        (307, "https://other.internal/stats", {}, "rejected"),  # sent elsewhere, not processed here
        (308, "/stats/", {}, "rejected"),
        (303, "/stats;st=DONE", {"expect_status": [303]}, "ok"),
        (303, "/stats;st=ERRP", {"expect_status": [303], "expect_location": "st=DONE"}, "ambiguous"),
        (303, None, {"expect_status": [303], "expect_location": "st=DONE"}, "ambiguous"),
        (200, None, {"expect_status": [303]}, "ambiguous"),  # a success the plan did not expect
        (202, None, {"expect_status": [200, 202]}, "ok"),
        (409, None, {"expect_status": [409]}, "ok"),  # "already so" can be declared as applied
        (400, None, {"expect_status": [303]}, "rejected"),
        (503, None, {"expect_status": [303]}, "ambiguous"),
    ],
)
def test_statuses_and_redirects_are_judged_by_what_the_plan_expects(
    status: int, location: str | None, spec: dict[str, Any], outcome: str
) -> None:
    headers = {"Location": location} if location else {}
    adapter, _ = http_targets(lambda r: httpx.Response(status, headers=headers))
    result = adapter.apply(http_action(form={"action": "drain"}, **spec), KEY, Role.EXECUTOR, 10)
    assert result.outcome == outcome, result.detail
    if location and outcome != "ok":
        assert location in result.detail


def test_follow_takes_same_origin_redirects_and_judges_the_final_answer() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(303, headers={"Location": "/stats;st=DONE"})
        return httpx.Response(200, text="<html>done</html>")

    adapter, recorder = http_targets(answer)
    result = adapter.apply(http_action(form={"action": "drain"}, redirect="follow"), KEY, Role.EXECUTOR, 10)
    assert (result.outcome, result.status) == ("ok", 200)
    assert [(r.method, r.url.path) for r in recorder.requests] == [("POST", "/stats"), ("GET", "/stats;st=DONE")]


def test_follow_never_leaves_the_origin_so_credentials_stay_with_the_target() -> None:
    adapter, recorder = http_targets(lambda r: httpx.Response(302, headers={"Location": "https://evil.example/x"}))
    result = adapter.apply(http_action(form={"action": "drain"}, redirect="follow"), KEY, Role.EXECUTOR, 10)
    assert result.outcome == "ambiguous"
    assert len(recorder.requests) == 1


def test_a_failure_while_following_is_ambiguous_because_the_first_hop_arrived() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            raise httpx.ConnectError("gone", request=request)
        return httpx.Response(303, headers={"Location": "/stats;st=DONE"})

    adapter, _ = http_targets(answer)
    result = adapter.apply(http_action(form={"action": "drain"}, redirect="follow"), KEY, Role.EXECUTOR, 10)
    assert result.outcome == "ambiguous"
    assert "following its redirect failed" in result.detail


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        ({"result": {"applied": True}, "id": 7}, "ok"),
        ({"result": {"applied": False}}, "ambiguous"),
        ({"error": "queued"}, "ambiguous"),
        ("not json", "ambiguous"),
    ],
)
def test_expect_answer_reads_a_field_from_the_json_answer(body: Any, outcome: str) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=body) if isinstance(body, dict) else httpx.Response(200, text=body)

    adapter, _ = http_targets(answer)
    result = adapter.apply(http_action(json={"w": 5}, expect_answer={"result.applied": True}), KEY, Role.EXECUTOR, 10)
    assert result.outcome == outcome, result.detail


def test_a_secret_in_a_location_header_is_masked() -> None:
    adapter, _ = http_targets(lambda r: httpx.Response(302, headers={"Location": f"/login?token={EXEC_TOKEN}"}))
    result = adapter.apply(http_action(form={"a": "b"}), KEY, Role.EXECUTOR, 10)
    assert result.outcome == "ambiguous"
    assert EXEC_TOKEN not in result.detail


def test_read_back_sends_its_own_headers() -> None:
    adapter, recorder = http_targets(lambda r: httpx.Response(200, json={"canary": {"weight": 5}}))
    confirm = Confirm.model_validate(
        {
            "http": {
                "target": "router",
                "path": "/api/weights",
                "headers": {"X-Tenant": "t1"},
                "expect": {"canary.weight": 5},
            }
        }
    )
    assert adapter.read_back(confirm, Role.EXECUTOR, 10).matches is True
    assert recorder.requests[0].headers["x-tenant"] == "t1"


# ---------------------------------------------------------------- commands


def command(kind: str, code: str, **fields: Any) -> Any:
    spec = {"target": "tool", "argv": py(code), **fields}
    if kind == "action":
        return Action.model_validate({"command": spec})
    return Confirm.model_validate({"command": spec})


ECHO_STDIN = "import json, sys; doc = json.load(sys.stdin); print(json.dumps({'got': doc, 'applied': True}))"


def test_command_action_receives_stdin_as_json_and_its_answer_is_read() -> None:
    action = command("action", ECHO_STDIN, stdin={"backend": "app", "weight": 25}, expect_answer={"applied": True})
    result = runner().apply(action, KEY, Role.EXECUTOR, 10)
    assert result.outcome == "ok", result.detail
    assert result.response == {"got": {"backend": "app", "weight": 25}, "applied": True}


def test_command_stdin_text_is_sent_as_given_and_no_stdin_is_empty() -> None:
    code = "import json, sys; print(json.dumps({'text': sys.stdin.read()}))"
    assert runner().apply(command("action", code, stdin="set weight app/a 5\n"), KEY, Role.EXECUTOR, 10).response == {
        "text": "set weight app/a 5\n"
    }
    assert runner().apply(command("action", code), KEY, Role.EXECUTOR, 10).response == {"text": ""}


def test_an_answer_that_does_not_say_applied_is_ambiguous_not_ok() -> None:
    code = "print('{\"applied\": false}')"
    result = runner().apply(command("action", code, expect_answer={"applied": True}), KEY, Role.EXECUTOR, 10)
    assert result.outcome == "ambiguous"
    assert "applied: expected True, observed False" in result.detail


def test_a_declared_error_pattern_rejects_even_on_exit_0_and_masks_secrets() -> None:
    code = f"import sys; print('working'); print('ERROR: backend locked by {BACK_TOKEN}'); sys.exit(0)"
    result = runner().apply(command("action", code, error_pattern="^ERROR:"), KEY, Role.EXECUTOR, 10)
    assert result.outcome == "rejected"
    assert "error_pattern matched" in result.detail and "backend locked" in result.detail
    assert BACK_TOKEN not in result.detail and BACK_TOKEN not in str(result.response)


def test_without_a_match_the_error_pattern_changes_nothing() -> None:
    result = runner().apply(command("action", "print('{}')", error_pattern="^ERROR:"), KEY, Role.EXECUTOR, 10)
    assert result.outcome == "ok"


def test_error_pattern_in_stderr_fails_a_read_back_as_unreadable() -> None:
    code = "import sys; sys.stderr.write('Permission denied\\n'); print('{\"weight\": 5}')"
    back = runner().read_back(
        command("confirm", code, error_pattern="Permission denied", expect={"weight": 5}), Role.EXECUTOR, 10
    )
    assert back.matches is None
    assert "Permission denied" in back.detail


def test_command_read_back_takes_stdin() -> None:
    code = "import json, sys; print(json.dumps({'echo': json.load(sys.stdin)}))"
    confirm = command("confirm", code, stdin=["a", 1], expect={"echo.1": 1})
    assert runner().read_back(confirm, Role.EXECUTOR, 10).matches is True


# ---------------------------------------------------------------- HAProxy's servers-state table


def test_servers_state_table_becomes_one_object_per_server() -> None:
    answer = (
        "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
        "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state "
        "srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port\n"
        "3 app 1 stable 10.0.0.1 2 0 75 100 0 1 0 2 0 0 0 0 - 8080\n"
        "3 app 2 canary 10.0.0.2 0 1 25 0 0 1 0 0 0 0 0 0 - 8081\n"
        "3 app 3 spare 10.0.0.3 2 8 0 1 0 1 0 2 0 0 0 0 - 8082\n\n"
    )
    servers = parse_servers_state(answer)
    assert servers["stable"] == {
        "weight": 75,
        "initial_weight": 100,
        "state": "ready",
        "operational": "running",
        "address": "10.0.0.1",
        "port": 8080,
    }
    assert (servers["canary"]["state"], servers["canary"]["operational"]) == ("maint", "stopped")
    assert servers["spare"]["state"] == "drain"
    with pytest.raises(ValueError, match="Can't find backend"):
        parse_servers_state("Can't find backend.\n\n")

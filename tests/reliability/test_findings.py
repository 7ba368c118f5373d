"""Regression tests for what the reliability trials found, one small case per finding.

Each test pins the behaviour a trial family depends on, so a change that brings a finding back
fails here in milliseconds rather than only in a full trial run.
"""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bot.commands.execute import FaultSchedule
from execution.adapters.command import CommandRunner
from execution.adapters.http import HttpTargets
from execution.contract import InvalidChange, load_change
from execution.contract.models import Confirm, Signal, Target
from execution.model import Credentials, Role
from execution.project import State
from execution.sandbox import Sandbox
from reliability import plans

T0 = datetime(2026, 11, 28, 22, 0, tzinfo=UTC)
TARGETS = {"router": Target(kind="http", url="https://router.internal/"), "tool": Target(kind="command")}
CONFIRM = Confirm.model_validate({"http": {"target": "router", "path": "/routing", "expect": {"mode": "v2"}}})


def _adapter(answer: Any) -> HttpTargets:
    client = httpx.Client(transport=httpx.MockTransport(answer))
    return HttpTargets(TARGETS, Credentials({}), client, lambda: T0, sensitive_fields=["account_number"])


def test_a_read_back_answered_404_is_a_definite_mismatch_not_an_unknown_outcome() -> None:
    # Crash trials: a process killed between recording an intent and sending it left a document
    # that does not exist yet; the resume held "outcome unknown" instead of re-sending once.
    result = _adapter(lambda r: httpx.Response(404, json={"error": "not found"})).read_back(CONFIRM, Role.EXECUTOR, 5)
    assert result.matches is False
    assert result.observed is None
    assert "404" in result.detail


def test_a_read_back_that_fails_otherwise_is_still_unknown() -> None:
    result = _adapter(lambda r: httpx.Response(500, json={"error": "x"})).read_back(CONFIRM, Role.EXECUTOR, 5)
    assert result.matches is None


def test_a_signal_read_from_a_sensitive_field_is_masked() -> None:
    # Secrets trials: the value of a signal read from ``account_number`` (a field the plan marks
    # sensitive) reached the ledger, cards and packets in full, because it was masked without its key.
    doc = {"account_number": "273914855526", "token": "tok-123456789", "ratio": 0.5}
    adapter = _adapter(lambda r: httpx.Response(200, json=doc))

    def read(fld: str) -> Any:
        signal = Signal.model_validate({"http": {"target": "router", "path": "/doc", "field": fld}, "max_age": "1m"})
        return adapter.read(fld, signal, Role.VERIFIER).value

    assert read("account_number") == "***"
    assert read("token") == "***"
    assert read("ratio") == 0.5  # an ordinary number stays a number


def test_a_command_signal_read_from_a_sensitive_field_is_masked() -> None:
    runner = CommandRunner(TARGETS, Credentials({}), lambda: T0, sensitive_fields=["account_number"])
    signal = Signal.model_validate(
        {
            "command": {
                "target": "tool",
                "argv": [sys.executable, "-c", 'print(\'{"account_number": "273914855526"}\')'],
                "field": "account_number",
            },
            "max_age": "1m",
        }
    )
    assert runner.read("acct", signal, Role.VERIFIER).value == "***"


def test_a_control_character_is_one_problem_line_with_its_line_number(tmp_path: Path) -> None:
    # Bad-input trials: PyYAML's reader error spans two lines and has no mark, so the problem was
    # printed as two lines without a line number.
    path = plans.write_change(tmp_path, plans.package("CHG-CTRL"), plans.crash_drill())
    text = path.read_text()
    path.write_text(text.replace("kind: change-package", "kind: \x13change-package"))
    try:
        load_change(path)
    except InvalidChange as exc:
        (problem,) = exc.problems
    else:  # pragma: no cover - the file is invalid
        raise AssertionError("a control character was accepted")
    assert "\n" not in str(problem)
    assert problem.line == text.splitlines().index("kind: change-package") + 1
    assert "#x0013" in problem.message


def test_a_resumed_rehearsal_switches_on_the_faults_of_the_stage_in_focus() -> None:
    # Crash trials: the rehearsal died after stage s1 passed but before it switched on the faults
    # named for s2 (or between two of them); the resume only armed faults on later passes.
    switched: list[str] = []
    schedule = FaultSchedule(
        switched.append, {"s2": {"rollback-fail", "error-rate-high"}, "s3": {"no-data"}}, ["s1", "s2", "s3"]
    )
    schedule.catch_up(State("E", current=1))
    assert switched == ["error-rate-high", "rollback-fail"]
    schedule.catch_up(State("E", current=1))
    assert switched == ["error-rate-high", "rollback-fail"]  # never twice


def test_the_sandbox_loses_a_share_of_answers_after_applying() -> None:
    with Sandbox(timeout_ratio=1.0, hang_seconds=0.0, seed=7) as sandbox, httpx.Client(timeout=2.0) as client:
        try:
            client.put(f"{sandbox.url}/drill/x", json={"v": 1}, headers={"Idempotency-Key": "E:s:apply:1"})
            answered = True
        except httpx.HTTPError:
            answered = False
        assert not answered
        assert [a["key"] for a in sandbox.applied()] == ["E:s:apply:1"]
        assert sandbox.state("/drill/x") == {"v": 1}


def test_two_starts_of_one_change_at_once_make_one_execution(tmp_path: Path) -> None:
    # Delivery trials: a start command delivered twice at once passed the "already running" check
    # twice; the second append collided and was retried under a suffixed id, so one change had two
    # live executions. Here: several threads of one engine and a second engine (another process's
    # owner) on the same ledger, all at once.
    from execution.commands import StartRefused
    from execution.service import Engine
    from ledger.sql import SqlLedgerStore

    change = plans.write_and_load(tmp_path / "c", plans.package("CHG-TWICE"), plans.crash_drill())
    store = SqlLedgerStore(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        clock = lambda: T0  # noqa: E731 - every start in the same second, as the race needs
        engines = [Engine(store, lambda s: None, clock, "owner-a"), Engine(store, lambda s: None, clock, "owner-b")]  # type: ignore[arg-type,return-value]
        barrier = threading.Barrier(6)
        started: list[str] = []
        refused: list[str] = []

        def start(i: int) -> None:
            barrier.wait()
            try:
                started.append(engines[i % 2].start(change, "U05OPS", mode="rehearsal", speed=600.0).execution_id)
            except StartRefused as exc:
                refused.append(str(exc))

        threads = [threading.Thread(target=start, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(started) == 1, started
        assert len(refused) == 5
        assert store.executions() == started
    finally:
        store.close()

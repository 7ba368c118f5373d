"""The checkpoint review of rehearsals of the three bundled examples against the real sandbox.

Each rehearsal is driven the way ``stagehold rehearse --auto-release`` drives it (``bot.driver``),
against its own sandbox over HTTP on loopback, all into one SQLite ledger; the sandboxes and the
engine share a hand-moved clock, so nothing sleeps. Some runs carry faults. The report is then
read through the command line, as an operator would: every transition links package version,
plan digest, stage, evidence, release and actor.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot import exits
from bot.bootstrap import live_connector
from bot.cli import main
from bot.driver import drive
from execution.model import Credentials
from execution.sandbox import Sandbox
from execution.service import Engine
from ledger.sql import SqlLedgerStore
from tests.fakes import FakeClock, example

SPEED = 10.0
# (example, faults from the start, faults once the first protected hold is reached, expected status)
RUNS = [
    ("payments-cutover", (), (), "completed"),
    ("treasury-promotion", (), (), "completed"),
    ("sorter-routing", (), (), "completed"),
    ("payments-cutover", (), ("error-rate-high",), "rolled_back"),
    ("payments-cutover", ("rollback-fail", "error-rate-high"), (), "needs_human"),
    ("payments-cutover", (), ("error-rate-degraded",), "held"),
]


@pytest.fixture(scope="module")
def rehearsed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('rehearsals') / 'ledger.db'}"
    store = SqlLedgerStore(url)
    clock = FakeClock()
    ran: list[tuple[str, str]] = []
    try:
        with httpx.Client(timeout=5.0) as client:
            for name, early, late, expected in RUNS:
                with Sandbox(clock=clock) as sandbox:
                    sandbox.set_faults(early)
                    connect = live_connector(Credentials({}), client, clock, sandbox.url)
                    engine = Engine(store, connect, clock, "rehearsal-driver")
                    change = example(name)
                    state = engine.start(
                        change, change.package.authorities.initiate.users[0], mode="rehearsal", speed=SPEED
                    )
                    eid = state.execution_id
                    if late:
                        state = drive(engine, eid, sleep=clock.advance)  # to the first protected hold
                        for fault in late:
                            sandbox.add_fault(fault)
                    state = drive(engine, eid, auto_release=True, sleep=clock.advance)
                    assert state.status() == expected, (name, early, late, state.outcome_reason)
                    ran.append((eid, expected))
                clock.advance(60)
        yield url, ran
    finally:
        store.close()


def report(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object], str]:
    code = main(["report", *argv, "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def test_every_transition_of_the_examples_rehearsals_is_linked(
    capsys: pytest.CaptureFixture[str], rehearsed: tuple[str, list[tuple[str, str]]]
) -> None:
    url, ran = rehearsed
    code, data, err = report(capsys, "--db", url)
    assert code == exits.OK, err
    evidence = data["evidence"]
    assert isinstance(evidence, dict)
    # Forward: payments 4 + treasury 4 + sorter 2, then canary-5 in each faulty run and canary-25
    # in the held one (the high error rate trips the live canary-5 while its protected hold is
    # open, so the rolled-back run never enters canary-25). Back: one step in each rollback.
    assert evidence["transitions"] == (4 + 4 + 2) + (1 + 1 + 2) + (1 + 1)
    assert evidence["linked"] == evidence["transitions"] and evidence["lineage_pct"] == 100.0
    assert evidence["unlinked"] == [] and set(evidence["missing_links"].values()) == {0}
    assert evidence["readings"] > 100

    executions = data["executions"]
    assert isinstance(executions, dict)
    assert [(x["execution"], x["status"]) for x in executions["items"]] == ran
    assert executions["rehearsal"] == len(RUNS)
    outcomes = data["outcomes"]
    assert isinstance(outcomes, dict)
    assert outcomes["totals"] == {
        "completed": 3,
        "held": 1,
        "narrowed": 0,
        "rolled_back": 1,
        "needs_human": 1,
        "running": 0,
    }
    rollbacks = data["rollbacks"]
    assert isinstance(rollbacks, dict)
    assert (rollbacks["total"], rollbacks["by_trigger"], rollbacks["verified"], rollbacks["failed"]) == (2, 2, 1, 1)
    releases = data["releases"]
    assert isinstance(releases, dict)
    # Auto-release clicks as soon as a card opens: every release is flagged, on the hold's opening.
    assert releases["total"] >= 9 and releases["fast"] == releases["total"]
    assert releases["shown_basis"] == {"slack": 0, "opened": releases["total"]}
    assert {p["user"] for p in releases["by_person"]} <= {"U01DANA", "U02LEE", "U10CFO", "U13TREAS", "U20SITE"}


def test_the_report_files_of_the_rehearsals(
    capsys: pytest.CaptureFixture[str], rehearsed: tuple[str, list[tuple[str, str]]], tmp_path: Path
) -> None:
    url, _ = rehearsed
    code, _, _ = report(capsys, "--db", url, "--change", "CHG-*", "--out", str(tmp_path))
    assert code == exits.OK
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "Lineage: **10 of 10** transitions (100.0%; target 100%)" in md
    assert "| CHG-2041 | 4 | 1 | 1 | 0 | 1 | 1 | 0 |" in md
    assert "verified by read-back: **1** · failed: **1**" in md
    assert all((tmp_path / "charts" / n).stat().st_size > 5000 for n in ("time-in-hold.png", "release-latency.png"))

"""``examples/haproxy-canary`` run for real: ``stagehold run`` (and ``resume``) move traffic between
two backends behind a real HAProxy (Debian's 2.6), verified by a real Prometheus (Debian's 2.42)
scraping HAProxy's built-in exporter, while a bounded loop sends requests through the frontend.

The plan is the example's own bytes, so CI runs exactly the plan its package pins; only the
package is rewritten for the ports this test chose and the window (open now), and signed with a
key made here. Each case is one the engine used to get wrong against real systems: a healthy
canary completes tier by tier, a canary answering 5xx rolls back before the next tier, a stopped
Prometheus holds with ``error``, a stopped scrape target holds with ``stale``, one server down is
not hidden by a healthy one, and a label typo is found by ``stagehold probe`` before the window.

One HAProxy and one Prometheus serve the whole module (a new Prometheus takes ~5 s to scrape for
the first time), with a second Prometheus, started alongside, for the case that stops one. Every
case starts from the same state (canary weight 0, both servers healthy and scraped). Nothing
sleeps to assert a negative: waits poll with a deadline.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot import exits
from bot.bootstrap import build_engine, http_client
from bot.cli import main
from execution.adapters.prometheus import PrometheusReader
from execution.contract.models import Signal, Target
from execution.evaluate import evaluate
from execution.model import Credentials, Outcome, Role
from ledger.entry import Entry
from ledger.sql import SqlLedgerStore
from tests.fakes import approver
from tests.real.haproxy import BACKEND, HaproxyRig, Load
from tests.real.prometheus import PrometheusServer, poll

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "haproxy-canary"
INITIATOR, RELEASER = "U05OPS", "U04MIRA"
SERVERS_UP = 'min_over_time(haproxy_server_status{proxy="app",state="UP"}[5s])'
CANARY_SAMPLES = 'sum(increase(haproxy_server_http_responses_total{proxy="app",server="canary"}[5s]))'
# A stage: 5 s initial delay, then two samples 1 s apart; generous for a loaded CI machine.
RUN_WITHIN_S = 90.0


@dataclass
class Site:
    rig: HaproxyRig
    prometheus: PrometheusServer
    spare: PrometheusServer  # scraping the same HAProxy; the case that stops a Prometheus stops this one
    load: Load
    key: Path
    keyring: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    key, keyring = approver(tmp_path_factory.mktemp("keys"), "mira", RELEASER)
    rig = HaproxyRig({"stable": 100, "canary": 0}, checks=True).start()
    prometheus, spare = (
        PrometheusServer(tmp_path_factory.mktemp("prometheus"), {"haproxy": [rig.exporter_address]}) for _ in range(2)
    )
    load = Load(rig, per_s=60.0, limit_s=600.0)
    try:
        prometheus.start()
        spare.start()  # both wait out their first scrape at the same time
        load.start()
        yield Site(rig, prometheus, spare, load, key, keyring)
    finally:
        load.stop()
        prometheus.stop()
        spare.stop()
        rig.stop()


@pytest.fixture
def fresh(site: Site) -> Site:
    """The state every case starts from: all traffic on stable, both servers healthy and scraped."""
    rig = site.rig
    rig.command(f"set weight {BACKEND}/canary 0")
    rig.command(f"set weight {BACKEND}/stable 100")
    rig.backends["canary"].status = 200
    rig.backends["canary"].healthy = True
    rig.exporter(True)
    scraping(site.prometheus)
    if site.spare.running:
        scraping(site.spare)
    return site


def scraping(prometheus: PrometheusServer) -> PrometheusServer:
    """``prometheus`` running (started again if a case stopped it) and seeing both servers UP."""
    if not prometheus.running:
        prometheus.start()
    prometheus.wait_until(
        "both servers UP for a whole 5 s window",
        lambda: [s["value"][1] for s in prometheus.query(SERVERS_UP)] == ["1", "1"],
    )
    return prometheus


# ---------------------------------------------------------------- the package, signed for this site


def window_now() -> str:
    now = datetime.now(UTC)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return f'window: {{opens: "{(now - timedelta(hours=1)).strftime(fmt)}", closes: "{(now + timedelta(hours=1)).strftime(fmt)}"}}'


def replace_once(text: str, pattern: str, new: str) -> str:
    changed, count = re.subn(pattern, lambda _: new, text)
    assert count == 1, f"examples/haproxy-canary changed shape: {pattern!r} matched {count} times"
    return changed


def package_for(
    site: Site, directory: Path, plan: str | None = None, prometheus: PrometheusServer | None = None
) -> Path:
    """The example's package pointed at this site (``prometheus``: the site's main one unless
    given), open now and signed; the plan is the example's own bytes unless ``plan`` is given
    (then pinned by its new digest)."""
    directory.mkdir(parents=True, exist_ok=True)
    example_plan = (EXAMPLE / "plan.yaml").read_bytes()
    plan_bytes = example_plan if plan is None else plan.encode()
    (directory / "plan.yaml").write_bytes(plan_bytes)
    text = (EXAMPLE / "package.yaml").read_text(encoding="utf-8")
    pinned = hashlib.sha256(example_plan).hexdigest()
    assert f'plan_sha256: "{pinned}"' in text, "examples/haproxy-canary: the package does not pin its plan"
    text = text.replace(pinned, hashlib.sha256(plan_bytes).hexdigest())
    text = replace_once(text, r"socket: /run/haproxy/admin\.sock", f"socket: {site.rig.socket}")
    text = replace_once(text, r'url: "http://127\.0\.0\.1:9090"', f'url: "{(prometheus or site.prometheus).url}"')
    text = replace_once(text, r"window: \{[^}]*\}", window_now())
    package = directory / "package.yaml"
    package.write_text(text, encoding="utf-8")
    assert main(["approve", str(package), "--key", str(site.key), "--keyring", str(site.keyring)]) == exits.OK
    return package


# ---------------------------------------------------------------- stagehold, as its own process


def environment(site: Site) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STAGEHOLD_", "SLACK_"))}
    env["STAGEHOLD_KEYRING"] = str(site.keyring)
    for role in ("PREFLIGHT", "EXECUTOR", "VERIFIER", "ROLLBACK"):
        env[f"STAGEHOLD_CREDENTIAL_{role}"] = f"ci-{role.lower()}-credential"
    return env


_started: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_process_left() -> Iterator[None]:
    """A case that fails while stagehold runs must not leave it driving the next case's HAProxy."""
    yield
    while _started:
        process = _started.pop()
        if process.poll() is None:
            process.kill()
            process.communicate()


def stagehold(site: Site, *args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=ROOT,
        env=environment(site),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _started.append(process)
    return process


def finished(process: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=RUN_WITHIN_S)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        raise AssertionError(f"stagehold did not stop within {RUN_WITHIN_S:g}s:\n{output}") from None
    return process.returncode, output


class Ledger:
    """The run's SQLite ledger, read by the test while stagehold writes it."""

    def __init__(self, path: Path) -> None:
        self.url = f"sqlite:///{path}"
        self.store = SqlLedgerStore(self.url)  # creates the tables before stagehold opens them

    def close(self) -> None:
        self.store.close()

    def entries(self) -> list[Entry]:
        executions = self.store.executions()
        return self.store.read(executions[0]) if executions else []

    def of(self, kind: str) -> list[Entry]:
        return [e for e in self.entries() if e.kind == kind]

    @property
    def execution(self) -> str:
        (eid,) = self.store.executions()
        return eid

    def confirmed(self) -> list[tuple[str, str, dict[str, int]]]:
        """(stage, direction, weight per server) of every action confirmed by read-back."""
        return [
            (e.body["stage"], e.body["direction"], {s: v["weight"] for s, v in e.body["observed"].items()})
            for e in self.of("action.confirmed")
        ]

    def wait_for(self, what: str, found: Callable[[list[Entry]], bool], process: subprocess.Popen[str]) -> None:
        def read() -> list[Entry]:
            if process.poll() is not None:
                raise AssertionError(f"stagehold exited {process.returncode} first:\n{process.communicate()[0]}")
            return self.entries()

        poll(read, found, RUN_WITHIN_S, what)

    def last_hold(self) -> dict[str, Any]:
        return dict(self.of("hold.opened")[-1].body)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with closing(Ledger(tmp_path / "ledger.db")) as opened:
        yield opened


def canary_10_live(entries: list[Entry]) -> bool:
    return any(e.kind == "action.confirmed" and e.body["stage"] == "canary-10" for e in entries)


def weights(rig: HaproxyRig) -> dict[str, int]:
    """HAProxy's own answer, asked directly over the Runtime API (not through stagehold)."""
    return {"canary": rig.weight("canary"), "stable": rig.weight("stable")}


def run(site: Site, package: Path, ledger: Ledger, out: Path) -> subprocess.Popen[str]:
    return stagehold(site, "run", str(package), "--as", INITIATOR, "--db", ledger.url, "--out", str(out))


# ---------------------------------------------------------------- the cases


def test_the_example_rehearses_on_the_sandbox_without_haproxy(tmp_path: Path) -> None:
    # What a new user runs first: no HAProxy, no Prometheus, the same package and plan.
    db = f"sqlite:///{tmp_path / 'rehearsal.db'}"
    package = str(EXAMPLE / "package.yaml")
    assert main(["rehearse", package, "--auto-release", "--db", db, "--quiet"]) == exits.OK
    fault = ["--fault", "signal:canary_5xx_ratio=fail@canary-10"]
    assert main(["rehearse", package, "--auto-release", "--db", db, "--quiet", *fault]) == exits.ROLLED_BACK


def test_probe_finds_a_label_typo_before_the_window(fresh: Site, tmp_path: Path) -> None:
    site = fresh
    # Mid-change, so the canary has traffic to be judged by: 10% of the load.
    site.rig.command(f"set weight {BACKEND}/canary 10")
    site.rig.command(f"set weight {BACKEND}/stable 90")
    site.prometheus.wait_until(
        "10 canary answers in a 5 s window",
        lambda: any(float(s["value"][1]) >= 10 for s in site.prometheus.query(CANARY_SAMPLES)),
    )
    good = package_for(site, tmp_path / "good")
    code, output = finished(stagehold(site, "probe", str(good), "--json"))
    report = json.loads(output)
    assert code == exits.OK, output
    assert {c["signal"]: c["outcome"] for c in report["checks"]} == {
        "servers_up": "pass",
        "stable_up": "pass",
        "canary_5xx_ratio": "pass",
    }
    # HAProxy's weights are read back, never written: canary-10's read-back matches what is live.
    readbacks = {(r["stage"], r["direction"]): r["status"] for r in report["readbacks"]}
    assert readbacks[("canary-10", "apply")] == "matches" and readbacks[("full", "apply")] == "differs"
    typo = (EXAMPLE / "plan.yaml").read_text(encoding="utf-8").replace('server="canary"', 'server="canry"')
    assert typo.count('server="canry"') == 3  # both halves of the ratio and its sample count
    broken = package_for(site, tmp_path / "typo", plan=typo)
    # The sandbox answers any query of the plan by its text: a rehearsal cannot see the typo ...
    rehearsal = main(["rehearse", str(broken), "--auto-release", "--db", f"sqlite:///{tmp_path / 'r.db'}", "--quiet"])
    assert rehearsal == exits.OK
    # ... the probe reads the real Prometheus, before any window opens.
    code, output = finished(stagehold(site, "probe", str(broken), "--json"))
    report = json.loads(output)
    assert code == exits.HELD, output
    outcomes = {c["signal"]: c["outcome"] for c in report["checks"]}
    assert outcomes == {"servers_up": "pass", "stable_up": "pass", "canary_5xx_ratio": "no_data"}
    assert weights(site.rig) == {"canary": 10, "stable": 90}  # a probe acts on nothing


def test_a_healthy_canary_completes_tier_by_tier_with_each_weight_read_back(
    fresh: Site, tmp_path: Path, ledger: Ledger
) -> None:
    site = fresh
    package = package_for(site, tmp_path / "change")
    before = site.load.counts()

    code, output = finished(run(site, package, ledger, tmp_path / "out"))
    assert code == exits.HELD, output
    assert ledger.confirmed() == [("canary-10", "apply", {"canary": 10, "stable": 90})]
    assert weights(site.rig) == {"canary": 10, "stable": 90}
    hold = ledger.last_hold()
    assert (hold["kind"], hold["stage"]) == ("protected", "canary-50"), hold
    assert all(r["outcome"] == "pass" for r in hold["results"]), hold["results"]

    # The change authority releases each protected hold (what Slack's Release button calls),
    # and `stagehold resume` reconciles against HAProxy and drives on.
    engine = build_engine(ledger.store, lambda state: pytest.fail("a release acts on nothing"))
    for stage, expected, code_after in (
        ("canary-50", {"canary": 50, "stable": 50}, exits.HELD),
        ("full", {"canary": 100, "stable": 0}, exits.OK),
    ):
        hold = ledger.last_hold()
        assert hold["stage"] == stage
        released = engine.release(ledger.execution, hold["hold"], hold["evidence_version"], RELEASER)
        assert "hold.released" in released.kinds, released.kinds
        code, output = finished(stagehold(site, "resume", ledger.execution, "--db", ledger.url))
        assert code == code_after, output
        assert ledger.confirmed()[-1] == (stage, "apply", expected), output
        assert weights(site.rig) == expected

    assert [e.kind for e in ledger.entries()][-1] == "execution.completed"
    assert [(s, d) for s, d, _ in ledger.confirmed()] == [
        ("canary-10", "apply"),
        ("canary-50", "apply"),
        ("full", "apply"),
    ]
    # Each stage's first sample waits initial_delay (5 s) after its read-back, so the 5 s windows
    # it reads hold only post-change data.
    entries = ledger.entries()
    for confirmed in (e for e in entries if e.kind == "action.confirmed"):
        first = next(e for e in entries if e.seq > confirmed.seq and e.kind == "verification.sampled")
        assert (first.ts - confirmed.ts).total_seconds() >= 5.0, (confirmed.body["stage"], first.ts, confirmed.ts)
    # Every stage passed on samples judged by real data, the load's canary share among them.
    samples = ledger.of("verification.sampled")
    assert {e.body["stage"] for e in samples} == {"canary-10", "canary-50", "full"}
    assert all(e.body["outcome"] == "pass" for e in samples), [e.body["results"] for e in samples]
    ratios = [r for e in samples for r in e.body["results"] if r["signal"] == "canary_5xx_ratio"]
    assert all(r["value"] == 0 and r["samples"] >= 10 for r in ratios), ratios
    assert site.load.counts()["canary"] > before["canary"]
    assert site.rig.traffic(10) == {"canary": 10}  # and now the canary takes everything


def test_a_canary_answering_5xx_is_rolled_back_before_the_next_tier(
    fresh: Site, tmp_path: Path, ledger: Ledger
) -> None:
    site = fresh
    site.rig.backends["canary"].status = 503  # its health check still answers 200
    code, output = finished(run(site, package_for(site, tmp_path / "change"), ledger, tmp_path / "out"))
    assert code == exits.ROLLED_BACK, output

    assert ledger.confirmed() == [
        ("canary-10", "apply", {"canary": 10, "stable": 90}),
        ("canary-10", "rollback", {"canary": 0, "stable": 100}),
    ]
    assert weights(site.rig) == {"canary": 0, "stable": 100}
    assert not [e for e in ledger.of("action.intended") if e.body["stage"] != "canary-10"]  # never the next tier
    (started,) = ledger.of("rollback.started")
    assert "canary_5xx_ratio fail" in started.body["reason"], started.body
    failing = [
        r
        for e in ledger.of("verification.sampled")
        for r in e.body["results"]
        if r["signal"] == "canary_5xx_ratio" and r["outcome"] == "fail"
    ]
    assert failing and failing[0]["value"] == 1.0
    assert (tmp_path / "out" / "packet.json").exists()
    assert site.rig.traffic(10) == {"stable": 10}


def test_a_stopped_scrape_target_holds_with_stale(fresh: Site, tmp_path: Path, ledger: Ledger) -> None:
    site = fresh
    process = run(site, package_for(site, tmp_path / "change"), ledger, tmp_path / "out")
    ledger.wait_for("canary-10 confirmed live", canary_10_live, process)
    site.rig.exporter(False)  # HAProxy keeps serving; only Prometheus' scrape of it fails

    code, output = finished(process)
    assert code == exits.HELD, output
    hold = ledger.last_hold()
    assert hold["stage"] == "canary-10", hold
    # last_over_time(...[1m]) still answers the stable server's old status: only its age tells.
    stable = next(r for r in hold["results"] if r["signal"] == "stable_up")
    assert (stable["outcome"], stable["value"]) == ("stale", 1), stable
    assert "stale" in hold["reason"] and not [r for r in hold["results"] if r["outcome"] in ("pass", "fail")]
    assert weights(site.rig) == {"canary": 10, "stable": 90}  # held, not rolled back: the stage stays live


def test_a_stopped_prometheus_holds_with_error(fresh: Site, tmp_path: Path, ledger: Ledger) -> None:
    site = fresh
    spare = scraping(site.spare)
    process = run(site, package_for(site, tmp_path / "change", prometheus=spare), ledger, tmp_path / "out")
    ledger.wait_for("canary-10 confirmed live", canary_10_live, process)
    spare.stop()

    code, output = finished(process)
    assert code == exits.HELD, output
    hold = ledger.last_hold()
    assert hold["stage"] == "canary-10", hold
    assert {r["outcome"] for r in hold["results"]} == {"error"}, hold["results"]
    assert weights(site.rig) == {"canary": 10, "stable": 90}


def test_one_server_down_is_not_hidden_by_a_healthy_one(fresh: Site, tmp_path: Path, ledger: Ledger) -> None:
    # Last: a server seen DOWN keeps min_over_time's 5 s window failing for 5 s after it recovers.
    site = fresh
    process = run(site, package_for(site, tmp_path / "change"), ledger, tmp_path / "out")
    ledger.wait_for("canary-10 confirmed live", canary_10_live, process)
    site.rig.backends["canary"].healthy = False  # HAProxy's check marks it DOWN; stable stays UP

    code, output = finished(process)
    assert code == exits.ROLLED_BACK, output
    failing = [
        r
        for e in ledger.of("verification.sampled")
        for r in e.body["results"]
        if r["signal"] == "servers_up" and r["outcome"] == "fail"
    ]
    assert failing, output
    assert failing[0]["labels"]["server"] == "canary"
    assert (failing[0]["series"], failing[0]["series_not_passing"]) == (2, 1)
    assert 'server="canary"' in failing[0]["detail"] and "1 of 2 series not passing" in failing[0]["detail"]
    assert ledger.confirmed()[-1] == ("canary-10", "rollback", {"canary": 0, "stable": 100})

    # The same data read the old way — the largest series decides — would have passed.
    signal = Signal.model_validate(
        {"prometheus": {"target": "metrics", "query": SERVERS_UP, "reduce": "max"}, "max_age": "5s"}
    )
    client = http_client(5.0)
    try:
        targets = {"metrics": Target(kind="prometheus", url=site.prometheus.url)}
        reader = PrometheusReader(targets, Credentials(), client, lambda: datetime.now(UTC))
        evidence = reader.read("servers_up", signal, Role.VERIFIER)
    finally:
        client.close()
    assert evaluate("check", evidence, "== 1", 5.0, datetime.now(UTC)).outcome == Outcome.PASS

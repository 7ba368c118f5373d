"""stagehold's adapters against a real HAProxy: weights set and read back through the Runtime API
(UNIX and TCP sockets), traffic that really splits, refusals that change nothing, and the stats
page driven by an HTTP action (a form body answered with 303)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from execution.adapters.live import LiveTargets
from execution.contract.models import Action, Confirm, Target
from execution.model import Credentials, Role

from .haproxy import HaproxyRig


@pytest.fixture
def rig() -> Iterator[HaproxyRig]:
    with HaproxyRig({"stable": 100, "canary": 0}) as running:
        yield running


_clients: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def targets_for(rig: HaproxyRig, socket: str | None = None) -> LiveTargets:
    targets = {
        "lb": Target(kind="haproxy", socket=socket or rig.socket),
        "lb-stats": Target(kind="http", url=rig.stats_url),
    }
    _clients.append(httpx.Client())
    return LiveTargets(targets, Credentials({}), _clients[-1], lambda: datetime.now(UTC))


def weights(**by_server: int) -> Action:
    return Action.model_validate({"haproxy": {"target": "lb", "backend": "app", "weights": by_server}})


def expect(**fields: object) -> Confirm:
    return Confirm.model_validate({"haproxy": {"target": "lb", "backend": "app", "expect": fields}})


@pytest.mark.parametrize("over", ["unix", "tcp"])
def test_weights_set_through_the_runtime_api_are_read_back_and_split_the_traffic(rig: HaproxyRig, over: str) -> None:
    live = targets_for(rig, rig.socket if over == "unix" else rig.runtime_tcp)
    assert rig.traffic(20) == {"stable": 20}

    result = live.apply(weights(canary=25, stable=75), "CHG-1:canary-25:apply:1", Role.EXECUTOR, 5.0)
    assert result.outcome == "ok", result.detail
    assert result.response == {"commands": ["set weight app/canary 25", "set weight app/stable 75"]}
    # HAProxy's own view, asked directly, agrees with what stagehold sent.
    assert (rig.weight("canary"), rig.weight("stable")) == (25, 75)

    back = live.read_back(expect(**{"canary.weight": 25, "stable.weight": 75}), Role.EXECUTOR, 5.0)
    assert back.matches is True, back.detail
    assert back.observed["canary"] == {
        "weight": 25,
        "initial_weight": 0,
        "state": "ready",
        "operational": "running",
        "address": "127.0.0.1",
        "port": rig.backends["canary"].port,
    }

    seen = rig.traffic(200)
    assert seen["canary"] + seen["stable"] == 200
    assert 40 <= seen["canary"] <= 60, seen  # 25% of 200, give or take the round-robin phase
    assert rig.backends["canary"].hits == seen["canary"]

    # And back: the rollback sets the old weights and traffic returns to stable alone.
    assert live.apply(weights(canary=0, stable=100), "CHG-1:canary-25:rollback:1", Role.ROLLBACK, 5.0).outcome == "ok"
    assert live.read_back(expect(**{"canary.weight": 0}), Role.ROLLBACK, 5.0).matches is True
    assert rig.traffic(20) == {"stable": 20}


def test_a_read_back_that_differs_names_the_server_and_field(rig: HaproxyRig) -> None:
    back = targets_for(rig).read_back(expect(**{"canary.weight": 25}), Role.EXECUTOR, 5.0)
    assert back.matches is False
    assert "canary.weight: expected 25, observed 0" in back.detail


def test_an_unknown_server_is_rejected_before_anything_is_sent(rig: HaproxyRig) -> None:
    result = targets_for(rig).apply(weights(stable=50, canry=50), "CHG-1:s:apply:1", Role.EXECUTOR, 5.0)
    assert result.outcome == "rejected"
    assert "no server(s) canry" in result.detail and "nothing was sent" in result.detail
    assert rig.weight("stable") == 100  # the valid half was not applied either


def test_an_unknown_backend_and_an_unreachable_socket_are_rejected(rig: HaproxyRig) -> None:
    live = targets_for(rig)
    wrong = Action.model_validate({"haproxy": {"target": "lb", "backend": "ap", "weights": {"canary": 5}}})
    result = live.apply(wrong, "CHG-1:s:apply:1", Role.EXECUTOR, 5.0)
    assert (result.outcome, "Can't find backend" in result.detail) == ("rejected", True)

    gone = targets_for(rig, str(rig.dir / "no-such.sock"))
    result = gone.apply(weights(canary=5), "CHG-1:s:apply:1", Role.EXECUTOR, 2.0)
    assert result.outcome == "rejected" and "cannot reach the Runtime API" in result.detail
    back = gone.read_back(expect(**{"canary.weight": 5}), Role.EXECUTOR, 2.0)
    assert back.matches is None and "read-back failed" in back.detail
    assert rig.weight("canary") == 0


def test_a_refusal_is_rejected_first_and_ambiguous_after_an_earlier_command_applied() -> None:
    # A static algorithm (balance source, map-based) takes only weights of 0% and 100%: HAProxy
    # refuses anything else with its reason, which the adapter reports.
    with HaproxyRig({"a": 10, "b": 10}, balance="source") as static:
        live = targets_for(static)
        first = live.apply(weights(a=5), "CHG-1:s:apply:1", Role.EXECUTOR, 5.0)
        assert first.outcome == "rejected"
        assert "static LB algorithm" in first.detail and static.weight("a") == 10

        later = live.apply(weights(a=0, b=5), "CHG-1:s:apply:2", Role.EXECUTOR, 5.0)
        assert later.outcome == "ambiguous", later.detail
        assert "applied before it: set weight app/a 0" in later.detail
        assert (static.weight("a"), static.weight("b")) == (0, 10)  # part of it is live: never "rejected"


def test_states_drain_and_ready_are_set_and_read_back(rig: HaproxyRig) -> None:
    live = targets_for(rig)
    rig.command("set weight app/canary 100")
    drain = Action.model_validate({"haproxy": {"target": "lb", "backend": "app", "states": {"canary": "drain"}}})
    assert live.apply(drain, "CHG-1:s:apply:1", Role.EXECUTOR, 5.0).outcome == "ok"
    assert live.read_back(expect(**{"canary.state": "drain"}), Role.EXECUTOR, 5.0).matches is True
    assert rig.traffic(20) == {"stable": 20}  # a draining server takes no new traffic


def stats_form(action: str, backend: str = "app", **extra: object) -> Action:
    spec: dict[str, object] = {
        "target": "lb-stats",
        "method": "POST",
        "path": "/stats",
        "form": {"s": ["canary"], "action": action, "b": backend},
        **extra,
    }
    return Action.model_validate({"http": spec})


def test_the_stats_page_takes_a_form_post_answered_with_303(rig: HaproxyRig) -> None:
    live = targets_for(rig)
    rig.command("set weight app/canary 100")
    strict = {"expect_status": [303], "expect_location": "st=DONE"}
    result = live.apply(stats_form("maint", **strict), "CHG-1:s:apply:1", Role.EXECUTOR, 5.0)
    assert (result.outcome, result.status) == ("ok", 303), result.detail
    assert live.read_back(expect(**{"canary.state": "maint"}), Role.EXECUTOR, 5.0).matches is True
    assert rig.traffic(20) == {"stable": 20}

    # HAProxy answers 303 even when it did nothing (st=ERRP): the declared Location tells them apart,
    # and without a match the outcome is ambiguous (the read-back decides), never ok.
    result = live.apply(stats_form("ready", backend="nope", **strict), "CHG-1:s:apply:2", Role.EXECUTOR, 5.0)
    assert result.outcome == "ambiguous" and "st=ERRP" in result.detail
    assert live.read_back(expect(**{"canary.state": "maint"}), Role.EXECUTOR, 5.0).matches is True

    # Without expect_status a 303 after a write is a redirect that may mean "done": ambiguous, not
    # rejected — the form was processed, and calling it refused would hide a live change.
    result = live.apply(stats_form("ready"), "CHG-1:s:apply:3", Role.EXECUTOR, 5.0)
    assert (result.outcome, result.status) == ("ambiguous", 303)
    assert live.read_back(expect(**{"canary.state": "ready"}), Role.EXECUTOR, 5.0).matches is True


def test_following_the_stats_page_redirect_judges_the_page_it_leads_to(rig: HaproxyRig) -> None:
    live = targets_for(rig)
    result = live.apply(stats_form("drain", redirect="follow"), "CHG-1:s:apply:1", Role.EXECUTOR, 5.0)
    assert (result.outcome, result.status) == ("ok", 200), result.detail
    assert live.read_back(expect(**{"canary.state": "drain"}), Role.EXECUTOR, 5.0).matches is True

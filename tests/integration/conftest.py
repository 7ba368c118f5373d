"""The rehearsal sandbox served on a free loopback port, with a clock the test moves by hand; a quick
copy of the payments example for command-line runs."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from execution.sandbox import Sandbox
from tests.fakes import EXAMPLES

TOKENS = {
    "executor": "exec-7f3a9c1d2e",
    "rollback": "back-5b8e0f4a6c",
    "preflight": "pre-1122aa",
    "verifier": "ver-3344bb",
}


class FakeClock:
    def __init__(self, start: datetime = datetime(2026, 11, 28, 22, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sandbox(clock: FakeClock) -> Iterator[Sandbox]:
    box = Sandbox(port=0, clock=clock).start()
    try:
        yield box
    finally:
        box.stop()


@pytest.fixture
def secured_sandbox(clock: FakeClock) -> Iterator[Sandbox]:
    """A sandbox that checks each write's bearer token against its key's direction."""
    box = Sandbox(port=0, tokens=TOKENS, clock=clock).start()
    try:
        yield box
    finally:
        box.stop()


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.url, timeout=5.0) as c:
        yield c


@pytest.fixture
def secured_client(secured_sandbox: Sandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=secured_sandbox.url, timeout=5.0) as c:
        yield c


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The payments example with every bake one interval long, approved with its new digest."""
    directory = tmp_path_factory.mktemp("quick") / "payments-quick"
    shutil.copytree(EXAMPLES / "payments-cutover", directory)
    plan = directory / "plan.yaml"
    text = plan.read_text(encoding="utf-8").replace("bake: 5m", "bake: 30s").replace("bake: 10m", "bake: 30s")
    plan.write_text(text, encoding="utf-8")
    package = directory / "package.yaml"
    old = hashlib.sha256((EXAMPLES / "payments-cutover" / "plan.yaml").read_bytes()).hexdigest()
    new = hashlib.sha256(plan.read_bytes()).hexdigest()
    package.write_text(package.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    return package

"""Replicas on one PostgreSQL ledger: leases with short TTLs, renewal, and a replica that loses the
database stops acting (every effect on the target has its intent in the ledger first)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from execution import events as ev
from ledger.chain import verify_chain
from ledger.sql import SqlLedgerStore
from tests.conftest import PG_ADMIN_DSN
from tests.slack.conftest import CHANGE, INITIATOR, RELEASERS, BotFactory, Harness

pytestmark = pytest.mark.postgres


@contextlib.contextmanager
def database_refused(url: str) -> Iterator[None]:
    """No new connection to the test database, and every open one killed (pg_terminate_backend)."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def start(h: Harness) -> str:
    response, name = h.slash(f"start {CHANGE}", INITIATOR)
    assert response.status_code == 200
    h.answer(name)
    return h.execution().execution_id


def test_a_replica_that_loses_the_database_drops_its_lease_and_acts_on_nothing_unrecorded(
    pg_url: str, make_bot: BotFactory
) -> None:
    make_bot.db_url = pg_url
    h = make_bot(lease_ttl_s=4.0, lease_renew_s=0.5, lease_poll_s=0.5)
    execution_id = start(h)
    h.click(h.hold_card("H1"), RELEASERS[0])
    h.wait_state(lambda s: s.open_hold is None, 20, "H1 released")
    # The engine now re-checks, applies canary-25 and bakes: the database goes away somewhere in that.
    with database_refused(pg_url):
        h.fake.wait_for(lambda: h.bot.engine.leases_held() == 0, 15, "the lease dropped after a failed renewal")
        assert httpx.get(f"{h.url}/readyz", timeout=20).status_code == 503
        applied_while_down = len(h.sandbox.applied())
    # Back: the same replica takes its lease again, reconciles and drives on to the next hold.
    h.hold_card("H2", timeout=60)
    assert httpx.get(f"{h.url}/readyz", timeout=20).status_code == 200
    with contextlib.closing(SqlLedgerStore(pg_url)) as store:
        entries = store.read(execution_id)
    assert verify_chain(entries, execution_id).ok
    intended = {e.body["key"] for e in entries if e.kind == ev.ACTION_INTENDED}
    applied = h.sandbox.applied()
    assert applied and len(applied) >= applied_while_down
    for effect in applied:
        assert effect["key"] in intended, f"an effect without its intent in the ledger: {effect}"
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))

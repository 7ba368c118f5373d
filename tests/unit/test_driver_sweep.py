"""The driver's sweep: the safety net for lost wake-ups, reading only executions without one."""

from __future__ import annotations

from bot.scheduler import Driver
from tests.fakes import Rig


def test_the_sweep_wakes_an_execution_without_a_pending_wake_and_skips_the_others_unread(rig: Rig) -> None:
    rig.start()
    driver = Driver(rig.engine, rig.clock)  # not started: jobs stay pending, nothing runs
    read: list[str] = []
    store_read = rig.store.read

    def counted(execution_id: str, after_seq: int = 0) -> object:
        read.append(execution_id)
        return store_read(execution_id, after_seq=after_seq)

    rig.store.read = counted  # type: ignore[method-assign]
    assert not driver.pending(rig.eid)
    driver.sweep()
    assert read == [rig.eid]  # read to find it unfinished, then woken
    assert driver.pending(rig.eid)
    read.clear()
    driver.sweep()
    assert read == []  # its wake-up is pending: not read again

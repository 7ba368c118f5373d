"""The driver's sweep: the safety net for lost wake-ups, reading only executions without one."""

from __future__ import annotations

from bot.scheduler import Driver
from execution.service import Engine
from tests.fakes import Rig


def count_reads(rig: Rig) -> list[str]:
    """The execution ids the rig's store is asked to read from now on, in order."""
    read: list[str] = []
    store_read = rig.store.read

    def counted(execution_id: str, after_seq: int = 0) -> object:
        read.append(execution_id)
        return store_read(execution_id, after_seq=after_seq)

    rig.store.read = counted  # type: ignore[method-assign]
    return read


def test_the_sweep_wakes_an_execution_without_a_pending_wake_and_skips_the_others_unread(rig: Rig) -> None:
    rig.start()
    driver = Driver(rig.engine, rig.clock)  # not started: jobs stay pending, nothing runs
    read = count_reads(rig)
    assert not driver.pending(rig.eid)
    driver.sweep()
    assert read == [rig.eid]  # read to find it unfinished, then woken
    assert driver.pending(rig.eid)
    read.clear()
    driver.sweep()
    assert read == []  # its wake-up is pending: not read again


def test_a_process_starting_on_a_ledger_of_finished_executions_reads_only_the_open_ones(rig: Rig) -> None:
    rig.start(mode="rehearsal", speed=60.0)
    rig.run()
    finished = rig.eid
    rig.engine.abandon(finished, "U05OPS", "replaced by a new rehearsal")
    rig.start(mode="rehearsal", speed=60.0)
    assert rig.store.open_executions() == [rig.eid]  # the registry saw the closing entry
    # A new process on the same ledger: what it reads to find what to drive.
    fresh = Engine(rig.store, lambda s: rig.fake, rig.clock, "owner-b")
    read = count_reads(rig)
    assert fresh.active() == [rig.eid]
    assert read == [rig.eid]  # the abandoned execution is never folded
    assert fresh.load(finished).terminal  # and still reads as it always did when asked for

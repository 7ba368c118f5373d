"""Reliability trials: crash, ambiguity, delivery, tampering, bad input, secrets, authority, approvals and failover.

``run_families(size, names, workdir)`` runs the named families and returns their results;
``python -m reliability`` does the same and rewrites ``docs/reliability.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from reliability.harness import Family, FamilyResult, Size


def _families() -> list[Family]:
    from reliability import ambiguous, approvals, authority, badinput, crash, deliveries, failover, leaks, tamper

    return [
        Family("crash", crash.run_crash, "SIGKILL a rehearsal process at chosen moments and resume it"),
        Family("negative-control", crash.run_negative, "the crash trials on an engine without keys or read-back"),
        Family("ambiguous", ambiguous.run, "writes applied whose answer is lost"),
        Family("deliveries", deliveries.run, "repeated, forged, stale and tampered Slack deliveries"),
        Family("tamper", tamper.run, "modified, deleted, reordered, inserted and truncated ledger rows"),
        Family("bad-input", badinput.run, "generated packages, plans, slash commands and payloads"),
        Family("secrets", leaks.run, "secrets in every field that reaches the ledger, cards, packets and logs"),
        Family("authority", authority.run, "random authorities and random clicks"),
        Family("approvals", approvals.run, "unapproved packages, and chains rewritten behind the witness's back"),
        Family(
            "failover", failover.run, "three replicas on PostgreSQL, the lease holder SIGKILLed, PostgreSQL restarted"
        ),
    ]


class _Lazy(Sequence[Family]):
    """The family list, built on first use so ``import reliability`` stays cheap."""

    _items: list[Family] | None = None

    def _all(self) -> list[Family]:
        if self._items is None:
            self._items = _families()
        return self._items

    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        return self._all()[i]

    def __len__(self) -> int:
        return len(self._all())


FAMILIES: Sequence[Family] = _Lazy()


def run_families(
    size: Size, names: Sequence[str], workdir: Path, progress: Callable[[str], None] = lambda _line: None
) -> list[FamilyResult]:
    results: list[FamilyResult] = []
    for family in FAMILIES:
        if family.name not in names:
            continue
        progress(f"running {family.name} ({size.name}): {family.about}")
        started = time.monotonic()
        out = family.run(size, workdir / family.name)
        for r in out:
            r.finished_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            if not r.seconds:
                r.seconds = time.monotonic() - started
        results.extend(out)
    return results

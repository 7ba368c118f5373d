"""Which of a package's Slack user groups a person belongs to (``usergroups.users.list``).

Rules:
* Only the groups the package names are looked up, each at most once per ``ttl_s`` (60 s by
  default): group membership changes rarely, clicks come in bursts, and Slack rate-limits the call.
* A failed lookup counts as *not a member* of that group and is logged; the engine then denies
  the click and records it, which is the safe error. Failures are not cached, so the next click
  asks again.
* This answers "which groups"; it never decides who may do what — the engine does, from the
  package and the ledger.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

log = logging.getLogger("stagehold.slack.directory")


class Directory:
    def __init__(self, client: WebClient, *, ttl_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.clock = clock
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def members(self, group: str) -> frozenset[str] | None:
        """The members of ``group`` (cached), or None if Slack could not tell us."""
        now = self.clock()
        with self._lock:
            hit = self._cache.get(group)
            if hit is not None and now - hit[0] < self.ttl_s:
                return hit[1]
        try:
            response = self.client.usergroups_users_list(usergroup=group)
            users = response.get("users")
            if not isinstance(users, list):
                raise ValueError("answer has no user list")
        except (SlackApiError, ValueError, OSError) as exc:
            log.warning("usergroups.users.list %s failed (%s): treating as no membership", group, exc)
            return None
        members = frozenset(u for u in users if isinstance(u, str))
        with self._lock:
            self._cache[group] = (now, members)
        return members

    def groups_of(self, user: str, groups: Iterable[str]) -> tuple[str, ...]:
        """Those of ``groups`` that ``user`` belongs to, in the order given."""
        out = []
        for group in dict.fromkeys(groups):
            members = self.members(group)
            if members is not None and user in members:
                out.append(group)
        return tuple(out)

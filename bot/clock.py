"""The one place that reads the time. Everything else receives ``now`` or a ``Clock``."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)

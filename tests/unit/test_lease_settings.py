"""Lease timing settings: safe defaults well under the examples' sampling intervals, bad
combinations refused with one line naming the settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import SettingsError, load_settings
from execution.conditions import parse_duration

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_take_over_well_within_one_sampling_interval_of_the_examples(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert (settings.lease_ttl_s, settings.lease_renew_s, settings.lease_poll_s) == (10.0, 3.0, 2.0)
    takeover = settings.lease_ttl_s + settings.lease_poll_s
    for plan in ("payments-cutover", "first-change"):
        text = (ROOT / "examples" / plan / "plan.yaml").read_text()
        intervals = [parse_duration(line.split(":", 1)[1].strip()) for line in text.splitlines() if "every:" in line]
        assert intervals and takeover < min(intervals) / 2


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STAGEHOLD_LEASE_TTL": "4", "STAGEHOLD_LEASE_RENEW": "3"}, "STAGEHOLD_LEASE_RENEW must be at most half"),
        ({"STAGEHOLD_LEASE_POLL": "30"}, "STAGEHOLD_LEASE_POLL must not exceed STAGEHOLD_LEASE_TTL"),
        ({"STAGEHOLD_LEASE_TTL": "0"}, "invalid setting STAGEHOLD_LEASE_TTL"),
    ],
)
def test_unsafe_lease_timing_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        load_settings()

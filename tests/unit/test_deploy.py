"""deploy/compose.yaml: PostgreSQL, a migration as the owner, two replicas as the runtime role.

Docker is not run here; the file is checked against the code it configures: the settings it sets
exist and validate, the migration is a real command line, the role it grants is the role the
replicas connect as and the one the database's first start creates.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from bot.cli import build_parser
from bot.ops import PATHS
from bot.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def user(url: str) -> str | None:
    """The user of a database URL whose ${...} variables compose fills in."""
    return urlsplit(re.sub(r"\$\{[^}]*\}", "secret", url)).username


def env_names() -> set[str]:
    return {str(info.validation_alias) for info in Settings.model_fields.values() if info.validation_alias}


def test_postgres_a_migration_and_two_replicas(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "migrate", "replica-a", "replica-b"}
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("replica-a", "replica-b"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    ports = [services[n]["ports"][0] for n in ("replica-a", "replica-b")]
    assert len(set(ports)) == 2 and all(p.endswith(":3000") for p in ports)


def test_replicas_share_one_ledger_as_the_runtime_role_the_migration_grants(compose: dict) -> None:
    services = compose["services"]
    urls = {services[n]["environment"]["STAGEHOLD_DATABASE_URL"] for n in ("replica-a", "replica-b")}
    assert len(urls) == 1
    runtime = user(urls.pop())
    owner = user(services["migrate"]["environment"]["STAGEHOLD_DATABASE_URL"])
    assert runtime == "stagehold" and owner == services["postgres"]["environment"]["POSTGRES_USER"] != runtime
    args = build_parser().parse_args(services["migrate"]["command"][1:])
    assert (args.command, args.db_command, args.runtime_role) == ("db", "init", runtime)
    script = (DEPLOY / "initdb" / "01-runtime-role.sh").read_text()
    assert f"CREATE ROLE {runtime} LOGIN" in script


def test_every_setting_the_replicas_get_exists_and_validates(compose: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    environment = compose["services"]["replica-a"]["environment"]
    unknown = set(environment) - env_names()
    assert not unknown, f"settings stagehold does not read: {unknown}"
    lease = {k: v for k, v in environment.items() if k.startswith("STAGEHOLD_LEASE_") or k == "STAGEHOLD_LOG_FORMAT"}
    for name, value in lease.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(DEPLOY)
    settings = Settings()
    assert settings.lease_ttl_s + settings.lease_poll_s <= 15 and settings.log_format == "json"
    probe = " ".join(compose["services"]["replica-a"]["healthcheck"]["test"])
    assert any(path in probe for path in PATHS)


def test_env_example_names_every_required_variable() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    listed = {line.split("=", 1)[0] for line in (DEPLOY / "env.example").read_text().splitlines() if "=" in line}
    assert required and required <= listed, required - listed

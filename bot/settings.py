"""Settings, read once from the environment (and an optional ``.env``) into a frozen object.

Names: ``STAGEHOLD_*`` for our own; Slack's usual names for Slack's secrets. Role credentials
are separate secrets so each duty (preflight, executor, verifier, rollback) sends only its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.settings_error import SettingsError as SettingsError
from execution.conditions import parse_duration
from execution.model import Credentials, Role, TargetAuth

DEFAULT_DATABASE_URL = "sqlite:///stagehold.db"


class BasicAuth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    username: str = Field(min_length=1, description="The basic-auth user name.", examples=["stagehold"])
    password: SecretStr = Field(description="The basic-auth password.")


class TargetAuthSetting(BaseModel):
    """One target's auth and transport, from settings only (never from the plan or package)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    bearer: SecretStr | None = Field(None, description="A bearer token for this target, sent by every role.")
    basic: BasicAuth | None = Field(None, description="HTTP basic auth for this target, sent by every role.")
    headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Secret headers sent with every request to this target.",
        examples=[{"X-Api-Key": "..."}],
    )
    ca_bundle: str | None = Field(None, description="A PEM file of the CAs to trust for this target.")
    client_cert: str | None = Field(None, description="A PEM client certificate (mutual TLS).")
    client_key: str | None = Field(None, description="The client certificate's PEM key, when not in client_cert.")

    @model_validator(mode="after")
    def _one_credential(self) -> TargetAuthSetting:
        if self.bearer is not None and self.basic is not None:
            raise ValueError("give bearer or basic, not both")
        if self.client_key is not None and self.client_cert is None:
            raise ValueError("client_key needs client_cert")
        for path in (self.ca_bundle, self.client_cert, self.client_key):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{path}: file not found")
        return self

    def to_auth(self) -> TargetAuth:
        return TargetAuth(
            bearer=self.bearer.get_secret_value() if self.bearer is not None else None,
            username=self.basic.username if self.basic is not None else None,
            password=self.basic.password.get_secret_value() if self.basic is not None else None,
            headers={k: v.get_secret_value() for k, v in self.headers.items()},
            ca_bundle=self.ca_bundle,
            client_cert=self.client_cert,
            client_key=self.client_key,
        )


_AUTH_FILE = TypeAdapter(dict[str, TargetAuthSetting])


def read_auth_file(path: str) -> dict[str, TargetAuthSetting]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"STAGEHOLD_TARGET_AUTH_FILE {path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError:
        raise ValueError(f"STAGEHOLD_TARGET_AUTH_FILE {path}: not valid JSON or YAML") from None
    try:
        return _AUTH_FILE.validate_python(data or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"STAGEHOLD_TARGET_AUTH_FILE {path}: {where}: {err['msg']}") from None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", frozen=True, extra="ignore")

    database_url: str = Field(DEFAULT_DATABASE_URL, validation_alias="STAGEHOLD_DATABASE_URL")
    packages_dir: str = Field("packages", validation_alias="STAGEHOLD_PACKAGES_DIR")
    http_port: int = Field(3000, ge=1, le=65535, validation_alias="STAGEHOLD_PORT")
    http_host: str = Field("0.0.0.0", validation_alias="STAGEHOLD_HOST")
    slack_api_url: str = Field("https://slack.com/api/", validation_alias="STAGEHOLD_SLACK_API_URL")
    slack_bot_token: SecretStr | None = Field(None, validation_alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = Field(None, validation_alias="SLACK_SIGNING_SECRET")
    slack_app_token: SecretStr | None = Field(None, validation_alias="SLACK_APP_TOKEN")
    credential_preflight: SecretStr | None = Field(None, validation_alias="STAGEHOLD_CREDENTIAL_PREFLIGHT")
    credential_executor: SecretStr | None = Field(None, validation_alias="STAGEHOLD_CREDENTIAL_EXECUTOR")
    credential_verifier: SecretStr | None = Field(None, validation_alias="STAGEHOLD_CREDENTIAL_VERIFIER")
    credential_rollback: SecretStr | None = Field(None, validation_alias="STAGEHOLD_CREDENTIAL_ROLLBACK")
    http_timeout_s: float = Field(10.0, gt=0, validation_alias="STAGEHOLD_HTTP_TIMEOUT")
    log_format: Literal["text", "json"] = Field("text", validation_alias="STAGEHOLD_LOG_FORMAT")
    # Replicas: how long an execution's lease lasts unrenewed (a dead replica's executions are
    # taken over within TTL + one poll), how often the holder renews it, how often others look.
    lease_ttl_s: float = Field(10.0, gt=0, allow_inf_nan=False, validation_alias="STAGEHOLD_LEASE_TTL")
    lease_renew_s: float = Field(3.0, gt=0, allow_inf_nan=False, validation_alias="STAGEHOLD_LEASE_RENEW")
    lease_poll_s: float = Field(2.0, gt=0, allow_inf_nan=False, validation_alias="STAGEHOLD_LEASE_POLL")
    # Signed approvals and the witness: the keyring and the bot's key live outside the packages directory.
    keyring: str | None = Field(None, validation_alias="STAGEHOLD_KEYRING")
    witness_key: str | None = Field(None, validation_alias="STAGEHOLD_WITNESS_KEY")
    witness_name: str = Field("stagehold", min_length=1, validation_alias="STAGEHOLD_WITNESS_NAME")
    witness_vkey: str | None = Field(None, validation_alias="STAGEHOLD_WITNESS_VKEY")
    witness_file: str | None = Field(None, validation_alias="STAGEHOLD_WITNESS_FILE")
    target_auth: dict[str, TargetAuthSetting] = Field(
        default_factory=dict,
        validation_alias="STAGEHOLD_TARGET_AUTH",
        description="Per-target auth and transport as JSON, keyed by the package's target names.",
        examples=[
            '{"metrics": {"basic": {"username": "stagehold", "password": "..."}, "headers": {"X-Scope-OrgID": "payments"}}}'
        ],
    )
    target_auth_file: str | None = Field(
        None,
        validation_alias="STAGEHOLD_TARGET_AUTH_FILE",
        description="A JSON or YAML file of the same shape as STAGEHOLD_TARGET_AUTH (e.g. a mounted secret); "
        "a target named in both takes the file's entry.",
    )
    _file_auth: dict[str, TargetAuthSetting] = PrivateAttr(default_factory=dict)
    # The checkpoint review: the digest is posted only when a channel is named.
    report_channel: str | None = Field(None, validation_alias="STAGEHOLD_REPORT_CHANNEL")
    report_schedule: str = Field("0 9 * * mon", validation_alias="STAGEHOLD_REPORT_SCHEDULE")
    report_period: str = Field("7d", validation_alias="STAGEHOLD_REPORT_PERIOD")
    report_fast_release_s: float = Field(
        60.0, ge=0, allow_inf_nan=False, validation_alias="STAGEHOLD_REPORT_FAST_RELEASE"
    )

    @field_validator("report_period")
    @classmethod
    def _period_is_a_duration(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError("must be a duration such as 7d or 24h")
        return value

    @property
    def report_period_s(self) -> float:
        return parse_duration(self.report_period)

    @model_validator(mode="after")
    def _lease_timing(self) -> Settings:
        # Two renewals fit in one TTL, so one slow renewal never hands the execution to another replica.
        if self.lease_renew_s * 2 > self.lease_ttl_s:
            raise ValueError("STAGEHOLD_LEASE_RENEW must be at most half of STAGEHOLD_LEASE_TTL")
        if self.lease_poll_s > self.lease_ttl_s:
            raise ValueError("STAGEHOLD_LEASE_POLL must not exceed STAGEHOLD_LEASE_TTL")
        return self

    @model_validator(mode="after")
    def _read_auth_file(self) -> Settings:
        if self.target_auth_file is not None:
            self._file_auth = read_auth_file(self.target_auth_file)
        return self

    def credentials(self) -> Credentials:
        def val(s: SecretStr | None) -> str | None:
            return s.get_secret_value() if s is not None else None

        merged = {**self.target_auth, **self._file_auth}
        return Credentials(
            {
                Role.PREFLIGHT: val(self.credential_preflight),
                Role.EXECUTOR: val(self.credential_executor),
                Role.VERIFIER: val(self.credential_verifier),
                Role.ROLLBACK: val(self.credential_rollback),
            },
            {name: auth.to_auth() for name, auth in merged.items()},
        )

    def require(self, *names: str) -> None:
        """Raise ``SettingsError`` naming the first missing environment variable among ``names``."""
        for env_name in names:
            for field_name, info in type(self).model_fields.items():
                if info.validation_alias == env_name and getattr(self, field_name) in (None, ""):
                    raise SettingsError(f"missing setting: set {env_name}")


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"]) if err["loc"] else "setting"
        # Never echo the input: it may be a secret.
        raise SettingsError(f"invalid setting {name}: {err['msg']}") from None
    except ValueError as exc:
        raise SettingsError(f"invalid setting: {exc}") from None

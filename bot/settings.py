"""Settings, read once from the environment (and an optional ``.env``) into a frozen object.

Names: ``STAGEHOLD_*`` for our own; Slack's usual names for Slack's secrets. Role credentials
are separate secrets so each duty (preflight, executor, verifier, rollback) sends only its own.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from execution.conditions import parse_duration
from execution.model import Credentials, Role

DEFAULT_DATABASE_URL = "sqlite:///stagehold.db"


class SettingsError(Exception):
    """A required setting is missing or malformed; the message is one line naming it."""


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
    # Signed approvals and the witness: the keyring and the bot's key live outside the packages directory.
    keyring: str | None = Field(None, validation_alias="STAGEHOLD_KEYRING")
    witness_key: str | None = Field(None, validation_alias="STAGEHOLD_WITNESS_KEY")
    witness_name: str = Field("stagehold", min_length=1, validation_alias="STAGEHOLD_WITNESS_NAME")
    witness_vkey: str | None = Field(None, validation_alias="STAGEHOLD_WITNESS_VKEY")
    witness_file: str | None = Field(None, validation_alias="STAGEHOLD_WITNESS_FILE")
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

    def credentials(self) -> Credentials:
        def val(s: SecretStr | None) -> str | None:
            return s.get_secret_value() if s is not None else None

        return Credentials(
            {
                Role.PREFLIGHT: val(self.credential_preflight),
                Role.EXECUTOR: val(self.credential_executor),
                Role.VERIFIER: val(self.credential_verifier),
                Role.ROLLBACK: val(self.credential_rollback),
            }
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
        name = err["loc"][0] if err["loc"] else "setting"
        raise SettingsError(f"invalid setting {name}: {err['msg']}") from None

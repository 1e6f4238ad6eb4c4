"""Settings every service shares. Each service subclasses with its own ``PARLEY_<SERVICE>_`` prefix."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARLEY_", extra="ignore")

    kafka_bootstrap: str = Field(
        default="127.0.0.1:19092",
        validation_alias=AliasChoices("PARLEY_KAFKA_BOOTSTRAP", "kafka_bootstrap"),
    )
    database_url: str = Field(
        default="postgresql://parley:parley@127.0.0.1:55432/parley",
        validation_alias=AliasChoices("PARLEY_DATABASE_URL", "database_url"),
    )
    # Keyed hash for phone numbers in logs and spans; set a real secret in production.
    redaction_key: str = Field(
        default="parley-dev-redaction-key",
        validation_alias=AliasChoices("PARLEY_REDACTION_KEY", "redaction_key"),
    )
    log_level: str = Field(default="INFO", validation_alias=AliasChoices("PARLEY_LOG_LEVEL", "log_level"))
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    db_pool_min: int = 1
    db_pool_max: int = 10

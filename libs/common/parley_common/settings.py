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
    # Keyed hash for phone numbers and user ids in logs and spans. Required: a service refuses to
    # start without it, unless ``PARLEY_DEMO`` says this is the local demo (then DEMO_REDACTION_KEY).
    redaction_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PARLEY_REDACTION_KEY", "redaction_key"),
    )
    demo: bool = Field(default=False, validation_alias=AliasChoices("PARLEY_DEMO", "demo"))
    log_level: str = Field(default="INFO", validation_alias=AliasChoices("PARLEY_LOG_LEVEL", "log_level"))
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    # The operations face (/metrics, /docs, /openapi.json, /healthz, /readyz) on a port of its own,
    # kept off the public face; unset, they are served on the public port (the local demo).
    ops_host: str = "127.0.0.1"
    ops_port: int | None = None
    db_pool_min: int = 1
    db_pool_max: int = 10


DEMO_REDACTION_KEY = "parley-demo-redaction-key"


class MissingRedactionKey(RuntimeError):
    pass


def redaction_key_of(settings: CommonSettings) -> str:
    """The redaction key to use, or :class:`MissingRedactionKey` outside the local demo.

    A default key would be public (it is in this repository), so its pseudonyms could be reversed
    by hashing every phone number of a country: only the demo may use one."""
    if settings.redaction_key:
        return settings.redaction_key
    if settings.demo:
        return DEMO_REDACTION_KEY
    raise MissingRedactionKey(
        "PARLEY_REDACTION_KEY is not set: set it to a secret of your own (it keys the pseudonyms of "
        "phone numbers and user ids in logs and spans), or set PARLEY_DEMO=true for the local demo"
    )

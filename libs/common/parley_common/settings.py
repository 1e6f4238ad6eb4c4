"""Settings every service shares. Each service subclasses with its own ``PARLEY_<SERVICE>_`` prefix."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(name: str) -> AliasChoices:
    return AliasChoices(f"PARLEY_{name.upper()}", name)


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARLEY_", extra="ignore")

    kafka_bootstrap: str = Field(
        default="127.0.0.1:19092",
        validation_alias=AliasChoices("PARLEY_KAFKA_BOOTSTRAP", "kafka_bootstrap"),
    )
    # Kafka's transport (libs/common/parley_common/broker.py): TLS and SASL for every client of every
    # service. Secrets may be given as values or as paths of mounted files (``*_file``).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", validation_alias=_env("kafka_security_protocol"))
    kafka_ssl_cafile: str | None = Field(default=None, validation_alias=_env("kafka_ssl_cafile"))
    kafka_ssl_certfile: str | None = Field(default=None, validation_alias=_env("kafka_ssl_certfile"))
    kafka_ssl_keyfile: str | None = Field(default=None, validation_alias=_env("kafka_ssl_keyfile"))
    kafka_ssl_check_hostname: bool = Field(default=True, validation_alias=_env("kafka_ssl_check_hostname"))
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, validation_alias=_env("kafka_sasl_mechanism"))
    kafka_sasl_username: str | None = Field(default=None, validation_alias=_env("kafka_sasl_username"))
    kafka_sasl_username_file: str | None = Field(default=None, validation_alias=_env("kafka_sasl_username_file"))
    kafka_sasl_password: str | None = Field(default=None, validation_alias=_env("kafka_sasl_password"),
                                            repr=False)
    kafka_sasl_password_file: str | None = Field(default=None, validation_alias=_env("kafka_sasl_password_file"))
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
    # The tenant registry is re-checked this often (API-key revocation reaches every replica within
    # about this long); with no successful check for tenants_max_staleness_s, API keys fail closed.
    tenants_check_interval_s: float = Field(default=0.5, gt=0, le=5)
    tenants_max_staleness_s: float = Field(default=5.0, gt=0, le=60)

    @model_validator(mode="after")
    def _kafka_transport(self) -> CommonSettings:
        protocol = self.kafka_security_protocol
        sasl = protocol.startswith("SASL_")
        if sasl:
            if self.kafka_sasl_mechanism is None:
                raise ValueError(f"PARLEY_KAFKA_SECURITY_PROTOCOL={protocol} needs PARLEY_KAFKA_SASL_MECHANISM "
                                 "(PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")
            for what in ("username", "password"):
                given = [x for x in (getattr(self, f"kafka_sasl_{what}"), getattr(self, f"kafka_sasl_{what}_file"))
                         if x]
                if len(given) != 1:
                    raise ValueError(f"SASL needs exactly one of PARLEY_KAFKA_SASL_{what.upper()} and "
                                     f"PARLEY_KAFKA_SASL_{what.upper()}_FILE")
        elif self.kafka_sasl_mechanism is not None:
            raise ValueError(f"PARLEY_KAFKA_SASL_MECHANISM is set but PARLEY_KAFKA_SECURITY_PROTOCOL={protocol} "
                             "does not use SASL (SASL_SSL or SASL_PLAINTEXT)")
        tls_files = (self.kafka_ssl_cafile, self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
        if protocol in ("PLAINTEXT", "SASL_PLAINTEXT") and any(tls_files):
            raise ValueError(f"PARLEY_KAFKA_SSL_* files are set but PARLEY_KAFKA_SECURITY_PROTOCOL={protocol} "
                             "does not use TLS (SSL or SASL_SSL)")
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise ValueError("a Kafka client certificate needs both PARLEY_KAFKA_SSL_CERTFILE and "
                             "PARLEY_KAFKA_SSL_KEYFILE")
        return self


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

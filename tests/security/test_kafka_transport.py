"""Kafka's transport from the environment: TLS (CA, client certificate) and SASL (PLAIN,
SCRAM-SHA-256/512; user and password as values or mounted files), the same for the FastStream
broker and every plain aiokafka client. A TLS handshake against a local server shows that the CA
file is what decides whom the clients trust."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faststream.security import SASLScram512
from parley_common.broker import KafkaTransportError, kafka_client_options, kafka_security, make_broker
from parley_common.settings import CommonSettings
from pydantic import ValidationError


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _ca(d: Path, name: str) -> tuple[Path, Path]:
    key, crt = d / f"{name}.key", d / f"{name}.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", str(key), "-out", str(crt))
    return crt, key


def _issued(d: Path, name: str, ca: tuple[Path, Path], san: str) -> tuple[Path, Path]:
    key, csr, crt, ext = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.crt", d / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr))
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
             "-days", "2", "-extfile", str(ext), "-out", str(crt))
    return crt, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca, other_ca = _ca(d, "kafka-ca"), _ca(d, "someone-elses-ca")
    server = _issued(d, "broker", ca, "IP:127.0.0.1,DNS:localhost")
    impostor = _issued(d, "impostor", other_ca, "IP:127.0.0.1,DNS:localhost")
    client = _issued(d, "parley-client", ca, "DNS:parley-client")
    (d / "password").write_text("s3cret-from-a-file\n")
    (d / "username").write_text("parley-router\n")
    (d / "empty").write_text("\n")
    return {"ca": ca[0], "server_crt": server[0], "server_key": server[1], "impostor_crt": impostor[0],
            "impostor_key": impostor[1], "client_crt": client[0], "client_key": client[1], "dir": d}


def _settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> CommonSettings:
    for k, v in env.items():
        monkeypatch.setenv(f"PARLEY_KAFKA_{k.upper()}", v)
    return CommonSettings()


def test_plaintext_is_the_default_and_adds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = CommonSettings()
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert kafka_security(settings) is None and kafka_client_options(settings) == {}


def test_sasl_ssl_with_scram_and_secrets_from_mounted_files(monkeypatch: pytest.MonkeyPatch,
                                                            pki: dict[str, Path]) -> None:
    settings = _settings(monkeypatch, security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                         sasl_username_file=str(pki["dir"] / "username"),
                         sasl_password_file=str(pki["dir"] / "password"), ssl_cafile=str(pki["ca"]))
    assert "s3cret" not in repr(settings)
    security = kafka_security(settings)
    assert isinstance(security, SASLScram512)
    options = kafka_client_options(settings)
    assert {k: options[k] for k in ("security_protocol", "sasl_mechanism", "sasl_plain_username",
                                    "sasl_plain_password")} == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "parley-router", "sasl_plain_password": "s3cret-from-a-file"}
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_sasl_plaintext_with_values_from_the_environment(monkeypatch: pytest.MonkeyPatch, mechanism: str) -> None:
    settings = _settings(monkeypatch, security_protocol="SASL_PLAINTEXT", sasl_mechanism=mechanism,
                         sasl_username="u", sasl_password="p")
    options = kafka_client_options(settings)
    assert (options["security_protocol"], options["sasl_mechanism"]) == ("SASL_PLAINTEXT", mechanism)
    assert "ssl_context" not in options


@pytest.mark.parametrize(("env", "complaint"), [
    ({"security_protocol": "SASL_SSL"}, "needs PARLEY_KAFKA_SASL_MECHANISM"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "u"},
     "PARLEY_KAFKA_SASL_PASSWORD"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "u",
      "sasl_password": "p", "sasl_password_file": "/run/p"}, "exactly one"),
    ({"security_protocol": "SSL", "sasl_mechanism": "PLAIN"}, "does not use SASL"),
    ({"ssl_cafile": "/etc/ca.crt"}, "does not use TLS"),
    ({"security_protocol": "SSL", "ssl_certfile": "/etc/c.crt"}, "both PARLEY_KAFKA_SSL_CERTFILE"),
    ({"security_protocol": "TLS"}, "SASL_SSL"),
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"}, "SCRAM-SHA-512"),
])
def test_an_incomplete_or_contradictory_transport_is_refused_at_start(monkeypatch: pytest.MonkeyPatch,
                                                                      env: dict[str, str], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        _settings(monkeypatch, **env)


def test_unreadable_or_empty_secret_files_are_named(monkeypatch: pytest.MonkeyPatch, pki: dict[str, Path]) -> None:
    settings = _settings(monkeypatch, security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                         sasl_username="u", sasl_password_file=str(pki["dir"] / "empty"))
    with pytest.raises(KafkaTransportError, match=r"SASL password file .* is empty"):
        kafka_security(settings)
    settings = _settings(monkeypatch, sasl_password_file="/nonexistent/password")
    with pytest.raises(KafkaTransportError, match="/nonexistent/password"):
        kafka_security(settings)
    for name in ("SASL_MECHANISM", "SASL_USERNAME", "SASL_PASSWORD_FILE"):
        monkeypatch.delenv(f"PARLEY_KAFKA_{name}")
    settings = _settings(monkeypatch, security_protocol="SSL", ssl_cafile="/nonexistent/ca.crt")
    with pytest.raises(KafkaTransportError, match="TLS files"):
        kafka_security(settings)


async def test_every_kind_of_client_accepts_the_options(monkeypatch: pytest.MonkeyPatch,
                                                        pki: dict[str, Path]) -> None:
    settings = _settings(monkeypatch, security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256",
                         sasl_username="u", sasl_password="p", ssl_cafile=str(pki["ca"]),
                         ssl_certfile=str(pki["client_crt"]), ssl_keyfile=str(pki["client_key"]))
    options = kafka_client_options(settings)
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", **options)
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", **options)
    try:
        assert producer.client._security_protocol == "SASL_SSL"
        assert consumer._client._sasl_mechanism == "SCRAM-SHA-256"
    finally:
        await producer.stop()
        await consumer.stop()
    broker = make_broker("127.0.0.1:1", service="test", security=kafka_security(settings))
    # What FastStream hands to the producer it connects and to every subscriber's consumer.
    assert broker._connection_kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    assert broker.config.broker_config.builder.keywords["security_protocol"] == "SASL_SSL"


async def _handshake(server_crt: Path, server_key: Path, client_context: ssl.SSLContext,
                     require_client_cert_from: Path | None = None) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(server_crt, server_key)
    if require_client_cert_from is not None:
        server_context.verify_mode = ssl.CERT_REQUIRED
        server_context.load_verify_locations(require_client_cert_from)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context,
                                                       server_hostname="localhost")
        assert await reader.read(2) == b"ok"
        writer.close()
    finally:
        server.close()


async def test_the_ca_file_decides_which_broker_is_trusted(monkeypatch: pytest.MonkeyPatch,
                                                           pki: dict[str, Path]) -> None:
    settings = _settings(monkeypatch, security_protocol="SSL", ssl_cafile=str(pki["ca"]),
                         ssl_certfile=str(pki["client_crt"]), ssl_keyfile=str(pki["client_key"]))
    context = kafka_client_options(settings)["ssl_context"]
    # The real broker (its certificate issued by the CA), asking for Parley's client certificate.
    await _handshake(pki["server_crt"], pki["server_key"], context, require_client_cert_from=pki["ca"])
    # Someone else's broker on the same address is refused.
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(pki["impostor_crt"], pki["impostor_key"], context)

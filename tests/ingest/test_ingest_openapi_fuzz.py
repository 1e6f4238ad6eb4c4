"""The OpenAPI document: checked in and equal to the app's; and a fuzz run of it (no 5xx)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from parley_ingest.cli import openapi_document
from schemathesis.checks import not_a_server_error

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi" / "ingest.json"


def test_checked_in_openapi_matches_the_app() -> None:
    assert OPENAPI.read_bytes() == openapi_document() + b"\n", (
        "docs/openapi/ingest.json is stale: run `uv run parley-ingest openapi`"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live_ingest(kafka_bootstrap: str, database_url: str, ingest_registry: dict[str, str]) -> Iterator[str]:
    """The app served by uvicorn in a thread (its own event loop), like production."""
    from parley_ingest.app import create_app
    from parley_ingest.settings import IngestSettings

    port = _free_port()
    app = create_app(
        IngestSettings(
            kafka_bootstrap=kafka_bootstrap,
            database_url=database_url,
            http_port=port,
            api_rate_limit="100000/second",
        )
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "ingest did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(15)


schema = schemathesis.openapi.from_path(OPENAPI)


@pytest.mark.infra
@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_requests_never_get_a_server_error(
    case, live_ingest: str, ingest_registry: dict[str, str]
) -> None:
    headers = {}
    if case.path.startswith("/v1/"):
        headers["Authorization"] = f"Bearer {ingest_registry['ingest-acme']}"
    response = case.call(base_url=live_ingest, headers=headers, timeout=30)
    case.validate_response(response, checks=[not_a_server_error])


@pytest.mark.infra
def test_ops_routes_answer(live_ingest: str) -> None:
    assert httpx.get(live_ingest + "/healthz").status_code == 200
    ready = httpx.get(live_ingest + "/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["checks"] == {"kafka": True, "database": True, "consumers": True}

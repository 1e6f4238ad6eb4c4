"""The Cloud API client: the access token per tenant app, configurable base URL and version
(Meta's Graph API or the simulator: configuration only).

Two HTTP clients, each with its own connection pool: sends (the hot path) go through pyreqwest
(Rust reqwest/hyper), chosen for its CPU cost per request (docs/adr/0033-sender-throughput.md);
management calls (templates: list, create) go through aiohttp, retried with tenacity.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
import orjson
from parley_common.tenancy.models import MetaApp
from pyreqwest.client import Client, ClientBuilder
from pyreqwest.exceptions import DetailedPyreqwestError, PyreqwestError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

DEFAULT_BASE = "https://graph.facebook.com"


@dataclass(frozen=True)
class SendResponse:
    """What one ``POST /{phone_number_id}/messages`` returned."""

    wamid: str | None = None
    message_status: str | None = None  # accepted | held_for_quality_assessment | paused
    http_status: int | None = None
    error_code: int | None = None
    error_message: str | None = None
    error_details: str | None = None
    fbtrace_id: str | None = None
    # The request may have reached Meta but we do not know the answer (read timeout, connection
    # dropped after sending): never retried blindly.
    in_doubt: bool = False

    @property
    def accepted(self) -> bool:
        return self.wamid is not None


class GraphApiError(RuntimeError):
    def __init__(self, status: int, code: int | None, message: str) -> None:
        super().__init__(f"Graph API HTTP {status} code {code}: {message}")
        self.status = status
        self.code = code


# The mark hyper puts in the cause chain of a failure to connect (nothing was sent).
_CONNECT_CAUSE = "client error (Connect)"


def nothing_sent(exc: BaseException) -> bool:
    """Did the request certainly not leave? pyreqwest's classes are too coarse to tell: it raises
    ConnectError for a connection dropped after the request went out and ConnectTimeoutError for
    the total timeout too (tests/sender/test_cloudapi_client.py). Only a failure whose cause chain
    says hyper could not connect counts as "not sent"; anything else is in doubt (never re-sent
    blindly), so a wording change in a later pyreqwest errs on the safe side."""
    if not isinstance(exc, DetailedPyreqwestError):
        return False
    causes = (exc.details or {}).get("causes") or []
    return any(c.get("message") == _CONNECT_CAUSE for c in causes)


def _text(value: Any, limit: int = 500) -> str | None:
    """A string of Meta's answer as the sender stores it: text, bounded, without NUL (which
    PostgreSQL refuses)."""
    if value is None:
        return None
    return str(value).replace("\x00", "")[:limit]


def error_code_of(value: Any) -> int | None:
    """Meta's ``error.code``: an integer, sometimes a numeric string; anything else is no code
    (the answer is then judged by its HTTP status)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -(2**31) <= value < 2**31 else None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value.strip()) <= 10:
        return int(value)
    return None


def parse_send_answer(status: int, content: bytes) -> SendResponse:
    """Meta's answer to a send: ``messages[0].id`` on success, ``error{code,...}`` otherwise. A
    2xx answer whose message id cannot be read may still mean "accepted": in doubt."""
    try:
        data = orjson.loads(content) if content else {}
    except orjson.JSONDecodeError:
        data = {}
    messages = data.get("messages") if isinstance(data, dict) else None
    if 200 <= status < 300:
        first = messages[0] if isinstance(messages, list) and messages else None
        wamid = first.get("id") if isinstance(first, dict) else None
        if isinstance(wamid, str) and wamid and "\x00" not in wamid and len(wamid) <= 512:
            assert isinstance(first, dict)
            return SendResponse(
                wamid=wamid, message_status=_text(first.get("message_status", "accepted"), 64), http_status=status
            )
        return SendResponse(http_status=status, error_message=f"HTTP {status} without a message id", in_doubt=True)
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        error_data = error.get("error_data")
        details = error_data.get("details") if isinstance(error_data, dict) else None
        code = error.get("code")
        parsed = error_code_of(code)
        message = _text(error.get("message", "")) or ""
        if parsed is None and code is not None:
            message = f"{message} (error code not a number: {_text(code, 40)})"[:500]
        return SendResponse(
            http_status=status,
            error_code=parsed,
            error_message=message,
            error_details=_text(details),
            fbtrace_id=_text(error.get("fbtrace_id"), 100),
        )
    return SendResponse(http_status=status, error_message=f"HTTP {status}")


def describe_failure(exc: BaseException, sent: bool) -> str:
    """What went wrong with a call, in words that match what happened (pyreqwest names a read
    timeout ConnectTimeoutError: the class alone would mislead)."""
    name = type(exc).__name__
    if not sent:
        return f"could not connect ({name})"
    if isinstance(exc, TimeoutError) or "Timeout" in name:
        return f"no answer in time after the request was sent ({name})"
    return f"connection lost after the request was sent ({name})"


class CloudApiClient:
    def __init__(
        self,
        *,
        base_override: str | None = None,
        version_override: str | None = None,
        timeout_s: float = 10.0,
        connect_timeout_s: float = 3.0,
        max_connections: int = 256,
    ) -> None:
        self._base_override = base_override.rstrip("/") if base_override else None
        self._version_override = version_override
        # connect covers waiting for a pooled connection too (nothing sent: retried); total bounds
        # the answer (a timeout after the request went out is in doubt). No sock_read timer: it is
        # re-armed on every chunk received, measurable CPU per send for no stronger bound.
        self._timeout = aiohttp.ClientTimeout(total=timeout_s + connect_timeout_s, connect=connect_timeout_s)
        self._max_connections = max_connections
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._sender: Client | None = None
        # (base, version, token, number) -> the send URL and its headers, built once.
        self._targets: dict[tuple[str | None, str | None, str | None, str, str], tuple[str, dict[str, str]]] = {}

    @property
    def session(self) -> aiohttp.ClientSession:
        """Created on first use, inside the running event loop."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0),
                timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar(),  # the Graph API sets no cookies we need
                json_serialize=lambda o: orjson.dumps(o).decode(),
            )
        return self._session

    @property
    def sender(self) -> Client:
        """The hot-path client, created on first use inside the running event loop. ``timeout``
        bounds connect + request + answer; connect alone is bounded by ``connect_timeout``."""
        if self._sender is None:
            connect = timedelta(seconds=self._connect_timeout_s)
            self._sender = (
                ClientBuilder()
                .max_connections(self._max_connections)
                .timeout(timedelta(seconds=self._timeout_s + self._connect_timeout_s))
                .connect_timeout(connect)
                .build()
            )
        return self._sender

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        if self._sender is not None:
            sender, self._sender = self._sender, None
            await sender.close()

    def _url(self, app: MetaApp | None, path: str) -> str:
        base = self._base_override or (app.graph_api_base if app and app.graph_api_base else DEFAULT_BASE)
        version = self._version_override or (app.graph_api_version if app else "v24.0")
        return f"{base.rstrip('/')}/{version}/{path.lstrip('/')}"

    @staticmethod
    def _headers(app: MetaApp | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if app is not None and app.access_token:
            headers["Authorization"] = f"Bearer {app.access_token}"
        return headers

    def _send_target(
        self, app: MetaApp | None, phone_number_id: str, endpoint: str = "messages"
    ) -> tuple[str, dict[str, str]]:
        key = (
            app.graph_api_base if app else None,
            app.graph_api_version if app else None,
            app.access_token if app else None,
            phone_number_id,
            endpoint,
        )
        target = self._targets.get(key)
        if target is None:
            if len(self._targets) > 10_000:
                self._targets.clear()
            target = self._targets[key] = (
                self._url(app, f"{phone_number_id}/{endpoint}"),
                self._headers(app),
            )
        return target

    async def send_message(
        self, app: MetaApp | None, phone_number_id: str, body: Mapping[str, Any], *, endpoint: str = "messages"
    ) -> SendResponse:
        """``POST /{phone_number_id}/messages``, or ``/marketing_messages`` (the Marketing Messages
        API: the same body and answer, marketing templates only)."""
        url, headers = self._send_target(app, phone_number_id, endpoint)
        try:
            request = self.sender.post(url).headers(headers).body_bytes(orjson.dumps(body)).build()
            resp = await request.send()
            content = bytes(await resp.bytes())
            status = resp.status
        except (TimeoutError, PyreqwestError) as exc:
            sent = not nothing_sent(exc)
            # Timeouts, dropped connections after the request left: it may have been processed.
            return SendResponse(error_message=describe_failure(exc, sent), in_doubt=sent)
        return parse_send_answer(status, content)

    async def _graph(
        self,
        method: str,
        app: MetaApp | None,
        path: str,
        *,
        url: str | None = None,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> dict[str, Any]:
        """A management call, retried on transport errors and 5xx with tenacity."""
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(4),
            wait=wait_exponential_jitter(multiplier=0.2, max=5, jitter=0.2),
            retry=retry_if_exception_type((aiohttp.ClientConnectionError, TimeoutError, _Retryable)),
            reraise=True,
        ):
            with attempt:
                async with self.session.request(
                    method,
                    url or self._url(app, path),
                    params=dict(params) if params else None,
                    headers=self._headers(app),
                    data=orjson.dumps(body) if body is not None else None,
                ) as resp:
                    status, content = resp.status, await resp.read()
                if status >= 500 or status == 429:
                    raise _Retryable(f"HTTP {status}")
                try:
                    data = orjson.loads(content) if content else {}
                except orjson.JSONDecodeError:
                    data = {}
                if status >= 400:
                    err = data.get("error", {}) if isinstance(data, dict) else {}
                    raise GraphApiError(status, err.get("code"), str(err.get("message", "")))
                return data if isinstance(data, dict) else {"data": data}
        raise AssertionError("unreachable")

    async def list_templates(
        self, app: MetaApp | None, waba_id: str, *, page_size: int = 100
    ) -> list[dict[str, Any]]:
        """Every template of a WABA, following Meta's cursor paging."""
        out: list[dict[str, Any]] = []
        params: dict[str, Any] | None = {"limit": page_size}
        url: str | None = None
        for _ in range(1000):
            page = await self._graph("GET", app, f"{waba_id}/message_templates", url=url, params=params)
            out.extend(page.get("data") or [])
            paging = page.get("paging") or {}
            after = (paging.get("cursors") or {}).get("after")
            if not paging.get("next"):
                break
            if after:  # cursors keep the configured base (the simulator), an absolute next may not
                url, params = None, {"limit": page_size, "after": after}
            else:
                url, params = str(paging["next"]), None
        return out

    async def create_template(
        self, app: MetaApp | None, waba_id: str, template: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self._graph("POST", app, f"{waba_id}/message_templates", body=dict(template))


class _Retryable(Exception):
    pass

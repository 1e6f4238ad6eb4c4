"""``parley-simulator``: run the Cloud API simulator, or drive inbound traffic at a webhook URL."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import httpx
import typer
import uvicorn

from .config import Behaviour, SimulatorConfig
from .traffic import BusinessNumber, TrafficGenerator
from .webhooks import encode, sign

cli = typer.Typer(add_completion=False, help="A test double of Meta's WhatsApp Cloud API.")


@cli.command()
def run(
    config: Annotated[
        Path | None, typer.Option(help="YAML: apps, wabas, phone_numbers, templates, behaviour")
    ] = None,
    host: str = "127.0.0.1",
    port: int = 8090,
    webhook_url: Annotated[
        str | None,
        typer.Option(help="Where to post webhooks, e.g. http://127.0.0.1:8081/webhooks/meta/{app_id}"),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of every random choice")] = None,
    latency_ms: Annotated[float | None, typer.Option(help="Added to every send answer")] = None,
    error_5xx_rate: Annotated[float | None, typer.Option(help="Share of sends answered 500/503")] = None,
    timeout_rate: Annotated[float | None, typer.Option(help="Share of sends that hang, not accepted")] = None,
    failure_131049_rate: Annotated[
        float | None, typer.Option(help="Share of marketing templates failed by webhook with 131049")
    ] = None,
    sync_errors: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated codes answered synchronously instead of by webhook, e.g. 131047,131026"
        ),
    ] = None,
    clock_start: Annotated[str | None, typer.Option(help="Simulated start time, ISO 8601")] = None,
    log_level: str = "warning",
) -> None:
    """Serve the Graph API routes and the /_sim control API."""
    from .app import create_app

    cfg = SimulatorConfig.from_yaml(config) if config else SimulatorConfig()
    updates: dict[str, object] = {}
    if webhook_url is not None:
        updates["webhook_url"] = webhook_url
    if seed is not None:
        updates["seed"] = seed
    behaviour: dict[str, object] = {}
    for key, value in (
        ("latency_ms", latency_ms),
        ("error_5xx_rate", error_5xx_rate),
        ("timeout_rate", timeout_rate),
        ("failure_131049_rate", failure_131049_rate),
    ):
        if value is not None:
            behaviour[key] = value
    if sync_errors:
        behaviour["sync_error_codes"] = [int(c) for c in sync_errors.split(",") if c.strip()]
    if clock_start:
        behaviour["clock_start"] = datetime.fromisoformat(clock_start.replace("Z", "+00:00"))
    if behaviour:
        updates["behaviour"] = Behaviour.model_validate({**cfg.behaviour.model_dump(), **behaviour})
    cfg = cfg.model_copy(update=updates)
    uvicorn.run(create_app(cfg), host=host, port=port, log_level=log_level, access_log=False)


def _parse_number(spec: str, app_id: str) -> BusinessNumber:
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise typer.BadParameter(f"{spec!r}: expected PHONE_NUMBER_ID:WABA_ID[:DISPLAY_NUMBER]")
    display = parts[2] if len(parts) == 3 else parts[0][-12:]
    return BusinessNumber(
        phone_number_id=parts[0], waba_id=parts[1], display_phone_number=display, app_id=app_id
    )


@cli.command()
def drive(
    webhook_url: Annotated[
        str, typer.Option(help="The receiver, e.g. http://127.0.0.1:8081/webhooks/meta/APP")
    ],
    phone_number: Annotated[list[str], typer.Option(help="PHONE_NUMBER_ID:WABA_ID[:DISPLAY]; repeatable")],
    app_secret_env: Annotated[str, typer.Option(help="Environment variable holding the app secret")],
    app_id: Annotated[str, typer.Option(help="Substituted for {app_id} in the URL")] = "",
    count: Annotated[int, typer.Option(help="Inbound messages to send")] = 100,
    rate: Annotated[float, typer.Option(help="Messages per second (0 = as fast as possible)")] = 20.0,
    seed: int = 1,
    simulator_url: Annotated[
        str | None,
        typer.Option(
            help="Also record each webhook at this simulator, so it knows the customer-service windows"
        ),
    ] = None,
) -> None:
    """Post realistic signed inbound webhooks (customers in six languages) to a receiver."""
    secret = os.environ.get(app_secret_env)
    if not secret:
        raise typer.BadParameter(f"environment variable {app_secret_env} is not set")
    numbers = [_parse_number(spec, app_id) for spec in phone_number]
    result = asyncio.run(
        _drive(
            webhook_url.format(app_id=app_id),
            secret,
            numbers,
            count=count,
            rate=rate,
            seed=seed,
            simulator_url=simulator_url,
        )
    )
    typer.echo(
        f"posted {result['messages']} messages in {result['webhooks']} webhooks "
        f"({result['failed']} failed posts) in {result['seconds']:.1f}s"
    )
    if result["failed"]:
        raise typer.Exit(1)


async def _drive(
    url: str,
    secret: str,
    numbers: list[BusinessNumber],
    *,
    count: int,
    rate: float,
    seed: int,
    simulator_url: str | None,
) -> dict[str, float]:
    gen = TrafficGenerator(numbers, seed=seed)
    sent = hooks = failed = 0
    start = time.monotonic()
    async with httpx.AsyncClient(timeout=10) as client:
        for hook in gen.webhooks(count):
            body = encode(hook.payload)
            if simulator_url:
                await client.post(f"{simulator_url.rstrip('/')}/_sim/inbound/record", content=body)
            ok = False
            for attempt in range(5):  # Meta retries non-200 answers; so does the driver (bounded)
                try:
                    resp = await client.post(
                        url,
                        content=body,
                        headers={
                            "Content-Type": "application/json",
                            "X-Hub-Signature-256": sign(body, secret),
                        },
                    )
                    ok = resp.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    break
                await asyncio.sleep(0.2 * 2**attempt)
            failed += 0 if ok else 1
            hooks += 1
            sent += len(hook.records)
            if rate > 0:
                ahead = sent / rate - (time.monotonic() - start)
                if ahead > 0:
                    await asyncio.sleep(ahead)
    return {"messages": sent, "webhooks": hooks, "failed": failed, "seconds": time.monotonic() - start}


def main() -> None:
    cli()


if __name__ == "__main__":
    main()

"""``parley-ingest``: run the service, replay the raw archive, write the OpenAPI document."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import typer
from parley_common.runtime import serve

from parley_ingest.settings import IngestSettings

app = typer.Typer(help="Parley ingest: Meta webhooks in, business send API.", no_args_is_help=True)


def _when(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@app.command()
def run() -> None:
    """Serve HTTP (default 127.0.0.1:8081; PARLEY_INGEST_HTTP_HOST / PARLEY_INGEST_HTTP_PORT)."""
    from parley_ingest.app import create_app

    settings = IngestSettings()
    serve(create_app(settings), settings)


@app.command("replay-raw")
def replay_raw(
    start: str = typer.Option(..., "--from", help="ISO 8601 time (UTC if no offset), inclusive"),
    end: str = typer.Option(..., "--to", help="ISO 8601 time, exclusive"),
    dry_run: bool = typer.Option(False, "--dry-run", help="count only, publish nothing"),
) -> None:
    """Re-normalise wa.webhooks.raw between two times onto the event topics (same event ids)."""
    from aiokafka.errors import KafkaConnectionError

    from parley_ingest.replay import run_replay

    since, until = _when(start), _when(end)
    if until <= since:
        raise typer.BadParameter("--to must be after --from")
    try:
        report = run_replay(IngestSettings(), since, until, dry_run)
    except (KafkaConnectionError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    verb = "would publish" if dry_run else "published"
    typer.echo(
        f"replayed {report.webhooks} webhook(s): {verb} {report.events} event(s), "
        f"{report.problems} shape problem(s); skipped {report.skipped} record(s)"
    )


@app.command()
def openapi(
    output: Path = typer.Option(Path("docs/openapi/ingest.json"), "--output", "-o"),  # noqa: B008
) -> None:
    """Write the OpenAPI document of ingest's HTTP surface."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(openapi_document() + b"\n")
    typer.echo(f"wrote {output}")


def openapi_document() -> bytes:
    from parley_ingest.app import create_app

    return orjson.dumps(
        create_app(IngestSettings()).openapi(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
    )


def main() -> None:
    app(prog_name="parley-ingest")


if __name__ == "__main__":
    main()

"""``parley-router``: run the service, and train / classify / eval intent models.

    parley-router run
    parley-router train [--examples DIR] [--out FILE]        # from example files ([intent] sections)
    parley-router classify [--model FILE] < in.jsonl > out.jsonl   # {"text": ...} per line
    parley-router eval banking77|banking77-10shot|clinc150|multilingual [--datasets DIR]
    parley-router eval crosslingual [--train-language en]    # intents in one language, tested in the others
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from parley_router.settings import RouterSettings

app = typer.Typer(help="Parley's router: understands inbound messages and routes them.", no_args_is_help=True)


@app.command()
def run() -> None:
    """Start the router service (HTTP on PARLEY_ROUTER_HTTP_PORT, default 8082)."""
    from parley_common.runtime import serve

    from parley_router.app import create_app

    settings = RouterSettings()
    serve(create_app(settings), settings)


@app.command()
def train(
    examples: Annotated[Path | None, typer.Option(help="folder of <lang>.txt example files")] = None,
    out: Annotated[Path | None, typer.Option(help="write the model here (default: the model cache)")] = None,
) -> None:
    """Train an intent model from example files and save it."""
    from parley_router.corpora import load_examples
    from parley_router.models import default_model, train_from_examples

    if out is None:
        model = default_model(RouterSettings().model_cache_dir, examples)
    else:
        model = train_from_examples(load_examples(examples))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(model.dumps())
    typer.echo(json.dumps({"intents": model.intents, "examples": model.meta.get("examples"),
                           "fingerprint": model.meta.get("fingerprint"),
                           "saved": str(out) if out else "cache"}))


@app.command()
def classify(
    model_path: Annotated[Path | None, typer.Option("--model", help="a model written by train --out")] = None,
    batch: Annotated[int, typer.Option(help="lines classified together")] = 256,
) -> None:
    """Read JSON Lines with "text" on stdin; write intent, confidence and language per line, in order."""
    from parley_router.domain.classifier import IntentClassifier
    from parley_router.domain.language import LanguageIdentifier
    from parley_router.models import default_model

    settings = RouterSettings()
    try:  # a model file holds arrays and JSON only (never unpickled), checked as it is read
        model = (IntentClassifier.loads(model_path.read_bytes()) if model_path
                 else default_model(settings.model_cache_dir))
    except (OSError, ValueError) as exc:
        typer.echo(f"error: cannot read the model {model_path}: {exc}", err=True)
        raise typer.Exit(2) from None
    languages = LanguageIdentifier()
    threshold = settings.confidence_threshold

    failed = 0

    def flush(lines: list[str]) -> None:
        nonlocal failed
        texts: list[str] = []
        errors: dict[int, str] = {}
        for i, line in enumerate(lines):
            try:
                obj = json.loads(line)
                text = obj.get("text") if isinstance(obj, dict) else None
                if not isinstance(text, str):
                    raise ValueError('each line needs a string "text"')
            except ValueError as exc:
                errors[i], text = f"line {seen + i + 1}: {exc}", ""
            texts.append(text)
        failed += len(errors)
        langs = languages.detect_many(texts)
        preds = model.predict(texts, langs)
        for i, (p, lang) in enumerate(zip(preds, langs, strict=True)):
            if i in errors:
                row: dict[str, object] = {"error": errors[i]}
            else:
                intent = p.intent if p.confidence >= threshold else "out_of_scope"
                row = {"intent": intent, "confidence": round(p.confidence, 4), "language": lang}
                if intent != p.intent:
                    row["best_guess"] = p.intent
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    pending: list[str] = []
    seen = 0  # input lines classified so far (for error messages)
    for line in sys.stdin:
        if not line.strip():
            continue
        pending.append(line)
        if len(pending) >= batch:
            flush(pending)
            seen += len(pending)
            pending = []
    if pending:
        flush(pending)
    if failed:
        # One output line per input line keeps the output aligned; the exit code says it was not clean.
        typer.echo(f"error: {failed} input line(s) could not be classified", err=True)
        raise typer.Exit(1)


@app.command("eval")
def eval_cmd(
    dataset: Annotated[str, typer.Argument(
        help="banking77 | banking77-10shot | clinc150 | multilingual | crosslingual")],
    datasets: Annotated[Path | None, typer.Option(
        help="folder with banking77/ and clinc150/ (default PARLEY_ROUTER_DATASETS_DIR)")] = None,
    examples: Annotated[Path | None, typer.Option(help="example files for 'multilingual' and 'crosslingual'")] = None,
    train_language: Annotated[str, typer.Option(help="'crosslingual': the example file trained on")] = "en",
) -> None:
    """Train on a dataset's training split and print accuracy on its test split (JSON)."""
    from parley_router import evaluation

    root = datasets or RouterSettings().datasets_dir
    if dataset not in ("multilingual", "crosslingual") and not root.exists():
        typer.echo(f"error: datasets folder {root} not found (set --datasets or PARLEY_ROUTER_DATASETS_DIR)",
                   err=True)
        raise typer.Exit(2)
    if dataset == "banking77":
        score = evaluation.eval_banking77(root)
    elif dataset == "banking77-10shot":
        score = evaluation.eval_banking77(root, shots=10)
    elif dataset == "clinc150":
        score = evaluation.eval_clinc150(root)
    elif dataset == "multilingual":
        score = evaluation.eval_multilingual(examples)
    elif dataset == "crosslingual":
        score = evaluation.eval_crosslingual(train_language, examples)
    else:
        typer.echo(f"error: unknown dataset {dataset!r}", err=True)
        raise typer.Exit(2)
    typer.echo(json.dumps({"dataset": score.name, **score.figures}))


def main() -> None:
    app(prog_name="parley-router")


if __name__ == "__main__":
    main()

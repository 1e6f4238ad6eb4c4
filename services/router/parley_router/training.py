"""Tenant model training in a child process, so that superseded training is really stopped.

A tenant that changes its intents while the previous model is still training supersedes that
training: the child process is killed (a thread could not be stopped, and would keep a core busy
for nothing). The child reads the tenant's intents as JSON on stdin and writes the model's
``.npz`` bytes on stdout (the same safe format as the database; nothing is pickled).

    python -m parley_router.training < intents.json > model.npz
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable


class TrainingFailed(RuntimeError):
    pass


async def train_in_child(intents: dict[str, list[str]], *,
                         on_start: Callable[[int], None] | None = None) -> bytes:
    """The model bytes for the shipped examples plus ``intents``; cancelling kills the child."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "parley_router.training", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    if on_start is not None:
        on_start(proc.pid)
    try:
        out, err = await proc.communicate(json.dumps(intents).encode())
    except BaseException:  # cancelled (superseded, or the router stops): stop the work
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        # Only the exception's last line: the examples themselves never reach the logs.
        last = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise TrainingFailed(f"training exited with {proc.returncode}: {last[0].split(':')[0]}")
    return out


def _read_intents(raw: bytes) -> dict[str, list[str]]:
    data = json.loads(raw)
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(t, str) for t in v)
            for k, v in data.items()):
        raise ValueError("intents must be a JSON object of lists of strings")
    return data


def main() -> None:
    from parley_router.corpora import load_examples
    from parley_router.models import train_from_examples
    from parley_router.settings import RouterSettings

    intents = _read_intents(sys.stdin.buffer.read())
    model = train_from_examples(load_examples(), intents, cache_dir=RouterSettings().model_cache_dir)
    sys.stdout.buffer.write(model.dumps())
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()

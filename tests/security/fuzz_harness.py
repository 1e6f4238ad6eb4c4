"""Serving the apps for the fuzz runs: each under uvicorn in a thread of its own (its own event
loop, like production), so schemathesis's blocking calls reach a live server.

A Parley service is started with its runtime (database pool, migrations, tenant directory, its
start hooks) and, unless told otherwise, without its broker: the HTTP APIs under test never
consume, and four consumer groups joining one after another would cost tens of seconds of
rebalancing. Ingest, which only produces, is started with it."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import uvicorn
from parley_common.runtime import start_runtime, stop_runtime


class ThreadServed:
    def __init__(self, app: Any, *, start_broker: bool = False) -> None:
        self.app = app
        self.start_broker = start_broker
        self.runtime = getattr(app.state, "runtime", None)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        lifespan = "off" if self.runtime is not None else "on"
        self.server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan=lifespan, access_log=False))
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        try:
            if self.runtime is not None:
                await start_runtime(self.runtime, start_broker=self.start_broker)
            try:
                await self.server.serve(sockets=[self.sock])
            finally:
                if self.runtime is not None:
                    await stop_runtime(self.runtime)
        except BaseException as exc:
            self.error = exc
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadServed:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"{self.app.title} stopped during start-up") from self.error
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.app.title} did not start within 120 s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)

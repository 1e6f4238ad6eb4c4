"""An ASGI app on a loopback port, served by uvicorn inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import uvicorn


class Served:
    """``app`` on a free loopback port, bound when constructed (so its URL can be handed out before
    it runs: ``Served(None)`` reserves a port, the app is set before ``start``). ``start``/``stop``,
    or ``async with``."""

    START_TIMEOUT_S = 60.0

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on", access_log=False))
        self.task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.START_TIMEOUT_S
        while not self.server.started:
            if self.task.done():
                self.task.result()  # raises the start-up error
                raise RuntimeError("server stopped during start-up")
            if loop.time() > deadline:
                raise TimeoutError(f"server did not start within {self.START_TIMEOUT_S:g} s")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self.task, 30)
        self.sock.close()

    async def __aenter__(self) -> Served:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

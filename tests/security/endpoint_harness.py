"""Tenant endpoints on loopback for the outbound-webhook attacks: real HTTP servers whose answer
each test chooses (accept, hang until released, a sequence of statuses)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class TenantEndpoint:
    """Answers 200 unless told otherwise: ``statuses`` are answered first, one per request;
    while ``hold`` is set, requests wait for ``release`` before answering."""

    statuses: list[int] = field(default_factory=list)
    hold: bool = False
    received: list[Received] = field(default_factory=list)
    answered: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")[1:]
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.received.append(Received(headers, body))
            self.arrived.set()
            if self.hold:
                await self.release.wait()
            status = self.statuses.pop(0) if self.statuses else 200
            writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode())
            await writer.drain()
            self.answered += 1
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.close()


def signature_parts(header: str) -> Sequence[tuple[str, str]]:
    return [tuple(p.split("=", 1)) for p in header.split(",")]  # type: ignore[misc]

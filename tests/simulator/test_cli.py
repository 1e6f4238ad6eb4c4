"""``parley-simulator run`` serves the demo configuration as a separate process."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_run_serves_the_demo_config_with_flags() -> None:
    port = free_port()
    env = {
        **os.environ,
        "PARLEY_DEMO_APP_SECRET": "a",
        "PARLEY_DEMO_APP2_SECRET": "b",
        "PARLEY_DEMO_ACCESS_TOKEN": "tok",
        "PARLEY_DEMO_APP2_ACCESS_TOKEN": "tok2",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "parley_simulator.cli",
        "run",
        "--port",
        str(port),
        "--config",
        str(REPO / "deploy/demo/simulator.yaml"),
        "--sync-errors",
        "131047",
        "--clock-start",
        "2025-05-01T00:00:00Z",
        env=env,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            # Starting takes a few seconds, and several times that on a loaded machine (10-18 s seen
            # at a load average of 15): wait up to a minute for it to answer.
            deadline = asyncio.get_running_loop().time() + 60
            while asyncio.get_running_loop().time() < deadline:
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
            behaviour = (await client.get("/_sim/behaviour")).json()
            assert behaviour["sync_error_codes"] == [131047]
            assert (await client.get("/_sim/clock")).json()["iso"].startswith("2025-05-01")
            r = await client.post(
                "/v24.0/100000000000001/messages",
                headers={"Authorization": "Bearer tok"},
                json={
                    "messaging_product": "whatsapp",
                    "to": "8801711111111",
                    "type": "text",
                    "text": {"body": "hi"},
                },
            )
            assert r.status_code == 400 and r.json()["error"]["code"] == 131047
            templates = (
                await client.get(
                    "/v24.0/200000000000001/message_templates", headers={"Authorization": "Bearer tok"}
                )
            ).json()["data"]
            assert templates
    finally:
        proc.terminate()
        await proc.wait()

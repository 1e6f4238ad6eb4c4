"""A checkout inside a private home directory (mode 700, as root's is on a fresh cloud machine)
gets a working local PostgreSQL: ``deploy/local/postgres.sh`` puts the cluster where its owner can
reach it (as root: /var/lib/parley/<hash of the checkout>/pg, owned by the ``postgres`` user;
otherwise under the checkout, owned by the caller), and ``up``, ``status``, ``down`` and ``reset``
find it there.

The scripts are copied into a temporary mode-700 "home" and run on a port of their own, so the
PostgreSQL the rest of the suite uses is never stopped or touched."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

pytestmark = pytest.mark.infra

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def private_checkout(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    home.chmod(0o700)  # whatever the umask
    local = home / "parley" / "deploy" / "local"
    local.mkdir(parents=True)
    for name in ("lib.sh", "postgres.sh"):
        shutil.copy2(REPO / "deploy/local" / name, local / name)
    env = {**os.environ, "PARLEY_PG_PORT": str(free_port())}
    script = local / "postgres.sh"
    yield script, env
    subprocess.run(["bash", str(script), "reset"], env=env, capture_output=True, text=True, timeout=120)


def run(script: Path, command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(script), command], env=env, capture_output=True, text=True, timeout=300)


async def test_up_status_down_reset_from_a_mode_700_home(private_checkout: tuple[Path, dict[str, str]]) -> None:
    script, env = private_checkout
    port = env["PARLEY_PG_PORT"]
    up = run(script, "up", env)
    assert up.returncode == 0, up.stderr
    status = run(script, "status", env)
    assert status.returncode == 0, status.stdout + status.stderr
    data_dir = status.stdout.split("data ", 1)[1].rstrip(")\n")
    if os.geteuid() == 0:
        # the postgres user cannot enter the home: the cluster lives where it can
        assert data_dir.startswith("/var/lib/parley/"), status.stdout
    else:
        assert data_dir.startswith(str(script.parents[2])), status.stdout
    conn = await asyncpg.connect(f"postgresql://parley:parley@127.0.0.1:{port}/parley")
    try:
        assert await conn.fetchval("SELECT current_user") == "parley"
    finally:
        await conn.close()

    assert run(script, "up", env).returncode == 0  # idempotent: finds the running cluster
    down = run(script, "down", env)
    assert down.returncode == 0, down.stderr
    assert run(script, "status", env).returncode == 3
    assert run(script, "up", env).returncode == 0  # starts the same cluster again
    reset = run(script, "reset", env)
    assert reset.returncode == 0, reset.stderr
    assert run(script, "status", env).returncode == 3
    assert not Path(data_dir).exists()
    if os.geteuid() == 0:
        assert not Path(data_dir).parents[1].exists()  # no empty /var/lib/parley/<hash> left

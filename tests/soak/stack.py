"""The soak's stack: two replicas of each service and the Cloud API simulator as real processes, on
their own topic namespace and database of the local (or given) Kafka and PostgreSQL.

Everything here is plumbing: processes, ports, a round-robin TCP balancer in front of the ingest
replicas (what a Kubernetes Service does), and the faults applied to them. What is counted lives
in ``counting.py``; the schedule and the report in ``harness.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import yaml
from parley_common.topics_cli import delete_namespace

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SERVICES = ("ingest", "router", "sender", "billing")

APP_ID = "910000000000001"
TENANTS = {  # tenant -> (WABA, phone number ids); every number at Meta's 1,000 mps tier
    "soak-tickets": ("210000000000001", ["110000000000001", "110000000000002", "110000000000003"]),
    "soak-shop": ("210000000000002", ["110000000000004", "110000000000005", "110000000000006"]),
}
TEMPLATES = [
    {"name": "order_update", "language": "en", "category": "UTILITY", "status": "APPROVED",
     "components": [{"type": "BODY", "text": "Your order {{1}} ships today.",
                     "example": {"body_text": [["A1"]]}}]},
    {"name": "weekly_offer", "language": "en", "category": "MARKETING", "status": "APPROVED",
     "components": [{"type": "BODY", "text": "This week: {{1}} off.", "example": {"body_text": [["10%"]]}}]},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def infra_env() -> dict[str, str]:
    """The shared broker and database: from the environment when set, else deploy/local/infra.sh's
    (started if need be, never stopped by the soak)."""
    if os.environ.get("PARLEY_KAFKA_BOOTSTRAP") and os.environ.get("PARLEY_DATABASE_URL"):
        return {k: os.environ[k] for k in ("PARLEY_KAFKA_BOOTSTRAP", "PARLEY_DATABASE_URL")}
    subprocess.run(["bash", str(REPO / "deploy/local/infra.sh"), "up"], check=True, capture_output=True)
    out = subprocess.run(["bash", str(REPO / "deploy/local/infra.sh"), "env"], check=True,
                         capture_output=True, text=True).stdout
    env: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith("export "):
            k, _, v = line[len("export "):].partition("=")
            env[k] = shlex.split(v)[0] if v else ""
    return env


class Balancer:
    """A round-robin TCP balancer on one loopback port in front of the ingest replicas; a replica
    that refuses connections is skipped, as a Service skips a pod that is not ready."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.port = free_port()
        self._next = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        last: OSError | None = None
        for _ in range(len(self.backends)):
            port = self.backends[self._next % len(self.backends)]
            self._next += 1
            try:
                return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
            except (OSError, TimeoutError) as exc:
                last = OSError(str(exc))
        raise last or OSError("no backend")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await self._connect()
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@dataclass
class Proc:
    name: str
    cmd: list[str]
    env: dict[str, str]
    log: Path
    port: int
    ready_path: str = "/readyz"
    popen: subprocess.Popen[bytes] | None = None
    peak_rss_mb: float = 0.0
    starts: int = 0

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab")
        self.popen = subprocess.Popen(self.cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        self.starts += 1

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(10)

    def stop(self, timeout: float = 20) -> None:
        if not self.alive():
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        assert self.popen is not None
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()

    def sample_rss(self) -> None:
        """Resident memory of the process (the console script execs Python, so its pid is the service)."""
        if not self.alive():
            return
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(("VmRSS:", "VmHWM:")):
                    self.peak_rss_mb = max(self.peak_rss_mb, int(line.split()[1]) / 1024)

    async def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                if not self.alive():
                    tail = self.log.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{self.name} exited:\n{tail}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"http://127.0.0.1:{self.port}{self.ready_path}")).status_code == 200:
                        return
                await asyncio.sleep(0.3)
        raise TimeoutError(f"{self.name} not ready after {timeout:.0f} s (log {self.log})")


@dataclass
class Stack:
    """Names, secrets, database and processes of one soak run."""

    infra: dict[str, str]
    private: PrivateInfra | None = None  # the soak's own broker and database, which faults may restart
    replicas: int = 2
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    procs: dict[str, Proc] = field(default_factory=dict)
    balancer: Balancer | None = None

    def __post_init__(self) -> None:
        self.dir = REPO / ".parley" / "soak" / self.run_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.namespace = f"soak{self.run_id}."
        base = self.infra["PARLEY_DATABASE_URL"]
        self.server_url = base
        self.database = f"parley_soak_{self.run_id}"
        self.database_url = base.rsplit("/", 1)[0] + "/" + self.database
        self.secret = secrets.token_hex(24)
        self.token = secrets.token_hex(24)
        self.env = {
            **os.environ, **self.infra,
            "PARLEY_DATABASE_URL": self.database_url,
            "PARLEY_TOPIC_NAMESPACE": self.namespace,
            "PARLEY_DEMO": "1",
            "PARLEY_REDACTION_KEY": secrets.token_hex(16),
            "SOAK_APP_SECRET": self.secret, "SOAK_TOKEN": self.token, "SOAK_VERIFY": "soak-verify",
            "PARLEY_LOG_LEVEL": "WARNING",
            # A request in doubt is reported as such after this deadline (the sender's crash
            # semantics), short here so that a run's counts include every in-doubt verdict.
            "PARLEY_SENDER_IN_DOUBT_DEADLINE_S": "40",
            "PARLEY_SENDER_IN_DOUBT_SWEEP_S": "2",
        }
        self.sim_port = free_port()

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"

    @property
    def numbers(self) -> list[str]:
        return [n for _, ns in TENANTS.values() for n in ns]

    # -- set-up ------------------------------------------------------------------------------

    def _write_configs(self) -> tuple[Path, Path]:
        registry = {
            "apps": [{"app_id": APP_ID, "app_secret_refs": ["env:SOAK_APP_SECRET"],
                      "access_token_ref": "env:SOAK_TOKEN", "verify_token_ref": "env:SOAK_VERIFY",
                      "graph_api_base": self.sim_url}],
            "tenants": [{"tenant_id": t, "name": t, "app_id": APP_ID, "business_country": "IN",
                         "time_zone": "Asia/Kolkata", "messaging_limit": None, "wabas": [waba],
                         "phone_numbers": [{"phone_number_id": n, "display_phone_number": f"9180000{n[-5:]}",
                                            "waba_id": waba, "throughput_mps": 1000} for n in ns],
                         "settings": {"demo": True, "router": {"auto_reply": True}}}
                        for t, (waba, ns) in TENANTS.items()],
        }
        simulator = {
            "apps": [{"app_id": APP_ID, "app_secret_env": "SOAK_APP_SECRET"}],
            "wabas": [{"id": waba, "app_id": APP_ID, "token_env": "SOAK_TOKEN", "templates": TEMPLATES}
                      for waba, _ in TENANTS.values()],
            "phone_numbers": [{"id": n, "display_phone_number": f"9180000{n[-5:]}", "waba_id": waba,
                               "throughput": 1000} for waba, ns in TENANTS.values() for n in ns],
            "behaviour": {"failure_131049_rate": 0.0, "delivered_ratio": 0.95, "read_ratio": 0.6,
                          "unknown_recipient_pattern": None, "webhook_max_attempts": 40,
                          "webhook_retry_max_s": 5.0, "webhook_timeout_s": 5.0},
            "max_messages_kept": 2_000_000,
        }
        reg_path, sim_path = self.dir / "tenants.yaml", self.dir / "simulator.yaml"
        reg_path.write_text(yaml.safe_dump(registry))
        sim_path.write_text(yaml.safe_dump(simulator))
        return reg_path, sim_path

    def _cli(self, *args: str, env: dict[str, str] | None = None) -> str:
        proc = subprocess.run([str(BIN / args[0]), *args[1:]], env=env or self.env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    async def start(self) -> None:
        conn = await asyncpg.connect(self.server_url)
        try:
            await conn.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await conn.close()
        registry, sim_config = self._write_configs()
        self._cli("parley-tenants", "migrate")
        self._cli("parley-tenants", "import", str(registry))
        self._cli("parley-topics", "create")
        self.api_keys = {t: self._cli("parley-tenants", "key", "add", t, "--label", "soak").split()[1] for t in TENANTS}

        ingest_ports = [free_port() for _ in range(self.replicas)]
        self.balancer = Balancer(ingest_ports)
        await self.balancer.start()
        self.ingest_url = f"http://127.0.0.1:{self.balancer.port}"
        self.procs["simulator"] = Proc(
            "simulator", [str(BIN / "parley-simulator"), "run", "--port", str(self.sim_port), "--config",
                          str(sim_config), "--webhook-url", self.ingest_url + "/webhooks/meta/{app_id}"],
            self.env, self.dir / "simulator.log", self.sim_port, "/healthz")
        for svc in SERVICES:
            for i in range(self.replicas):
                port = ingest_ports[i] if svc == "ingest" else free_port()
                name = f"{svc}-{i + 1}"
                self.procs[name] = Proc(name, [str(BIN / f"parley-{svc}"), "run"], {
                    **self.env, f"PARLEY_{svc.upper()}_HTTP_PORT": str(port),
                    "PARLEY_SENDER_GRAPH_API_BASE": self.sim_url, "OTEL_SERVICE_NAME": f"parley-{svc}",
                    "OTEL_TRACES_SAMPLER": "always_off",
                }, self.dir / f"{name}.log", port)
        for proc in self.procs.values():
            proc.start()
        # The first start of a checkout trains the router's default model: give it time.
        await asyncio.gather(*(p.wait_ready(timeout=300) for p in self.procs.values()))
        self._cli("parley-billing", "ratecard", "import",
                  str(REPO / "services/billing/parley_billing/data/example_rate_card.csv"))
        self._cli("parley-sender", "templates", "sync", env={**self.env, "PARLEY_SENDER_GRAPH_API_BASE": self.sim_url})

    def service_procs(self) -> list[Proc]:
        return [p for n, p in self.procs.items() if n != "simulator"]

    async def stop(self, *, keep: bool = False) -> None:
        for proc in self.procs.values():
            proc.stop()
        if self.balancer:
            await self.balancer.stop()
        if keep:
            return
        with contextlib.suppress(Exception):
            conn = await asyncpg.connect(self.server_url)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            finally:
                await conn.close()
        with contextlib.suppress(Exception):
            await delete_namespace(self.infra["PARLEY_KAFKA_BOOTSTRAP"], self.namespace)

    # -- the simulator's control API -----------------------------------------------------------

    async def sim(self, method: str, path: str, **kwargs: Any) -> Any:
        async with httpx.AsyncClient(timeout=60) as client:
            r = await client.request(method, self.sim_url + path, **kwargs)
            r.raise_for_status()
            return r.json()


class PrivateInfra:
    """A Kafka broker and a PostgreSQL cluster of the soak's own, on their own ports with their data
    under the soak's directory, started by the same deploy/local scripts as the shared ones. The soak
    stops and starts these (the broker and database restart faults) and nobody else is touched; the
    shared infrastructure on 19092/55432 is never stopped by the soak."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.kafka_port, self.controller_port, self.pg_port = _distinct_free_ports(3)
        self.started = False

    def _script_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PARLEY_KAFKA_BOOTSTRAP", "PARLEY_DATABASE_URL")}
        return {**env, "PARLEY_KAFKA_PORT": str(self.kafka_port),
                "PARLEY_KAFKA_CONTROLLER_PORT": str(self.controller_port),
                "PARLEY_KAFKA_STATE": str(self.dir / "kafka"),
                "PARLEY_PG_PORT": str(self.pg_port), "PARLEY_PG_STATE": str(self.dir / "pg")}

    def _run(self, component: str, command: str) -> None:
        script = {"kafka": "kafka.sh", "postgres": "postgres.sh"}[component]
        proc = subprocess.run(["bash", str(REPO / "deploy/local" / script), command], env=self._script_env(),
                              capture_output=True, text=True, timeout=400)
        if proc.returncode != 0:
            raise RuntimeError(f"{script} {command} failed:\n{proc.stderr[-3000:]}")

    def env(self) -> dict[str, str]:
        return {"PARLEY_KAFKA_BOOTSTRAP": f"127.0.0.1:{self.kafka_port}",
                "PARLEY_DATABASE_URL": f"postgresql://parley:parley@127.0.0.1:{self.pg_port}/parley"}

    def up(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)  # the postgres user (when run as root) must reach its data directory
        self.started = True
        self._run("postgres", "up")
        self._run("kafka", "up")

    def restart(self, component: str) -> float:
        """Stop and start the private broker or database; returns the seconds it was away."""
        t0 = time.monotonic()
        self._run(component, "down")
        self._run(component, "up")
        return time.monotonic() - t0

    def down(self, *, remove: bool = True) -> None:
        if not self.started:
            return
        for component in ("kafka", "postgres"):
            with contextlib.suppress(Exception):
                self._run(component, "down")
        self.started = False
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)


def _distinct_free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)

"""A Prometheus of Parley's own for `make run-observed` and the tests: the `prometheus` binary from
the OS packages (deploy/local/prometheus.sh installs it), scraping every service's /metrics and
evaluating deploy/observability/alerts/*.yaml. Data under .parley/prometheus (or a given folder)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[2]
ALERTS = sorted((REPO / "deploy" / "observability" / "alerts").glob("*.yaml"))


def ensure_installed() -> None:
    subprocess.run(["bash", str(REPO / "deploy/local/prometheus.sh"), "install"], check=True)


def config(targets: dict[str, str], *, scrape_interval: str = "5s", rules: list[Path] | None = None) -> dict[str, Any]:
    """``targets``: job name (parley-<service>) -> host:port serving /metrics."""
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [str(p) for p in (ALERTS if rules is None else rules)],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}
                           for job, target in targets.items()],
    }


@dataclass
class Prometheus:
    port: int
    data: Path
    targets: dict[str, str]
    scrape_interval: str = "5s"
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed: run `bash deploy/local/prometheus.sh install`")
        self.data.mkdir(parents=True, exist_ok=True)
        cfg = self.data / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config(self.targets, scrape_interval=self.scrape_interval)))
        log = (self.data / "prometheus.log").open("ab")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={cfg}", f"--storage.tsdb.path={self.data / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=2d",
             "--web.enable-lifecycle"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                tail = (self.data / "prometheus.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}:\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        raise TimeoutError(f"prometheus not ready after {timeout_s:.0f} s")

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        r.raise_for_status()
        result: list[dict[str, Any]] = r.json()["data"]["result"]
        return result

    def metric_names(self) -> set[str]:
        r = httpx.get(f"{self.url}/api/v1/label/__name__/values", timeout=10)
        r.raise_for_status()
        return set(r.json()["data"])

    def targets_health(self) -> dict[str, str]:
        r = httpx.get(f"{self.url}/api/v1/targets", timeout=10)
        r.raise_for_status()
        return {t["labels"]["job"]: t["health"] for t in r.json()["data"]["activeTargets"]}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)

"""The short soak in `make test`: a few faults over about three minutes, and nothing lost, sent
twice or misbilled. The long one (every fault, 15 minutes, figures) is `make soak`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .harness import report, run_soak

pytestmark = [pytest.mark.infra, pytest.mark.e2e, pytest.mark.timeout(900)]


async def test_short_soak_loses_nothing_sends_nothing_twice_and_bills_right(
        infra: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The soak makes its own database and topic namespace on the session's broker and server.
    monkeypatch.setenv("PARLEY_KAFKA_BOOTSTRAP", infra.kafka_bootstrap)
    monkeypatch.setenv("PARLEY_DATABASE_URL", infra.server_database_url)
    monkeypatch.delenv("PARLEY_TOPIC_NAMESPACE", raising=False)
    result = await run_soak(duration_s=120, rate=60, faults="short", drain_timeout_s=240)
    print(report(result))
    summary = json.dumps({k: result[k] for k in ("lost", "duplicated_sends", "misbilled", "outcomes",
                                                 "faults", "processes_not_running_at_end")}, default=str)
    assert result["faults_injected"] == 4, summary
    assert result["drained"], summary
    assert result["inbound_posted"] > 1000, summary
    assert result["lost"] == 0, summary
    assert result["duplicated_sends"] == 0, summary
    assert result["conflicting_final_states"] == 0, summary
    assert result["misbilled"] == 0, summary
    assert result["processes_not_running_at_end"] == [], summary

"""The hot path's shortcuts produce exactly what the validated models would."""

from __future__ import annotations

from datetime import UTC, datetime
from unittest import mock

import orjson
import pytest
from parley_common.contracts import SendResult
from parley_sender import results
from parley_sender.cloudapi import CloudApiClient
from parley_sender.results import result_json, result_of
from parley_sender.store import MessageRow

ROWS = [
    MessageRow("m1", "t1", "1001", "447700900001", "accepted", 0, wamid="wamid.X", is_template=True,
               template_name="order_update", category="utility", free_window="customer_service"),
    MessageRow("m2", None, "1001", None, "refused", 2, reason="outside_window: closed", error_code=131047),
    MessageRow("m3", "t1", "1001", "447700900001", "dead", 5, reason="attempts exhausted", error_code=131000,
               category="service"),
]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.state)
@pytest.mark.parametrize("micro", [0, 123456])
def test_result_json_is_the_models_json(row: MessageRow, micro: int) -> None:
    at = datetime(2026, 11, 22, 1, 2, 3, micro, tzinfo=UTC)
    with mock.patch.object(results, "now_utc", return_value=at):
        fast = result_json(row)
        model = result_of(row).model_copy(update={"received_at": at})
    assert fast == model.model_dump_json().encode()
    assert SendResult.model_validate_json(fast) == model


def test_result_json_covers_every_field_of_send_result() -> None:
    assert set(orjson.loads(result_json(ROWS[0]))) == set(SendResult.model_fields)


def test_send_target_is_built_once_per_number_and_token() -> None:
    client = CloudApiClient(base_override="http://127.0.0.1:1/", version_override="v24.0")
    url, headers = client._send_target(None, "1001")
    assert str(url) == "http://127.0.0.1:1/v24.0/1001/messages"
    assert "Authorization" not in headers
    assert client._send_target(None, "1001")[0] is url
    assert str(client._send_target(None, "1002")[0]).endswith("/1002/messages")

"""The topic registry: names, partition counts, keys and retention of every topic.

Everything about one business phone number goes to one partition: the key is the
``phone_number_id`` (docs/ARCHITECTURE.md, "Topics"). Dead letters are keyed by the original key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DAY_MS = 24 * 3600 * 1000


def namespace() -> str:
    """An optional prefix for every topic name and consumer group id (``PARLEY_TOPIC_NAMESPACE``),
    e.g. per test session."""
    return os.environ.get("PARLEY_TOPIC_NAMESPACE", "")


def consumer_group(base: str) -> str:
    """A consumer group's id under the same namespace as the topics: two stacks or test sessions
    with namespaces of their own never join (and so never rebalance) each other's groups. Read at
    call time, like ``Topic.name``; with no namespace (production) it is the base name itself."""
    return namespace() + base


@dataclass(frozen=True)
class Topic:
    base: str
    partitions: int
    key: str
    retention_ms: int
    description: str
    cleanup_policy: str = "delete"

    @property
    def name(self) -> str:
        return namespace() + self.base


WEBHOOKS_RAW = Topic("wa.webhooks.raw", 6, "app id", 30 * DAY_MS,
                     "exact bytes of every accepted webhook POST (audit and replay)")
MESSAGES_IN = Topic("wa.messages.in", 12, "phone_number_id", 14 * DAY_MS,
                    "inbound customer messages, normalised")
STATUSES = Topic("wa.statuses", 12, "phone_number_id", 30 * DAY_MS,
                 "delivery statuses with pricing")
ACCOUNT_EVENTS = Topic("wa.account.events", 6, "phone_number_id or waba id", 30 * DAY_MS,
                       "template, quality, preference, account and consent events")
MESSAGES_OUT = Topic("wa.messages.out", 12, "phone_number_id", 7 * DAY_MS,
                     "send requests from the business API and the router")
MESSAGES_OUT_RETRY = Topic("wa.messages.out.retry", 12, "phone_number_id", 7 * DAY_MS,
                           "send requests waiting for a retry")
MESSAGES_ROUTED = Topic("wa.messages.routed", 12, "phone_number_id", 14 * DAY_MS,
                        "the router's decision for every inbound message")
SENDS = Topic("wa.sends", 12, "phone_number_id", 30 * DAY_MS,
              "send results: accepted, refused, failed")
AGENT_QUEUE = Topic("wa.agents", 6, "phone_number_id", 7 * DAY_MS,
                    "messages for human agents (tenant, skill and language in the record)")
COMMERCE = Topic("wa.commerce", 12, "phone_number_id", 30 * DAY_MS,
                  "payment updates and inbound carts (PaymentUpdate, OrderCart)")
ORDERS = Topic("wa.orders", 12, "phone_number_id", 30 * DAY_MS,
                "order events from billing: an order entered a state (OrderEvent; ADR 0113)")
DEAD_LETTERS = Topic("wa.deadletter", 3, "original key", 30 * DAY_MS,
                     "records a service could not handle after bounded retries")

ALL_TOPICS: tuple[Topic, ...] = (
    WEBHOOKS_RAW, MESSAGES_IN, STATUSES, ACCOUNT_EVENTS, MESSAGES_OUT, MESSAGES_OUT_RETRY,
    MESSAGES_ROUTED, SENDS, AGENT_QUEUE, DEAD_LETTERS, COMMERCE, ORDERS,
)

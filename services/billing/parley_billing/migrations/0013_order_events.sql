-- Order events (ADR 0113): one row per change of an order's state (or of its refunded amount),
-- written in the transaction that re-folded the order. A relay publishes each to wa.orders and
-- queues the tenant's endpoint calls (billing.webhook_outbox) in one transaction, then marks it.
CREATE TABLE billing.order_events (
    event_id         text PRIMARY KEY,
    tenant_id        text NOT NULL,
    reference_id     text NOT NULL,
    type             text NOT NULL,
    state            text NOT NULL,
    phone_number_id  text NOT NULL,
    body             jsonb NOT NULL,           -- the OrderEvent record
    created_at       timestamptz NOT NULL DEFAULT now(),
    relayed_at       timestamptz               -- on wa.orders and in the outbox
);
CREATE INDEX order_events_unrelayed ON billing.order_events (created_at) WHERE relayed_at IS NULL;
CREATE INDEX order_events_by_order ON billing.order_events (tenant_id, reference_id, created_at);

-- Calls to the tenant's order and conversions endpoints (the shared outbox of ADR 0105,
-- parley_common.endpoint_calls): the URL and secret are read from the tenant's settings at
-- each attempt; nothing secret is stored here.
CREATE TABLE billing.webhook_outbox (
    delivery_id      text PRIMARY KEY,
    tenant_id        text NOT NULL,
    endpoint         text NOT NULL,
    phone_number_id  text NOT NULL,
    event_id         text NOT NULL,
    body             bytea NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_until      timestamptz NOT NULL DEFAULT '-infinity',
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX billing_webhook_outbox_due ON billing.webhook_outbox (next_attempt_at);

-- The click-to-WhatsApp ad an inbound message came from (its referral's ctwa_clid): an order
-- whose cart carries none takes the customer's latest one within 72 hours before it (ADR 0113).
ALTER TABLE billing.inbound ADD COLUMN ctwa_clid text;
CREATE INDEX inbound_ctwa ON billing.inbound (phone_number_id, customer, received_at) WHERE ctwa_clid IS NOT NULL;

-- A click-to-WhatsApp order converts once (its conversion call is queued at most once).
CREATE TABLE billing.order_conversions (
    tenant_id      text NOT NULL,
    reference_id   text NOT NULL,
    conversion_id  text NOT NULL,
    queued_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, reference_id)
);

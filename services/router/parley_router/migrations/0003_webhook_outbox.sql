-- Tenant endpoint calls waiting to be made (ADR 0105). A routed batch inserts its calls here
-- together with its wamids, before its offsets are committed; the dispatcher claims due rows with
-- a lease (so a crashed replica's calls are taken over when the lease runs out), deletes a row
-- once the endpoint accepted it or it was dead-lettered. The URL and secret are read from the
-- tenant's current settings at each attempt: nothing secret is stored here.
CREATE TABLE router.webhook_outbox (
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
CREATE INDEX webhook_outbox_due ON router.webhook_outbox (next_attempt_at);

-- Idempotency keys of the send API: a repeat within the TTL returns the first answer.
CREATE TABLE ingest.idempotency_keys (
    tenant_id       text NOT NULL,
    idem_key        text NOT NULL,
    request_hash    text NOT NULL,
    status_code     integer,            -- NULL while the first request is in flight
    response        jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, idem_key)
);
CREATE INDEX idempotency_keys_created_at ON ingest.idempotency_keys (created_at);

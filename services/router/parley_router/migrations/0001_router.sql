-- Inbound messages already routed (durable dedupe: a redelivered or re-sent wamid routes once).
CREATE TABLE router.routed (
    wamid       text PRIMARY KEY,
    tenant_id   text,
    intent      text NOT NULL,
    rule        text NOT NULL,
    routed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX routed_routed_at ON router.routed (routed_at);

-- Trained per-tenant intent models (default examples + the tenant's own intents).
CREATE TABLE router.tenant_models (
    tenant_id    text NOT NULL,
    fingerprint  text NOT NULL,
    intents      jsonb NOT NULL,
    model        bytea NOT NULL,
    trained_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, fingerprint)
);

-- Tenant intents added over HTTP (PUT /v1/intents/{name}); merged with settings.router.intents,
-- the HTTP ones winning on a name clash. Every replica reads this table on its model poll.
CREATE TABLE router.tenant_intents (
    tenant_id   text NOT NULL,
    name        text NOT NULL,
    examples    jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

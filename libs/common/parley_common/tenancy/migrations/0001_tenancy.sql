-- The tenant registry: every service reads it, only the parley-tenants command writes it.
CREATE TABLE tenancy.meta_apps (
    app_id              text PRIMARY KEY,
    -- references to secrets ("env:NAME" or "file:/path"), never the secrets themselves
    app_secret_refs     text[] NOT NULL,         -- up to two active (rotation)
    access_token_ref    text,
    verify_token_ref    text,
    graph_api_base      text,
    graph_api_version   text NOT NULL DEFAULT 'v24.0'
);

CREATE TABLE tenancy.tenants (
    tenant_id           text PRIMARY KEY CHECK (tenant_id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    name                text NOT NULL,
    app_id              text NOT NULL REFERENCES tenancy.meta_apps(app_id),
    business_country    char(2) NOT NULL,
    time_zone           text NOT NULL,
    messaging_limit     integer,                 -- unique customers per rolling 24 h; NULL = unlimited
    settings            jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenancy.wabas (
    waba_id             text PRIMARY KEY,
    tenant_id           text NOT NULL REFERENCES tenancy.tenants(tenant_id) ON DELETE CASCADE
);

CREATE TABLE tenancy.phone_numbers (
    phone_number_id     text PRIMARY KEY,
    tenant_id           text NOT NULL REFERENCES tenancy.tenants(tenant_id) ON DELETE CASCADE,
    waba_id             text NOT NULL REFERENCES tenancy.wabas(waba_id) ON DELETE CASCADE,
    display_phone_number text NOT NULL,
    throughput_mps      integer NOT NULL DEFAULT 80 CHECK (throughput_mps BETWEEN 1 AND 1000)
);

CREATE TABLE tenancy.api_keys (
    key_id              text PRIMARY KEY,
    tenant_id           text NOT NULL REFERENCES tenancy.tenants(tenant_id) ON DELETE CASCADE,
    key_hash            bytea NOT NULL UNIQUE,   -- sha256 of the whole key (keys are 256-bit random)
    label               text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    revoked_at          timestamptz
);
CREATE INDEX api_keys_tenant ON tenancy.api_keys(tenant_id);

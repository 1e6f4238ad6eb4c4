-- The sender's own tables (schema "sender").

-- One row per send request (message_id is the request id): the intent is recorded before the
-- Cloud API call, the outcome after it.
CREATE TABLE sender.messages (
    message_id      text PRIMARY KEY,
    tenant_id       text,
    phone_number_id text NOT NULL,
    recipient       text,
    state           text NOT NULL,  -- sending | retrying | accepted | refused | failed | in_doubt | dead
    attempt         integer NOT NULL DEFAULT 0,
    wamid           text,
    callback_data   text,
    is_template     boolean NOT NULL DEFAULT false,
    template_name   text,
    category        text,
    free_window     text,
    reason          text,
    error_code      integer,
    request         jsonb,          -- the OutboundMessage, for replays and in-doubt resolution
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX messages_wamid ON sender.messages (wamid) WHERE wamid IS NOT NULL;
CREATE INDEX messages_in_doubt ON sender.messages (phone_number_id, callback_data) WHERE state = 'in_doubt';
CREATE INDEX messages_tenant ON sender.messages (tenant_id, created_at);

-- Delivery statuses from Meta's webhooks, by wamid. Independent of sender.messages so that a
-- status arriving before the send was recorded is kept. Only moves forward; failed is final.
CREATE TABLE sender.deliveries (
    wamid           text PRIMARY KEY,
    phone_number_id text NOT NULL,
    status          text NOT NULL,
    status_rank     integer NOT NULL,
    callback_data   text,
    sent_at         timestamptz,
    delivered_at    timestamptz,
    read_at         timestamptz,
    failed_at       timestamptz,
    errors          jsonb NOT NULL DEFAULT '[]'::jsonb,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deliveries_callback ON sender.deliveries (phone_number_id, callback_data);

-- Customer-service and free-entry-point windows per (business number, customer), event time.
CREATE TABLE sender.windows (
    phone_number_id    text NOT NULL,
    customer_id        text NOT NULL,
    last_inbound_at    timestamptz,
    last_inbound_wamid text,
    referral_at        timestamptz,
    fep_started_at     timestamptz,
    PRIMARY KEY (phone_number_id, customer_id)
);

-- Inbound wamids seen by the window tracker (to know whether a reply's reference is known).
CREATE TABLE sender.inbound_refs (
    wamid           text PRIMARY KEY,
    phone_number_id text NOT NULL,
    customer_id     text NOT NULL,
    occurred_at     timestamptz NOT NULL
);
CREATE INDEX inbound_refs_time ON sender.inbound_refs (occurred_at);

CREATE TABLE sender.templates (
    tenant_id        text NOT NULL,
    name             text NOT NULL,
    language         text NOT NULL,
    waba_id          text,
    template_id      text,
    category         text NOT NULL,
    status           text NOT NULL,
    quality          text,
    parameter_format text NOT NULL DEFAULT 'POSITIONAL',
    components       jsonb NOT NULL DEFAULT '[]'::jsonb,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name, language)
);
CREATE INDEX templates_id ON sender.templates (template_id);

CREATE TABLE sender.consent (
    tenant_id         text NOT NULL,
    customer_id       text NOT NULL,
    marketing_stopped boolean NOT NULL,
    changed_at        timestamptz NOT NULL,
    source            text NOT NULL,
    PRIMARY KEY (tenant_id, customer_id)
);

-- Customers a portfolio reached outside a window (the messaging limit), last time reached.
CREATE TABLE sender.reached (
    tenant_id   text NOT NULL,
    customer_id text NOT NULL,
    reached_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, customer_id)
);

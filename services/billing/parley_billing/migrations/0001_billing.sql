-- Billing stores facts (sends, deliveries, inbound windows) idempotently and derives the ledger
-- from them, so the result never depends on the order events arrived in (ADR 0050).

CREATE TABLE billing.sends (
    wamid           text PRIMARY KEY,
    tenant_id       text,
    phone_number_id text NOT NULL,
    customer        text NOT NULL,
    is_template     boolean NOT NULL,
    category        text,
    free_window     text,             -- the sender's view at send time; kept, not used to price
    sent_at         timestamptz NOT NULL
);

CREATE TABLE billing.deliveries (
    wamid              text PRIMARY KEY,
    tenant_id          text,
    phone_number_id    text NOT NULL,
    waba_id            text,
    customer           text NOT NULL,
    delivered_at       timestamptz,   -- earliest delivered/read/played; NULL: only "sent" seen
    meta_rank          smallint,      -- which status Meta's pricing came from (lower wins)
    meta_billable      boolean,
    meta_pricing_model text,
    meta_type          text,
    meta_category      text
);
CREATE INDEX deliveries_timeline ON billing.deliveries (phone_number_id, customer, delivered_at);

CREATE TABLE billing.inbound (
    wamid           text PRIMARY KEY,
    tenant_id       text,
    phone_number_id text NOT NULL,
    customer        text NOT NULL,
    received_at     timestamptz NOT NULL,  -- Meta's timestamp of the customer's message
    referral        boolean NOT NULL
);
CREATE INDEX inbound_timeline ON billing.inbound (phone_number_id, customer, received_at);

-- One row per delivered outbound message (unique wamid), re-priced when its facts change.
CREATE TABLE billing.ledger (
    wamid              text PRIMARY KEY,
    tenant_id          text,
    phone_number_id    text NOT NULL,
    account            text NOT NULL,
    delivered_at       timestamptz NOT NULL,
    month              text NOT NULL,         -- YYYY-MM in the tenant's time zone
    pricing_model      text NOT NULL,
    category           text NOT NULL,
    type               text NOT NULL,
    billable           boolean NOT NULL,
    market             text NOT NULL,
    country            text,
    currency           text NOT NULL,
    amount             numeric(20, 8),        -- list price; NULL: billable but no rate offered
    conversation_id    text,
    opens_conversation boolean NOT NULL DEFAULT false,
    meta_billable      boolean,
    meta_pricing_model text,
    meta_type          text,
    meta_category      text,
    priced_at          timestamptz NOT NULL DEFAULT now(),
    revision           integer NOT NULL DEFAULT 1
);
CREATE INDEX ledger_tenant_month ON billing.ledger (tenant_id, month);
CREATE INDEX ledger_tenant_time ON billing.ledger (tenant_id, delivered_at);

CREATE TABLE billing.rate_cards (
    effective_from  date NOT NULL,
    market          text NOT NULL,
    currency        char(3) NOT NULL,
    marketing       numeric(20, 8),
    utility         numeric(20, 8),
    authentication  numeric(20, 8),
    authentication_international numeric(20, 8),
    service         numeric(20, 8),
    imported_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (effective_from, market)
);

CREATE TABLE billing.tiers (
    effective_from  date NOT NULL,
    market          text NOT NULL,
    category        text NOT NULL,
    from_volume     bigint NOT NULL,
    to_volume       bigint,
    rate            numeric(20, 8) NOT NULL,
    imported_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (effective_from, market, category, from_volume)
);

-- A finalised month never changes: its lines are frozen here. Later changes to that month's
-- messages appear as adjustment lines (for_month < month) on a later invoice.
CREATE TABLE billing.invoices (
    tenant_id     text NOT NULL,
    month         text NOT NULL,
    finalised_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, month)
);

CREATE TABLE billing.invoice_lines (
    tenant_id      text NOT NULL,
    month          text NOT NULL,         -- the invoice the line is on
    for_month      text NOT NULL,         -- the month the messages were delivered in
    pricing_model  text NOT NULL,
    market         text NOT NULL,
    category       text NOT NULL,
    type           text NOT NULL,
    currency       text NOT NULL,
    messages       bigint NOT NULL,
    billable       bigint NOT NULL,
    unpriced       bigint NOT NULL,
    amount         numeric(20, 8) NOT NULL,
    FOREIGN KEY (tenant_id, month) REFERENCES billing.invoices (tenant_id, month)
);
CREATE INDEX invoice_lines_tenant ON billing.invoice_lines (tenant_id, for_month);

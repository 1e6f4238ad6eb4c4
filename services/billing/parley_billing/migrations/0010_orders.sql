-- Orders (ADR 0110, 0111): every fact about an order is kept once (its id is the key), and the
-- order row is the pure fold of its facts (parley_billing.domain.orders), recomputed under the
-- row's lock whenever a new fact arrives, so arrival order and duplicates never change it.

CREATE TABLE billing.order_facts (
    tenant_id     text NOT NULL,
    reference_id  text NOT NULL,
    fact_id       text NOT NULL,
    kind          text NOT NULL,         -- requested | payment | fulfilment | refund
    occurred_at   timestamptz NOT NULL,
    body          jsonb NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, reference_id, fact_id)
);

CREATE TABLE billing.orders (
    tenant_id          text NOT NULL,
    reference_id       text NOT NULL,
    state              text NOT NULL,   -- unknown: payments seen, no order_details (reported)
    phone_number_id    text,
    customer           text,
    currency           text,
    total              numeric,
    captured           numeric,
    refunded           numeric,
    conversation_wamid text,
    ctwa_clid          text,
    first_at           timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    view               jsonb NOT NULL,
    PRIMARY KEY (tenant_id, reference_id)
);
CREATE INDEX orders_by_state ON billing.orders (tenant_id, state, first_at DESC);
CREATE INDEX orders_by_time ON billing.orders (tenant_id, first_at DESC, reference_id);

-- Inbound carts (OrderCart on wa.commerce): the ad referral an order came from is read here.
CREATE TABLE billing.order_carts (
    wamid            text PRIMARY KEY,
    tenant_id        text NOT NULL,
    phone_number_id  text NOT NULL,
    customer         text,
    catalog_id       text,
    currency         text,
    total            numeric,
    ctwa_clid        text,
    occurred_at      timestamptz NOT NULL,
    body             jsonb NOT NULL
);
CREATE INDEX order_carts_customer ON billing.order_carts (tenant_id, phone_number_id, customer, occurred_at DESC);

-- Refund requests through the API: one per (order, Idempotency-Key); the customer's
-- order_status notice is an outbox row, published after the commit and marked.
CREATE TABLE billing.order_refunds (
    tenant_id         text NOT NULL,
    reference_id      text NOT NULL,
    idempotency_key   text NOT NULL,
    fingerprint       text NOT NULL,
    amount            numeric NOT NULL,
    currency          text NOT NULL,
    reason            text,
    notice            jsonb,             -- the OutboundMessage record, or NULL (notify: false)
    notice_topic_key  text,
    notice_published  timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, reference_id, idempotency_key)
);
CREATE INDEX order_refunds_unpublished ON billing.order_refunds (created_at) WHERE notice IS NOT NULL AND notice_published IS NULL;

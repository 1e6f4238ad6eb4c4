-- Dated pricing rules (ADR 0080): which rule row priced each ledger line, and where the customer's
-- market came from (ADR 0081: customers known only by a business-scoped user id).
ALTER TABLE billing.ledger ADD COLUMN rules text NOT NULL DEFAULT '';
ALTER TABLE billing.ledger ADD COLUMN market_source text NOT NULL DEFAULT 'phone';

-- A BSUID and the phone number some record of the same customer carried (inbound messages and
-- statuses that name both; a BSUID belongs to one number). Used only to price a BSUID-only
-- timeline in the number's market.
CREATE TABLE billing.contacts (
    bsuid           text PRIMARY KEY,
    phone           text NOT NULL
);

-- Meta's VOLUME_BASED_PRICING_TIER_UPDATE account events, compared with Parley's own counts (ADR 0082).
CREATE TABLE billing.tier_updates (
    event_id        text PRIMARY KEY,
    tenant_id       text,
    waba_id         text,
    month           text NOT NULL,          -- effective month, YYYY-MM
    region          text NOT NULL,          -- as Meta names it
    category        text NOT NULL,          -- lower case, e.g. utility
    tier_from       bigint NOT NULL,
    tier_to         bigint,
    updated_at      timestamptz NOT NULL,   -- Meta's tier_update_time
    raw             jsonb NOT NULL
);
CREATE INDEX tier_updates_tenant_month ON billing.tier_updates (tenant_id, month);

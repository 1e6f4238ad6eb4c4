-- Contacts: one customer per tenant, whatever Meta calls them (docs/adr/0117-contacts.md).
CREATE TABLE IF NOT EXISTS ingest.contacts (
    tenant_id    text NOT NULL,
    contact_id   text NOT NULL,            -- the first identifier the tenant saw; never changes
    first_seen   timestamptz NOT NULL,
    phone        text,
    bsuid        text,
    parent_bsuid text,
    username     text,
    unannounced  text[] NOT NULL DEFAULT '{}',  -- absorbed keys whose merge is not yet on Kafka
    PRIMARY KEY (tenant_id, contact_id)
);

-- Every identifier a contact ever held (an old BSUID too, so a late webhook still finds it).
CREATE TABLE IF NOT EXISTS ingest.contact_identifiers (
    tenant_id  text NOT NULL,
    identifier text NOT NULL,
    contact_id text NOT NULL,
    PRIMARY KEY (tenant_id, identifier)
);

-- The contact of each inbound message: a reply that names no one goes to it.
CREATE TABLE IF NOT EXISTS ingest.inbound_contacts (
    tenant_id   text NOT NULL,
    wamid       text NOT NULL,
    contact_id  text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, wamid)
);
CREATE INDEX IF NOT EXISTS inbound_contacts_received ON ingest.inbound_contacts (received_at);

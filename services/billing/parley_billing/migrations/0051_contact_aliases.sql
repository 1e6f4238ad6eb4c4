-- Contacts folded into another (ContactMerged, docs/adr/0117-contacts.md): a fact stamped with
-- the absorbed contact before ingest merged may reach billing after the fold (it waited on Kafka)
-- and is metered on the kept contact. Written by the fold under the tenant's exclusive lock; read
-- by every fact insert under the shared one (parley_billing.store). Flat: a kept contact is never
-- itself absorbed (a chain A -> B, B -> C is kept as A -> C, B -> C).
CREATE TABLE billing.contact_aliases (
    tenant_id  text NOT NULL,
    absorbed   text NOT NULL,
    kept       text NOT NULL,
    folded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, absorbed)
);
CREATE INDEX contact_aliases_kept ON billing.contact_aliases (tenant_id, kept);

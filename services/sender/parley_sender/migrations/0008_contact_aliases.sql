-- Contacts folded into another (ContactMerged, docs/adr/0117-contacts.md): a request or event
-- stamped with the absorbed contact before ingest merged may still be on Kafka after the fold,
-- and must land on the kept contact. Written by the fold under the portfolio's row lock.
CREATE TABLE sender.contact_aliases (
    tenant_id text NOT NULL,
    absorbed  text NOT NULL,
    kept      text NOT NULL,
    PRIMARY KEY (tenant_id, absorbed)
);

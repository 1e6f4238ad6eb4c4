-- The Cloud API send span of each message Parley sent (W3C traceparent, from wa.sends), so that the
-- message's statuses and its pricing link to the send in traces (docs/adr/0090-span-links-by-wamid.md).
-- Only sends whose span was sampled have a row; rows older than the retention are pruned.
CREATE TABLE billing.send_spans (
    wamid     text PRIMARY KEY,
    send_span text NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX send_spans_stored_at ON billing.send_spans (stored_at);

-- A number's throughput as Meta last reported it (phone_number_quality_update THROUGHPUT_UPGRADE),
-- read by every replica's governor instead of the registry's value (docs/adr/0118-throughput-from-meta.md).
CREATE TABLE sender.number_throughput (
    phone_number_id text PRIMARY KEY,
    mps             integer NOT NULL,
    reported_at     timestamptz NOT NULL
);

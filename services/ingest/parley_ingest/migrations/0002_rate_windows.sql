-- Send-API requests per tenant and rate window, shared by every ingest replica (the per-tenant
-- limit holds across replicas). Rows older than two windows are purged.
CREATE TABLE ingest.rate_windows (
    tenant_id       text NOT NULL,
    window_s        integer NOT NULL,
    window_start    bigint NOT NULL,        -- unix seconds, a multiple of window_s
    hits            integer NOT NULL,
    PRIMARY KEY (tenant_id, window_s, window_start)
);

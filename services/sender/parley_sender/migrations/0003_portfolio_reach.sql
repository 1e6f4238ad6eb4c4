-- The portfolio messaging limit held by every replica together (docs/adr/0115-portfolio-messaging-limit.md).

-- One row per portfolio: its lock serialises the reservations of new customers, so two replicas
-- never both take the last place.
CREATE TABLE sender.portfolios (
    tenant_id text PRIMARY KEY
);

-- A customer is reserved before the call and confirmed when the send is accepted. A reserved,
-- unconfirmed customer is counted like a reached one; "pending" lists the requests holding the
-- reservation, and the row goes when the last of them is refused or fails before leaving.
ALTER TABLE sender.reached ADD COLUMN confirmed boolean NOT NULL DEFAULT true;
ALTER TABLE sender.reached ADD COLUMN pending text[] NOT NULL DEFAULT '{}';
CREATE INDEX reached_window ON sender.reached (tenant_id, reached_at);

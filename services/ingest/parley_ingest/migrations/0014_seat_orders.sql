-- Seats follow payments (ADR 0112, 0113): a hold is attached to an order (the business names the
-- order of a flow token, or uses the order's reference_id as the flow token), and the order's
-- payment outcome, read from wa.orders, sells or releases it. The latest outcome per order is
-- kept, so a hold attached after the payment settled is sold or released at once.
ALTER TABLE ingest.flow_seats ADD COLUMN order_ref text;
CREATE INDEX flow_seats_order ON ingest.flow_seats (tenant_id, order_ref) WHERE order_ref IS NOT NULL;

CREATE TABLE ingest.seat_orders (
    tenant_id     text NOT NULL,
    reference_id  text NOT NULL,
    action        text NOT NULL CHECK (action IN ('sell', 'release')),
    event_id      text NOT NULL,          -- the OrderEvent that decided it
    event_at      timestamptz NOT NULL,   -- its occurred_at: an older event never overrides a newer
    decided_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, reference_id)
);

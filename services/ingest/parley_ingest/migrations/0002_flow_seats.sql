-- The reference seat-selection backend of the Flows endpoint (ADR 0112): trips and their seat
-- maps per tenant. A seat is free, held by one flow token until held_until, or sold. Holding is
-- one conditional UPDATE, so two customers picking the same seat at once get one winner.

CREATE TABLE ingest.flow_trips (
    tenant_id     text NOT NULL,
    trip_id       text NOT NULL,
    title         text NOT NULL,
    departs_at    timestamptz NOT NULL,
    currency      text NOT NULL,
    price_value   bigint NOT NULL,      -- Meta's {value, offset}: exact
    price_offset  integer NOT NULL DEFAULT 100,
    PRIMARY KEY (tenant_id, trip_id)
);

CREATE TABLE ingest.flow_seats (
    tenant_id   text NOT NULL,
    trip_id     text NOT NULL,
    seat_id     text NOT NULL,
    state       text NOT NULL DEFAULT 'free' CHECK (state IN ('free', 'held', 'sold')),
    holder      text,                   -- the flow token holding or having bought it
    held_until  timestamptz,
    sold_ref    text,                   -- the order's reference_id once sold
    PRIMARY KEY (tenant_id, trip_id, seat_id),
    FOREIGN KEY (tenant_id, trip_id) REFERENCES ingest.flow_trips (tenant_id, trip_id) ON DELETE CASCADE
);
CREATE INDEX flow_seats_holder ON ingest.flow_seats (tenant_id, holder) WHERE state = 'held';

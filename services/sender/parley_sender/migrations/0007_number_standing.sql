-- A number's standing as Meta last reported it (docs/adr/0121-quality-acts-on-sending.md): its
-- quality (phone_number_quality_update: FLAGGED / UNFLAGGED or a rating), and whether it is shared
-- with the WhatsApp Business app (coexistence webhooks). Read by every replica.
CREATE TABLE sender.number_standing (
    phone_number_id text PRIMARY KEY,
    quality         text,
    quality_at      timestamptz,
    coexistence     boolean NOT NULL DEFAULT false,
    coexistence_at  timestamptz
);

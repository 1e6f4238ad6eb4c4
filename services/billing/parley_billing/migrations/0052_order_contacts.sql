-- The customer's contact of an order (ADR 0117, 0113): the key billing meters the customer's
-- inbound messages and deliveries under, so an order finds its ad referral and its fees there
-- (mapped through billing.contact_aliases when read). NULL on orders not re-folded since: read as
-- the customer without its '+', the key billing used before contacts.
ALTER TABLE billing.orders ADD COLUMN contact text;

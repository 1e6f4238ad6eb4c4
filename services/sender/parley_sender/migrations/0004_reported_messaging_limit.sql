-- The portfolio's messaging limit as Meta last reported it (business_capability_update and
-- phone_number_quality_update: max_daily_conversations_per_business); -1 is unlimited. Absent:
-- the tenant registry's value holds (docs/adr/0115-portfolio-messaging-limit.md).
ALTER TABLE sender.portfolios ADD COLUMN reported_limit integer;
ALTER TABLE sender.portfolios ADD COLUMN reported_at timestamptz;

-- Crash semantics (docs/adr/0030-sender-exactly-once.md): a request is 'sending' only while its
-- own call may be in flight; 'in_doubt' requests are resolved by a status webhook or, after a
-- deadline, become 'unresolved' (final, reported to the tenant, who may resend).

-- Whether an accepted send counts against the portfolio's messaging limit, so that the effects
-- of a recorded outcome can be re-applied from the row alone after a crash.
ALTER TABLE sender.messages ADD COLUMN business_initiated boolean NOT NULL DEFAULT false;

-- Resolution by a status webhook's callback data (the request's message id), also after the
-- deadline; and the deadline sweep over 'in_doubt' and stranded 'sending' rows.
DROP INDEX sender.messages_in_doubt;
CREATE INDEX messages_resolvable ON sender.messages (phone_number_id, callback_data)
    WHERE state IN ('in_doubt', 'unresolved');
CREATE INDEX messages_unsettled ON sender.messages (updated_at) WHERE state IN ('in_doubt', 'sending');

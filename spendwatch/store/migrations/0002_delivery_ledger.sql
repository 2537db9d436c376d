-- Delivery ledgers for the daily digest and immediate alerts (spendwatch.notify.ledger).

-- digests: who claimed the day's digest and when, where it went, when to try again after a failure.
-- status: sending (claimed; nothing sent yet) → committing (message data going out) →
--         sent | unconfirmed (a crash during committing, counted as sent) | failed (retry at
--         next_attempt_at) | superseded (a newer day became due before this one could go out).
ALTER TABLE digests ADD COLUMN claimed_at TIMESTAMPTZ;
ALTER TABLE digests ADD COLUMN claimed_by VARCHAR;
ALTER TABLE digests ADD COLUMN channel VARCHAR;
ALTER TABLE digests ADD COLUMN report_day DATE;
ALTER TABLE digests ADD COLUMN next_attempt_at TIMESTAMPTZ;
ALTER TABLE digests ADD COLUMN updated_at TIMESTAMPTZ;

-- Failed immediate-alert deliveries, retried with backoff until they succeed or age out.
CREATE TABLE alert_failures (
    key             VARCHAR NOT NULL,
    channel         VARCHAR NOT NULL,
    attempts        INTEGER NOT NULL,
    first_failed_at TIMESTAMPTZ NOT NULL,
    last_failed_at  TIMESTAMPTZ NOT NULL,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    error           VARCHAR NOT NULL,
    given_up        BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (key, channel)
);

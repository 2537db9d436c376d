-- One day's digest goes out as several messages: the FinOps digest and one per team, and one per
-- recipient when the emails carry signed action links (spendwatch.notify.send). The ``digests`` row
-- stays the day's claim and lock; each message that went out is recorded here, so a retry after a
-- partial failure sends only the parts that did not.
CREATE TABLE digest_parts (
    day        DATE NOT NULL,
    part       VARCHAR NOT NULL,          -- "finops", "team:<name>", plus ":<recipient>" with links
    message_id VARCHAR NOT NULL,
    recipients VARCHAR NOT NULL,
    sent_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (day, part)
);

-- Signed action links (spendwatch.notify.links): a link's id is recorded when it is used, so it
-- works once. The journal (incidents' feedback, the kill switch's action_events) records the act.
CREATE TABLE action_links_used (
    link_id    VARCHAR PRIMARY KEY,
    recipient  VARCHAR NOT NULL,
    verb       VARCHAR NOT NULL,
    subject    VARCHAR NOT NULL,          -- "incident:<id>" or "action:<id>"
    used_at    TIMESTAMPTZ NOT NULL,
    outcome    VARCHAR NOT NULL
);

-- Budget alerts fire once per budget and month (key budget:<name>:<YYYY-MM> in alerts_sent);
-- nothing to add here: alerts_sent is the ledger.

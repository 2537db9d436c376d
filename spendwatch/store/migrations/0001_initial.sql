-- spendwatch store, schema version 1. Timestamps are TIMESTAMPTZ read in UTC.

CREATE TABLE cost_lines (
    source              VARCHAR NOT NULL,
    batch_id            VARCHAR NOT NULL,
    provider            VARCHAR NOT NULL,
    billing_account_id  VARCHAR,
    sub_account_id      VARCHAR,
    sub_account_name    VARCHAR,
    service_name        VARCHAR,
    service_category    VARCHAR,
    sku_id              VARCHAR,
    region_id           VARCHAR,
    resource_id         VARCHAR,
    resource_name       VARCHAR,
    charge_category     VARCHAR NOT NULL,
    charge_frequency    VARCHAR,
    charge_description  VARCHAR,
    charge_period_start TIMESTAMPTZ NOT NULL,
    charge_period_end   TIMESTAMPTZ NOT NULL,
    billed_cost         DOUBLE NOT NULL,
    effective_cost      DOUBLE NOT NULL,
    list_cost           DOUBLE,
    billing_currency    VARCHAR NOT NULL,
    tags                MAP(VARCHAR, VARCHAR),
    owner               VARCHAR,
    job_id              VARCHAR,
    is_estimated        BOOLEAN
);

-- One row per (source, period) load: what replaced what, for idempotency and freshness.
CREATE TABLE loads (
    source        VARCHAR NOT NULL,
    period_start  TIMESTAMPTZ NOT NULL,
    period_end    TIMESTAMPTZ NOT NULL,
    batch_id      VARCHAR NOT NULL,
    loaded_at     TIMESTAMPTZ NOT NULL,
    row_count     BIGINT NOT NULL,
    billed_total  DOUBLE NOT NULL,
    data_end      TIMESTAMPTZ,
    fingerprint   VARCHAR,
    PRIMARY KEY (source, period_start, period_end)
);

CREATE TABLE jobs (
    platform            VARCHAR NOT NULL,
    job_id              VARCHAR NOT NULL,
    source              VARCHAR NOT NULL,
    provider            VARCHAR NOT NULL,
    sub_account_id      VARCHAR,
    region_id           VARCHAR,
    name                VARCHAR,
    "user"              VARCHAR,
    owner               VARCHAR,
    owner_source        VARCHAR,
    state               VARCHAR NOT NULL,
    start_time          TIMESTAMPTZ,
    end_time            TIMESTAMPTZ,
    query_text          VARCHAR,
    query_hash          VARCHAR,
    bytes_processed     BIGINT,
    bytes_billed        BIGINT,
    slot_ms             BIGINT,
    instance_type       VARCHAR,
    instance_count      BIGINT,
    max_runtime_seconds BIGINT,
    estimated_cost      DOUBLE,
    projected_cost      DOUBLE,
    cost_method         VARCHAR,
    billing_currency    VARCHAR NOT NULL,
    resource_id         VARCHAR,
    labels              MAP(VARCHAR, VARCHAR),
    first_seen          TIMESTAMPTZ NOT NULL,
    last_seen           TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (platform, job_id)
);

CREATE SEQUENCE anomaly_ids START 1;
CREATE TABLE anomalies (
    id              BIGINT PRIMARY KEY DEFAULT nextval('anomaly_ids'),
    monitor         VARCHAR NOT NULL,
    granularity     VARCHAR NOT NULL,
    series_key      VARCHAR NOT NULL,
    dimensions      VARCHAR NOT NULL,   -- JSON object: dimension -> value
    billing_currency VARCHAR NOT NULL,
    kind            VARCHAR NOT NULL,
    status          VARCHAR NOT NULL,
    severity        VARCHAR NOT NULL,
    first_seen      TIMESTAMPTZ NOT NULL,
    last_seen       TIMESTAMPTZ NOT NULL,
    resolved_at     TIMESTAMPTZ,
    peak_at         TIMESTAMPTZ NOT NULL,
    peak_actual     DOUBLE NOT NULL,
    peak_expected   DOUBLE NOT NULL,
    peak_score      DOUBLE NOT NULL,
    actual_total    DOUBLE NOT NULL,
    expected_total  DOUBLE NOT NULL,
    impact          DOUBLE NOT NULL,
    impact_pct      DOUBLE NOT NULL,
    contributors    VARCHAR NOT NULL DEFAULT '[]',   -- JSON list
    jobs            VARCHAR NOT NULL DEFAULT '[]',   -- JSON list
    points          VARCHAR NOT NULL DEFAULT '[]',   -- JSON list: recent actual/expected/band, for charts
    feedback        VARCHAR,
    feedback_by     VARCHAR,
    feedback_at     TIMESTAMPTZ,
    feedback_note   VARCHAR,
    alerted_at      TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    UNIQUE (monitor, granularity, series_key, first_seen)
);

-- Non-usage charges (fees, credits, taxes, purchases) are reported, not scored.
CREATE TABLE charges_seen (
    day             DATE NOT NULL,
    provider        VARCHAR NOT NULL,
    sub_account_id  VARCHAR,
    service_name    VARCHAR,
    charge_category VARCHAR NOT NULL,
    billing_currency VARCHAR NOT NULL,
    amount          DOUBLE NOT NULL
);

-- Where a monitor's series should forget their history (feedback: "expected" level change).
CREATE TABLE baselines (
    monitor     VARCHAR NOT NULL,
    granularity VARCHAR NOT NULL,
    series_key  VARCHAR NOT NULL,
    rebase_at   TIMESTAMPTZ NOT NULL,
    anomaly_id  BIGINT,
    PRIMARY KEY (monitor, granularity, series_key)
);

CREATE SEQUENCE action_ids START 1;
CREATE TABLE actions (
    id              BIGINT PRIMARY KEY DEFAULT nextval('action_ids'),
    idempotency_key VARCHAR NOT NULL UNIQUE,
    rule            VARCHAR NOT NULL,
    anomaly_id      BIGINT,
    verb            VARCHAR NOT NULL,
    mode            VARCHAR NOT NULL,
    state           VARCHAR NOT NULL,
    provider        VARCHAR NOT NULL,
    resource_type   VARCHAR NOT NULL,
    resource_id     VARCHAR NOT NULL,
    account         VARCHAR,
    region          VARCHAR,
    owner           VARCHAR,
    reason          VARCHAR NOT NULL,
    saving_per_hour DOUBLE,
    at_stake        DOUBLE,
    reversible      BOOLEAN NOT NULL,
    plan            VARCHAR NOT NULL DEFAULT '{}',
    prior_state     VARCHAR,
    result          VARCHAR,
    error           VARCHAR,
    planned_at      TIMESTAMPTZ NOT NULL,
    expires_at      TIMESTAMPTZ,
    decided_at      TIMESTAMPTZ,
    decided_by      VARCHAR,
    started_at      TIMESTAMPTZ,
    finished_at     TIMESTAMPTZ,
    undone_at       TIMESTAMPTZ,
    notified_state  VARCHAR,
    updated_at      TIMESTAMPTZ NOT NULL
);

-- Append-only audit log of every action state change.
CREATE SEQUENCE action_event_ids START 1;
CREATE TABLE action_events (
    id        BIGINT PRIMARY KEY DEFAULT nextval('action_event_ids'),
    action_id BIGINT NOT NULL,
    event_at  TIMESTAMPTZ NOT NULL,
    state     VARCHAR NOT NULL,
    actor     VARCHAR NOT NULL,
    detail    VARCHAR NOT NULL DEFAULT '{}'
);

CREATE SEQUENCE run_ids START 1;
CREATE TABLE runs (
    id          BIGINT PRIMARY KEY DEFAULT nextval('run_ids'),
    job         VARCHAR NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    status      VARCHAR NOT NULL,
    row_count   BIGINT,
    detail      VARCHAR NOT NULL DEFAULT '{}',
    error       VARCHAR
);

CREATE TABLE digests (
    day          DATE PRIMARY KEY,
    status       VARCHAR NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    rendered_at  TIMESTAMPTZ,
    sent_at      TIMESTAMPTZ,
    recipients   VARCHAR,
    message_id   VARCHAR,
    error        VARCHAR
);

-- Small per-source state: manifest fingerprints, API call budgets, cursors.
CREATE TABLE source_state (
    source     VARCHAR NOT NULL,
    key        VARCHAR NOT NULL,
    value      VARCHAR NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, key)
);

CREATE TABLE settings (
    key        VARCHAR PRIMARY KEY,
    value      VARCHAR NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    updated_by VARCHAR
);

-- Immediate alerts sent, for deduplication per incident / action state.
CREATE TABLE alerts_sent (
    key      VARCHAR NOT NULL,
    channel  VARCHAR NOT NULL,
    sent_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (key, channel)
);

-- GCP billing accounts and the projects linked to them, written by the gcp-billing-accounts source
-- (each run replaces its own rows in one transaction). Read them through
-- spendwatch.collectors.gcp_billing: gcp_projects(store), billing_enabled_projects(store).
-- Project display names come from the billing export (cost_lines.sub_account_name).

CREATE TABLE gcp_billing_accounts (
    source                    VARCHAR NOT NULL,
    billing_account_id        VARCHAR NOT NULL,   -- 012345-6789AB-CDEF01 (without "billingAccounts/")
    display_name              VARCHAR,
    open                      BOOLEAN NOT NULL,
    master_billing_account_id VARCHAR,            -- reseller parent, if any
    currency_code             VARCHAR,
    seen_at                   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, billing_account_id)
);

CREATE TABLE gcp_projects (
    source             VARCHAR NOT NULL,
    project_id         VARCHAR NOT NULL,
    billing_account_id VARCHAR,                   -- null when billing is disabled
    billing_enabled    BOOLEAN NOT NULL,
    seen_at            TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, project_id)
);

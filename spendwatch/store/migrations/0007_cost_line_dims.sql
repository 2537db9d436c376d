-- Cost lines as two tables and a view (issue 17): writing a 20M-line month into the 50-column
-- cost_lines table cost ~45 CPU-s, most of it the columns lines share. Now those shared columns (keys,
-- tags, owner, job, the FOCUS descriptors) are kept once per distinct combination in cost_line_dims,
-- under a dim_id, and each line keeps only its own columns and that dim_id in cost_line_rows. The view
-- cost_lines is their join, with the old table's columns in the old order: every reader is unchanged;
-- writers (spendwatch.store.Store.replace_cost_lines) write the two tables.
-- spendwatch.store.schema.LINE_DIM_COLUMNS / LINE_ROW_COLUMNS name the split. A dims row no line uses
-- any more (its lines replaced or deleted) is harmless: nothing reads cost_line_dims but the view's join.

CREATE TABLE cost_line_dims (
    dim_id                       BIGINT PRIMARY KEY,
    provider                     VARCHAR NOT NULL,
    billing_account_id           VARCHAR,
    sub_account_id               VARCHAR,
    service_name                 VARCHAR,
    sku_id                       VARCHAR,
    region_id                    VARCHAR,
    charge_category              VARCHAR NOT NULL,
    charge_frequency             VARCHAR,
    billing_currency             VARCHAR NOT NULL,
    tags                         MAP(VARCHAR, VARCHAR),
    owner                        VARCHAR,
    job_id                       VARCHAR,
    k8s_cluster                  VARCHAR,
    k8s_namespace                VARCHAR,
    k8s_workload                 VARCHAR,
    billing_account_name         VARCHAR,
    billing_period_start         TIMESTAMPTZ,
    billing_period_end           TIMESTAMPTZ,
    charge_class                 VARCHAR,
    availability_zone            VARCHAR,
    region_name                  VARCHAR,
    resource_type                VARCHAR,
    sku_price_id                 VARCHAR,
    pricing_category             VARCHAR,
    pricing_unit                 VARCHAR,
    consumed_unit                VARCHAR,
    commitment_discount_id       VARCHAR,
    commitment_discount_name     VARCHAR,
    commitment_discount_category VARCHAR,
    commitment_discount_status   VARCHAR,
    commitment_discount_type     VARCHAR,
    invoice_issuer_name          VARCHAR,
    publisher_name               VARCHAR
);

CREATE TABLE cost_line_rows (
    source                       VARCHAR NOT NULL,
    batch_id                     VARCHAR NOT NULL,
    dim_id                       BIGINT NOT NULL,
    resource_id                  VARCHAR,
    resource_name                VARCHAR,
    sub_account_name             VARCHAR,
    service_category             VARCHAR,
    charge_description           VARCHAR,
    charge_period_start          TIMESTAMPTZ NOT NULL,
    charge_period_end            TIMESTAMPTZ NOT NULL,
    billed_cost                  DOUBLE NOT NULL,
    effective_cost               DOUBLE NOT NULL,
    list_cost                    DOUBLE,
    is_estimated                 BOOLEAN,
    pricing_quantity             DOUBLE,
    consumed_quantity            DOUBLE,
    list_unit_price              DOUBLE,
    contracted_unit_price        DOUBLE,
    contracted_cost              DOUBLE
);

-- The existing lines: one dims row per distinct combination (NULL is a value: DISTINCT and the
-- IS NOT DISTINCT FROM join compare it so, MAP columns too), each line joined to its row.

INSERT INTO cost_line_dims
SELECT row_number() OVER () AS dim_id, *
FROM (SELECT DISTINCT
        provider, billing_account_id, sub_account_id, service_name, sku_id, region_id,
        charge_category, charge_frequency, billing_currency, tags, owner, job_id, k8s_cluster,
        k8s_namespace, k8s_workload, billing_account_name, billing_period_start, billing_period_end,
        charge_class, availability_zone, region_name, resource_type, sku_price_id, pricing_category,
        pricing_unit, consumed_unit, commitment_discount_id, commitment_discount_name,
        commitment_discount_category, commitment_discount_status, commitment_discount_type,
        invoice_issuer_name, publisher_name
      FROM cost_lines) AS shared;

INSERT INTO cost_line_rows
SELECT l.source, l.batch_id, d.dim_id,
       l.resource_id, l.resource_name, l.sub_account_name, l.service_category, l.charge_description,
       l.charge_period_start, l.charge_period_end, l.billed_cost, l.effective_cost, l.list_cost,
       l.is_estimated, l.pricing_quantity, l.consumed_quantity, l.list_unit_price,
       l.contracted_unit_price, l.contracted_cost
FROM cost_lines AS l JOIN cost_line_dims AS d
   ON l.provider IS NOT DISTINCT FROM d.provider
  AND l.billing_account_id IS NOT DISTINCT FROM d.billing_account_id
  AND l.sub_account_id IS NOT DISTINCT FROM d.sub_account_id
  AND l.service_name IS NOT DISTINCT FROM d.service_name
  AND l.sku_id IS NOT DISTINCT FROM d.sku_id
  AND l.region_id IS NOT DISTINCT FROM d.region_id
  AND l.charge_category IS NOT DISTINCT FROM d.charge_category
  AND l.charge_frequency IS NOT DISTINCT FROM d.charge_frequency
  AND l.billing_currency IS NOT DISTINCT FROM d.billing_currency
  AND l.tags IS NOT DISTINCT FROM d.tags
  AND l.owner IS NOT DISTINCT FROM d.owner
  AND l.job_id IS NOT DISTINCT FROM d.job_id
  AND l.k8s_cluster IS NOT DISTINCT FROM d.k8s_cluster
  AND l.k8s_namespace IS NOT DISTINCT FROM d.k8s_namespace
  AND l.k8s_workload IS NOT DISTINCT FROM d.k8s_workload
  AND l.billing_account_name IS NOT DISTINCT FROM d.billing_account_name
  AND l.billing_period_start IS NOT DISTINCT FROM d.billing_period_start
  AND l.billing_period_end IS NOT DISTINCT FROM d.billing_period_end
  AND l.charge_class IS NOT DISTINCT FROM d.charge_class
  AND l.availability_zone IS NOT DISTINCT FROM d.availability_zone
  AND l.region_name IS NOT DISTINCT FROM d.region_name
  AND l.resource_type IS NOT DISTINCT FROM d.resource_type
  AND l.sku_price_id IS NOT DISTINCT FROM d.sku_price_id
  AND l.pricing_category IS NOT DISTINCT FROM d.pricing_category
  AND l.pricing_unit IS NOT DISTINCT FROM d.pricing_unit
  AND l.consumed_unit IS NOT DISTINCT FROM d.consumed_unit
  AND l.commitment_discount_id IS NOT DISTINCT FROM d.commitment_discount_id
  AND l.commitment_discount_name IS NOT DISTINCT FROM d.commitment_discount_name
  AND l.commitment_discount_category IS NOT DISTINCT FROM d.commitment_discount_category
  AND l.commitment_discount_status IS NOT DISTINCT FROM d.commitment_discount_status
  AND l.commitment_discount_type IS NOT DISTINCT FROM d.commitment_discount_type
  AND l.invoice_issuer_name IS NOT DISTINCT FROM d.invoice_issuer_name
  AND l.publisher_name IS NOT DISTINCT FROM d.publisher_name;

DROP TABLE cost_lines;

CREATE VIEW cost_lines AS
SELECT r.source, r.batch_id,
       d.provider, d.billing_account_id, d.sub_account_id, r.sub_account_name, d.service_name,
       r.service_category, d.sku_id, d.region_id, r.resource_id, r.resource_name, d.charge_category,
       d.charge_frequency, r.charge_description, r.charge_period_start, r.charge_period_end,
       r.billed_cost, r.effective_cost, r.list_cost, d.billing_currency, d.tags, d.owner, d.job_id,
       r.is_estimated, d.k8s_cluster, d.k8s_namespace, d.k8s_workload, d.billing_account_name,
       d.billing_period_start, d.billing_period_end, d.charge_class, d.availability_zone,
       d.region_name, d.resource_type, d.sku_price_id, d.pricing_category, r.pricing_quantity,
       d.pricing_unit, r.consumed_quantity, d.consumed_unit, r.list_unit_price,
       r.contracted_unit_price, r.contracted_cost, d.commitment_discount_id,
       d.commitment_discount_name, d.commitment_discount_category, d.commitment_discount_status,
       d.commitment_discount_type, d.invoice_issuer_name, d.publisher_name
FROM cost_line_rows AS r JOIN cost_line_dims AS d USING (dim_id);

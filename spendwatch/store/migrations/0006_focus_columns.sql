-- The FOCUS 1.0 columns a cost line did not keep yet (issue 18): `costs export` writes every mandatory
-- column of the FOCUS version it declares, with the source's values where it has them (the `focus`
-- source reads them all) and NULL where it does not. Names are the FOCUS column ids in snake_case;
-- spendwatch.schema.COST_LINE_SCHEMA lists them in this order (loads insert by position).
ALTER TABLE cost_lines ADD COLUMN billing_account_name VARCHAR;
ALTER TABLE cost_lines ADD COLUMN billing_period_start TIMESTAMPTZ;
ALTER TABLE cost_lines ADD COLUMN billing_period_end TIMESTAMPTZ;
ALTER TABLE cost_lines ADD COLUMN charge_class VARCHAR;
ALTER TABLE cost_lines ADD COLUMN availability_zone VARCHAR;
ALTER TABLE cost_lines ADD COLUMN region_name VARCHAR;
ALTER TABLE cost_lines ADD COLUMN resource_type VARCHAR;
ALTER TABLE cost_lines ADD COLUMN sku_price_id VARCHAR;
ALTER TABLE cost_lines ADD COLUMN pricing_category VARCHAR;
ALTER TABLE cost_lines ADD COLUMN pricing_quantity DOUBLE;
ALTER TABLE cost_lines ADD COLUMN pricing_unit VARCHAR;
ALTER TABLE cost_lines ADD COLUMN consumed_quantity DOUBLE;
ALTER TABLE cost_lines ADD COLUMN consumed_unit VARCHAR;
ALTER TABLE cost_lines ADD COLUMN list_unit_price DOUBLE;
ALTER TABLE cost_lines ADD COLUMN contracted_unit_price DOUBLE;
ALTER TABLE cost_lines ADD COLUMN contracted_cost DOUBLE;
ALTER TABLE cost_lines ADD COLUMN commitment_discount_id VARCHAR;
ALTER TABLE cost_lines ADD COLUMN commitment_discount_name VARCHAR;
ALTER TABLE cost_lines ADD COLUMN commitment_discount_category VARCHAR;
ALTER TABLE cost_lines ADD COLUMN commitment_discount_status VARCHAR;
ALTER TABLE cost_lines ADD COLUMN commitment_discount_type VARCHAR;
ALTER TABLE cost_lines ADD COLUMN invoice_issuer_name VARCHAR;
ALTER TABLE cost_lines ADD COLUMN publisher_name VARCHAR;

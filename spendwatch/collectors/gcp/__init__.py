"""Google Cloud sources: the billing export in BigQuery, billing accounts and Catalog prices, running jobs.

Each module is one piece (``export`` with ``export_sql``, ``billing``, ``jobs`` with ``bigquery_jobs``/``workloads``,
``prices``, ``common``); this file imports none of them. ``spendwatch.collectors`` imports the source modules to
register them.
"""

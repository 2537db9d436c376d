"""Amazon Web Services sources: Cost Explorer, CUR 2.0 data exports (S3/Athena), running jobs and prices.

Each module is one piece (``cost_explorer``, ``cur`` with ``cur_sql``/``cur_load``/``cur_columns``, ``athena``,
``jobs`` with ``jobs_platforms``/``cloudtrail``, ``prices``, ``charges``, ``api``); this file imports none of them,
so importing one never drags in the rest. ``spendwatch.collectors`` imports the source modules to register them.
"""

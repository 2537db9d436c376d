"""Athena pushdown: run the CUR reduction where the bill lives and fetch only the grouped rows.

For bills too big for one machine. The query is the group stage of ``aws_cur_sql`` in the Trino
dialect, over the CUR table of the Glue catalog:

* **partition-pruned** — ``billing_period = ?`` (Data Exports tables) or ``year = ? AND month = ?``
  (legacy CUR's Athena integration), so one month's query reads one month's files;
* **parameterised** — the period is passed as ``ExecutionParameters``, never pasted into the SQL;
* **capped** — with ``max_bytes_scanned`` set, the workgroup must carry a per-query bytes-scanned
  cutoff at or below it, or nothing runs (Athena then cancels a runaway scan itself).

The result (a CSV Athena writes to the workgroup's output location) is read back and merged by the
same finish stage as the direct path, so both give the same store result on the same data.
"""

from __future__ import annotations

import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from spendwatch.collectors.aws_api import AwsApi
from spendwatch.collectors.aws_cur_sql import (
    CurSql,
    Grain,
    detect_columns,
    grouped_sql,
    quote,
    resource_totals_sql,
)
from spendwatch.collectors.base import SourceContext
from spendwatch.errors import InputError, SourceError

_TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


class AthenaPushdown:
    """Runs one billing period's reduction in Athena (``config`` is the source's ``athena:`` block)."""

    def __init__(self, source: str, config: Any, api: AwsApi, context: SourceContext) -> None:
        self.source = source
        self.config = config
        self.api = api
        self.context = context
        self.athena = api.client("athena")
        self.glue = api.client("glue")
        self.s3 = api.client("s3")

    # -- the query ------------------------------------------------------------------------------

    def query(self, period_start: datetime, tag_keys: list[str], grain: Grain) -> tuple[str, list[str]]:
        """The SQL and its execution parameters for one billing period."""
        columns = self._columns()
        if columns.missing:
            raise InputError(
                f"source {self.source}: Athena table {self.config.database}.{self.config.table} is not an AWS cost "
                f"export: missing column(s) {', '.join(columns.missing)}"
            )
        table = ".".join(quote(p) for p in (self.config.catalog, self.config.database, self.config.table))
        where, params = self._partition(period_start, columns)
        normalised = CurSql(columns, tag_keys, grain, "trino").normalised(table, where)
        if grain.resources == "top":
            top = (
                f"SELECT resource_id FROM ({resource_totals_sql('SELECT * FROM n')}) AS r "
                f"ORDER BY total DESC, resource_id LIMIT {int(grain.top_resources)}"
            )
            body = grouped_sql("SELECT * FROM n", grain, len(tag_keys), top="top_resources", count=True)
            return f"WITH n AS ({normalised}), top_resources AS ({top}) {body}", params
        return grouped_sql(normalised, grain, len(tag_keys), count=True), params

    def _partition(self, period_start: datetime, columns: Any) -> tuple[str | None, list[str]]:
        if self.config.partition == "billing_period":
            return "billing_period = ?", [f"'{period_start:%Y-%m}'"]
        if self.config.partition == "year_month":
            return "year = ? AND month = ?", [f"'{period_start.year}'", f"'{period_start.month}'"]
        start = columns.names.get("line_item_usage_start_date") or columns.names.get("chargeperiodstart")
        nxt = datetime(period_start.year + (period_start.month == 12), period_start.month % 12 + 1, 1)
        return (
            f"{quote(start)} >= CAST(? AS TIMESTAMP) AND {quote(start)} < CAST(? AS TIMESTAMP)",
            [f"'{period_start:%Y-%m-%d %H:%M:%S}'", f"'{nxt:%Y-%m-%d %H:%M:%S}'"],
        )

    def _columns(self) -> Any:
        answer = self.api.call(self.glue, "GetTable", DatabaseName=self.config.database, Name=self.config.table)
        table = answer.get("Table", {})
        listed = list(table.get("StorageDescriptor", {}).get("Columns", [])) + list(table.get("PartitionKeys", []))
        names = [str(c["Name"]) for c in listed]
        maps = [str(c["Name"]) for c in listed if str(c.get("Type", "")).lower().startswith("map<")]
        return detect_columns(names, map_columns=maps)

    # -- running it -----------------------------------------------------------------------------

    def grouped_rows(self, period_start: datetime, tag_keys: list[str], grain: Grain) -> pa.Table:
        output = self._check_workgroup()
        sql, params = self.query(period_start, tag_keys, grain)
        request: dict[str, Any] = {
            "QueryString": sql,
            "QueryExecutionContext": {"Database": self.config.database, "Catalog": self.config.catalog},
            "WorkGroup": self.config.workgroup,
            "ExecutionParameters": params,
        }
        if self.config.output_location:
            request["ResultConfiguration"] = {"OutputLocation": output}
        execution_id = str(self.api.call(self.athena, "StartQueryExecution", **request)["QueryExecutionId"])
        execution = self._wait(execution_id)
        scanned = int(execution.get("Statistics", {}).get("DataScannedInBytes") or 0)
        self.context.count("aws_athena_bytes_scanned", scanned)
        self.context.progress(f"{self.source}: Athena query {execution_id} scanned {scanned / 1e9:.2f} GB")
        return self._results(execution_id, execution)

    def _check_workgroup(self) -> str | None:
        answer = self.api.call(self.athena, "GetWorkGroup", WorkGroup=self.config.workgroup)
        configuration = answer.get("WorkGroup", {}).get("Configuration", {})
        cutoff = configuration.get("BytesScannedCutoffPerQuery")
        limit = self.config.max_bytes_scanned
        if limit is not None and (cutoff is None or int(cutoff) > limit):
            have = "no per-query cutoff" if cutoff is None else f"a cutoff of {int(cutoff)} bytes"
            raise SourceError(
                f"source {self.source}: Athena workgroup {self.config.workgroup} has {have}; "
                f"athena.max_bytes_scanned asks for at most {limit} (set BytesScannedCutoffPerQuery on the workgroup)"
            )
        output = self.config.output_location or configuration.get("ResultConfiguration", {}).get("OutputLocation")
        if not output:
            raise SourceError(
                f"source {self.source}: Athena workgroup {self.config.workgroup} has no result location; "
                "set athena.output_location"
            )
        return str(output)

    def _wait(self, execution_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.config.timeout.total_seconds()
        while True:
            answer = self.api.call(self.athena, "GetQueryExecution", QueryExecutionId=execution_id)
            execution: dict[str, Any] = answer["QueryExecution"]
            status = execution.get("Status", {})
            state = str(status.get("State", ""))
            if state == "SUCCEEDED":
                return execution
            if state in _TERMINAL:
                reason = str(status.get("StateChangeReason") or "no reason given").splitlines()[0]
                raise SourceError(f"source {self.source}: Athena query {execution_id} {state.lower()}: {reason}")
            if time.monotonic() > deadline:
                self.api.call(self.athena, "StopQueryExecution", QueryExecutionId=execution_id)
                raise SourceError(
                    f"source {self.source}: Athena query {execution_id} ran past athena.timeout "
                    f"({self.config.timeout}); stopped it"
                )
            self.api.backoff.sleep(self.config.poll_interval.total_seconds())

    def _results(self, execution_id: str, execution: dict[str, Any]) -> pa.Table:
        # One small page for the column names (and to make Athena finalise the result file) …
        first = self.api.call(self.athena, "GetQueryResults", QueryExecutionId=execution_id, MaxResults=1)
        names = [str(c["Name"]) for c in first["ResultSet"]["ResultSetMetadata"]["ColumnInfo"]]
        location = str(execution.get("ResultConfiguration", {}).get("OutputLocation") or "")
        if not location.startswith("s3://"):
            raise SourceError(f"source {self.source}: Athena query {execution_id} has no s3:// result location")
        bucket, _, key = location[len("s3://") :].partition("/")
        # … and the rows from the CSV result file, which is far faster than paging GetQueryResults.
        body = self.api.call(self.s3, "GetObject", Bucket=bucket, Key=key)["Body"]
        with tempfile.TemporaryDirectory(prefix="spendwatch-athena-") as tmp:
            path = Path(tmp) / "result.csv"
            with path.open("wb") as out:
                for chunk in body.iter_chunks(chunk_size=1 << 20):
                    out.write(chunk)
            return _read_result(path, names, location)


_TYPES = {
    "period_start": "TIMESTAMP",
    "period_end": "TIMESTAMP",
    "billed_cost": "DOUBLE",
    "effective_cost": "DOUBLE",
    "list_cost": "DOUBLE",
    "is_estimated": "BOOLEAN",
    "line_items": "BIGINT",
}


def _read_result(path: Path, names: list[str], location: str) -> pa.Table:
    """Athena's CSV (header row, NULL as an empty unquoted field) → typed grouped rows."""
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        columns = "{" + ", ".join(f"'{n}': 'VARCHAR'" for n in names) + "}"
        escaped = str(path).replace("'", "''")
        source = (
            f"read_csv('{escaped}', header = true, columns = {columns}, quote = '\"', escape = '\"', "
            "allow_quoted_nulls = false)"
        )
        select = ", ".join(
            f"CAST(NULLIF({quote(n)}, '') AS {_TYPES[n]}) AS {quote(n)}" if n in _TYPES else quote(n) for n in names
        )
        return con.sql(f"SELECT {select} FROM {source}").to_arrow_table()
    except duckdb.Error as exc:
        raise InputError(f"{location}: malformed Athena result: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()

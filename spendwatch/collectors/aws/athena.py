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

from spendwatch.collectors.aws.api import AwsApi
from spendwatch.collectors.aws.cur_sql import (
    GROUPED_TYPES,
    Columns,
    CurSql,
    Grain,
    SqlParams,
    detect_columns,
    grouped_sql,
    quote,
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
        """The SQL and its execution parameters for one billing period.

        Identifiers (catalog, database, table — validated by the config — and the table's own
        column names) are quoted into the text; every value (the period, tag keys, the top-N limit)
        is an execution parameter.
        """
        columns, names = self._columns()
        if columns.missing:
            raise InputError(
                f"source {self.source}: Athena table {self._name} is not an AWS cost export: "
                f"missing column(s) {', '.join(columns.missing)}"
            )
        table = ".".join(quote(p) for p in (self.config.catalog, self.config.database, self.config.table))
        params = SqlParams()
        cur = CurSql(columns, tag_keys, grain, "trino", params=params)
        where = self._partition(period_start, columns, names, params)
        normalised = cur.normalised(table, where)
        tags = cur.tag_indices()
        if grain.resources == "top":
            limit = params.mark(str(int(grain.top_resources)))
            top = (
                f"SELECT resource_id FROM ({cur.resource_totals(table, where)}) AS r "
                f"ORDER BY total DESC, resource_id LIMIT {limit}"
            )
            absent = cur.absent()
            body = grouped_sql("SELECT * FROM n", grain, tags, top="top_resources", count=True, absent=absent)
            return params.bind(f"WITH n AS ({normalised}), top_resources AS ({top}) {body}")
        return params.bind(grouped_sql(normalised, grain, tags, count=True, absent=cur.absent()))

    @property
    def _name(self) -> str:
        return f"{self.config.database}.{self.config.table}"

    def _partition(self, period_start: datetime, columns: Columns, names: list[str], params: SqlParams) -> str | None:
        """The WHERE clause that limits the scan to the period's partition (or, unpartitioned, its rows)."""
        lowered = {n.lower() for n in names}
        wanted = {"billing_period": ["billing_period"], "year_month": ["year", "month"]}.get(self.config.partition, [])
        absent = [n for n in wanted if n not in lowered]
        if absent:
            raise InputError(
                f"source {self.source}: athena.partition is {self.config.partition} but table {self._name} has no "
                f"{' or '.join(absent)} column; set athena.partition to the table's partitioning (or none)"
            )
        if self.config.partition == "billing_period":
            return f'"billing_period" = {params.text(f"{period_start:%Y-%m}")}'
        if self.config.partition == "year_month":
            year, month = params.text(str(period_start.year)), params.text(str(period_start.month))
            return f'"year" = {year} AND "month" = {month}'
        start = columns.names.get("line_item_usage_start_date") or columns.names.get("chargeperiodstart")
        if start is None:
            raise InputError(f"source {self.source}: Athena table {self._name} has no usage start column")
        nxt = datetime(period_start.year + (period_start.month == 12), period_start.month % 12 + 1, 1)
        first, after = params.text(f"{period_start:%Y-%m-%d %H:%M:%S}"), params.text(f"{nxt:%Y-%m-%d %H:%M:%S}")
        return f"{quote(start)} >= CAST({first} AS TIMESTAMP) AND {quote(start)} < CAST({after} AS TIMESTAMP)"

    def _columns(self) -> tuple[Columns, list[str]]:
        answer = self.api.call(self.glue, "GetTable", DatabaseName=self.config.database, Name=self.config.table)
        table = answer.get("Table", {})
        listed = list(table.get("StorageDescriptor", {}).get("Columns", [])) + list(table.get("PartitionKeys", []))
        names = [str(c["Name"]) for c in listed]
        maps = [str(c["Name"]) for c in listed if str(c.get("Type", "")).lower().startswith("map<")]
        return detect_columns(names, map_columns=maps), names

    # -- running it -----------------------------------------------------------------------------

    def grouped_rows(self, period_start: datetime, tag_keys: list[str], grain: Grain) -> pa.Table:
        output = self._check_workgroup()
        sql, params = self.query(period_start, tag_keys, grain)
        request: dict[str, Any] = {
            "QueryString": sql,
            "QueryExecutionContext": {"Database": self.config.database, "Catalog": self.config.catalog},
            "WorkGroup": self.config.workgroup,
        }
        if params:
            request["ExecutionParameters"] = params
        # Always said explicitly (the workgroup's own location when none is configured): where the
        # result CSV is read from is then never in doubt.
        request["ResultConfiguration"] = {"OutputLocation": output}
        execution_id = str(self.api.call(self.athena, "StartQueryExecution", **request)["QueryExecutionId"])
        execution = self._wait(execution_id)
        scanned = int(execution.get("Statistics", {}).get("DataScannedInBytes") or 0)
        self.context.count("aws_athena_bytes_scanned", scanned)
        self.context.progress(f"{self.source}: Athena query {execution_id} scanned {scanned / 1e9:.2f} GB")
        return self._results(execution_id, execution)

    def _check_workgroup(self) -> str:
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
            f"CAST(NULLIF({quote(n)}, '') AS {GROUPED_TYPES[n]}) AS {quote(n)}" if n in GROUPED_TYPES else quote(n)
            for n in names
        )
        return con.sql(f"SELECT {select} FROM {source}").to_arrow_table()
    except duckdb.Error as exc:
        raise InputError(f"{location}: malformed Athena result: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()

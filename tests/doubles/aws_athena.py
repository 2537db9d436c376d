"""Athena for tests: moto keeps the API (executions, workgroups, result files), DuckDB runs the SQL.

moto's Athena accepts queries but does not execute them; its answers come from a queue seeded through
``/moto-api/static/athena/query-results`` (moto hands them out from ``GetQueryResults`` and writes them
as the result CSV at the execution's output location). ``DuckAthena`` hooks the boto3 session the
collector uses: when ``StartQueryExecution`` is about to be sent, it takes the exact ``QueryString`` and
``ExecutionParameters``, binds them the way Athena does (each ``?`` replaced, in order, by the text of
its parameter, which is an SQL literal), transpiles the Trino SQL to DuckDB with sqlglot and runs it
over the registered tables (the same Parquet files the S3 path reads, hive-partitioned like the Glue
table). The rows are seeded into moto formatted as Athena's CSV formats them, so the collector's
real result path reads them back.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import TokenType

from tests.doubles.waits import PATIENCE

_ATHENA_TYPES = {
    "VARCHAR": "varchar",
    "DOUBLE": "double",
    "BIGINT": "bigint",
    "INTEGER": "integer",
    "BOOLEAN": "boolean",
    "TIMESTAMP": "timestamp",
}


@dataclass(frozen=True)
class Executed:
    """One query the collector sent, and what the engine made of it."""

    query: str  # QueryString exactly as sent (Trino)
    parameters: list[str]  # ExecutionParameters exactly as sent
    bound: str  # the query with its parameters in place, as Athena runs it
    duckdb_sql: str  # ``bound`` transpiled to DuckDB
    columns: list[str]
    rows: list[tuple[Any, ...]]


def bind_parameters(query: str, parameters: list[str]) -> str:
    """Athena's parameter binding: the n-th ``?`` (outside strings and quoted names) becomes parameter n."""
    tokens = [t for t in sqlglot.Dialect.get_or_raise("trino").tokenize(query) if t.token_type == TokenType.PLACEHOLDER]
    if len(tokens) != len(parameters):
        raise ValueError(f"the query has {len(tokens)} placeholder(s) but {len(parameters)} execution parameter(s)")
    out, last = [], 0
    for token, value in zip(tokens, parameters, strict=True):
        out += [query[last : token.start], value]
        last = token.end + 1
    out.append(query[last:])
    return "".join(out)


def java_double(value: float) -> str:
    """How Athena (Java's ``Double.toString``) writes a double: ``2.0``, ``0.5``, ``9.765625E-4``."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if str(value).startswith("-") else "0.0"
    sign, size = ("-" if value < 0 else ""), abs(value)
    if 1e-3 <= size < 1e7:
        text = repr(size)
        return sign + (text if "." in text else f"{text}.0")
    exact = Decimal(repr(size)).as_tuple()
    digits = "".join(map(str, exact.digits))
    exponent = int(exact.exponent) + len(digits) - 1
    digits = digits.rstrip("0") or "0"
    return f"{sign}{digits[0]}.{digits[1:] or '0'}E{exponent}"


def athena_text(value: Any) -> str | None:
    """A value as Athena writes it in a result (``None`` is an empty, unquoted CSV field)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return java_double(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return format(value, "f")  # plain notation with the column's scale, as Athena writes decimals
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}.{value.microsecond // 1000:03d}"
    if isinstance(value, str):
        # moto writes the CSV without doubling quotes inside values (Athena does): keep tests clear of them.
        if '"' in value:
            raise ValueError(f"moto's result CSV cannot carry a double quote: {value!r}")
        return value
    raise TypeError(f"no Athena text for {type(value).__name__}")


def _athena_type(duckdb_type: str) -> str:
    kind = duckdb_type.upper()
    if kind.startswith("DECIMAL"):
        return kind.lower()
    if kind.startswith("TIMESTAMP"):
        return "timestamp"
    return _ATHENA_TYPES.get(kind, "varchar")


def glue_columns(schema: pa.Schema) -> list[dict[str, str]]:
    """Glue column definitions for a Parquet schema (what a crawler would register)."""
    out = []
    for field in schema:
        if pa.types.is_map(field.type):
            kind = "map<string,string>"
        elif pa.types.is_timestamp(field.type):
            kind = "timestamp"
        elif pa.types.is_floating(field.type):
            kind = "double"
        elif pa.types.is_decimal(field.type):
            kind = f"decimal({field.type.precision},{field.type.scale})"
        elif pa.types.is_integer(field.type):
            kind = "bigint"
        elif pa.types.is_boolean(field.type):
            kind = "boolean"
        else:
            kind = "string"
        out.append({"Name": field.name, "Type": kind})
    return out


class DuckAthena:
    """Runs the SQL sent to (moto's) Athena on DuckDB and seeds moto with the result."""

    def __init__(self, moto_endpoint: str, *, account: str = "123456789012", region: str = "us-east-1") -> None:
        self.endpoint = moto_endpoint
        self.account = account
        self.region = region
        self.con = duckdb.connect(":memory:")
        self.con.execute("SET TimeZone = 'UTC'")
        self.executed: list[Executed] = []
        self._catalogs: set[str] = set()

    def add_table(self, catalog: str, database: str, table: str, root: Path, *, partition: str | None) -> None:
        """``catalog.database.table`` over every Parquet file under ``root`` (``KEY=value`` folders)."""
        if catalog not in self._catalogs:
            self.con.execute(f"ATTACH ':memory:' AS \"{catalog}\"")
            self._catalogs.add(catalog)
        self.con.execute(f'CREATE SCHEMA IF NOT EXISTS "{catalog}"."{database}"')
        pattern = str(root / "**" / "*.parquet").replace("'", "''")
        hive = f", hive_partitioning = true, hive_types = {{'{partition}': VARCHAR}}" if partition else ""
        self.con.execute(
            f'CREATE VIEW "{catalog}"."{database}"."{table}" AS SELECT * FROM read_parquet(\'{pattern}\'{hive})'
        )

    def attach(self, session: Any) -> None:
        """Serve every ``StartQueryExecution`` made through clients of ``session``."""
        session.events.register("before-parameter-build.athena.StartQueryExecution", self._execute)

    def _execute(self, params: dict[str, Any], **_: Any) -> None:
        query = str(params["QueryString"])
        parameters = [str(p) for p in params.get("ExecutionParameters", [])]
        bound = bind_parameters(query, parameters)
        duck = sqlglot.transpile(bound, read="trino", write="duckdb")[0]
        result = self.con.execute(duck)
        description = result.description or []
        rows = result.fetchall()
        columns = [str(d[0]) for d in description]
        types = [_athena_type(str(d[1])) for d in description]
        self.executed.append(Executed(query, parameters, bound, duck, columns, rows))
        self.seed(columns, types, rows)

    def seed(self, columns: list[str], types: list[str], rows: list[tuple[Any, ...]]) -> None:
        """Queue one result in moto: header row first, as Athena's GetQueryResults and CSV have it."""
        header = {"Data": [{"VarCharValue": c} for c in columns]}
        data = [
            {"Data": [{} if (text := athena_text(v)) is None else {"VarCharValue": text} for v in row]} for row in rows
        ]
        info = [
            {"CatalogName": "hive", "SchemaName": "", "TableName": "", "Name": c, "Label": c, "Type": t}
            for c, t in zip(columns, types, strict=True)
        ]
        body = {
            "account_id": self.account,
            "region": self.region,
            "results": [{"rows": [header, *data], "column_info": info}],
        }
        _post(f"{self.endpoint}/moto-api/static/athena/query-results", body)


def set_athena_progression(endpoint: str, transition: dict[str, Any] | None) -> None:
    """moto's state manager for Athena executions (None: back to the default, immediate success)."""
    if transition is None:
        _post(f"{endpoint}/moto-api/state-manager/unset-transition", {"model_name": "athena::execution"})
    else:
        body = {"model_name": "athena::execution", "transition": transition}
        _post(f"{endpoint}/moto-api/state-manager/set-transition", body)


def _post(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=PATIENCE) as response:
        response.read()

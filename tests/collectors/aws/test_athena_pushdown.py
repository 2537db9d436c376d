"""aws-data-export with athena: the SQL spendwatch sends, run by a real engine, stores what the S3 path stores.

Glue, S3 and the Athena API are moto on 127.0.0.1. moto does not execute queries, so ``DuckAthena``
(tests/doubles/aws_athena.py) takes the exact QueryString and ExecutionParameters the collector sends,
binds them as Athena does, transpiles the Trino SQL to DuckDB with sqlglot and runs it over the same
Parquet files the S3 path downloads; the rows go back through moto's result path (GetQueryResults and
the result CSV in S3). Costs are multiples of 1/1024, so both paths must give bit-identical stores.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot
from botocore.stub import ANY, Stubber
from sqlglot import exp

from spendwatch.collect import collect_source
from spendwatch.collectors.aws.cur import DataExportConfig
from spendwatch.config import parse_config
from spendwatch.errors import ConfigError
from spendwatch.store import Store
from tests.doubles.aws_athena import DuckAthena, bind_parameters, glue_columns, java_double, set_athena_progression
from tests.doubles.aws_calls import CallLog
from tests.doubles.aws_cur import cur2_table, focus_line, focus_table, line, put_data_export
from tests.doubles.aws_cur_eks import PODS, eks_rows, split_table, workload_sums
from tests.doubles.clock import FixedClock

BUCKET, PREFIX, RESULTS = "billing-exports", "cur/cur2", "athena-results"
OCT, NOV = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
KEEP = ["team", "it's"]  # a quote in a configured key: a parameter for Athena, a literal for DuckDB


def month_rows(month: datetime, scale: int) -> list[dict[str, Any]]:
    """A month of CUR 2.0 lines: usage, a Savings Plan, tax, credit; tags in every spelling; ties avoided."""
    rows = []
    spellings = ["user_owner", "user:owner", "owner"]
    for h in range(30):
        start = month + timedelta(days=h % 28, hours=h)
        for r in range(7):
            tags = {spellings[r % 3]: f"p{r % 4}@example.com"}
            if r % 2:
                tags["user_team"] = "data, science" if r % 4 == 1 else "plattform-ü"
            account = "111111111111" if r < 4 else "222222222222"
            cost = (scale * (r + 1) * 64 + h) / 1024
            rows.append(line(start, cost, account=account, resource=f"i-{r:04d}", tags=tags))
        rows.append(line(start, -1 / 32, kind="Credit", resource=None))
    rows.append(
        line(
            month + timedelta(days=3),
            30.0,
            account="222222222222",
            product="AmazonSageMaker",
            product_name="Amazon SageMaker",
            usage_type="USE1-Train:ml.p4d.24xlarge",
            resource="arn:aws:sagemaker:us-east-1:222222222222:training-job/llm-ft",
            tags={"aws_created_by": "AssumedRole:AROAEXAMPLE:ben@example.com", "user_job": "llm-ft"},
            kind="SavingsPlanCoveredUsage",
            sp_effective=21.0,
        )
    )
    rows.append(
        line(month + timedelta(days=3), -30.0, account="222222222222", kind="SavingsPlanNegation", resource=None)
    )
    rows.append(line(month, 12.5, kind="Tax", resource=None, hours=24 * 28))
    rows.append(line(month - timedelta(hours=2), 0.75, resource="i-0000"))  # booked into the month, starts before
    return rows


class Estate:
    """Two billing periods of a Data Export in moto S3, the same files on disk, and their Glue table."""

    def __init__(
        self,
        moto: Any,
        root: Path,
        session: Any,
        rows: dict[str, list[dict[str, Any]]] | None = None,
        tabler: Callable[[list[dict[str, Any]]], pa.Table] = cur2_table,
    ) -> None:
        import boto3

        self.moto = moto
        self.root = root
        self.s3 = boto3.client("s3", endpoint_url=moto.endpoint_url, region_name="us-east-1")
        self.glue = boto3.client("glue", endpoint_url=moto.endpoint_url, region_name="us-east-1")
        self.athena = boto3.client("athena", endpoint_url=moto.endpoint_url, region_name="us-east-1")
        for bucket in (BUCKET, RESULTS):
            self.s3.create_bucket(Bucket=bucket)
        self.tabler = tabler
        self.rows = rows or {"2026-10": month_rows(OCT, 1), "2026-11": month_rows(NOV, 2)}
        schema = None
        for month, rows in self.rows.items():
            schema = self.publish(month, [rows[i::3] for i in range(3)])
        assert schema is not None
        self.glue.create_database(DatabaseInput={"Name": "cur"})
        self.glue.create_table(
            DatabaseName="cur",
            TableInput={
                "Name": "cur2",
                "StorageDescriptor": {
                    "Columns": glue_columns(schema),
                    "Location": f"s3://{BUCKET}/{PREFIX}/data/",
                    "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
                    "SerdeInfo": {
                        "SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
                    },
                },
                "PartitionKeys": [{"Name": "billing_period", "Type": "string"}],
            },
        )
        self.engine = DuckAthena(moto.endpoint_url)
        self.engine.add_table("AwsDataCatalog", "cur", "cur2", root / "data", partition="BILLING_PERIOD")
        self.engine.attach(session)

    def publish(self, month: str, parts: list[list[dict[str, Any]]]) -> pa.Schema:
        """Write the month's files to disk and to S3 (same bytes) with a new manifest."""
        folder = self.root / "data" / f"BILLING_PERIOD={month}"
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.parquet"):
            old.unlink()
        bodies = {}
        for number, part in enumerate(parts):
            table = self.tabler(part)
            sink = io.BytesIO()
            pq.write_table(table, sink, row_group_size=max(1, len(part) // 2))
            bodies[f"cur2-{number:05d}.snappy.parquet"] = sink.getvalue()
            (folder / f"cur2-{number:05d}.snappy.parquet").write_bytes(sink.getvalue())
        put_data_export(self.s3, BUCKET, PREFIX, month, bodies)
        return table.schema

    def workgroup(self, name: str = "spendwatch", cutoff: int | None = 50_000_000_000) -> None:
        configuration: dict[str, Any] = {
            "ResultConfiguration": {"OutputLocation": f"s3://{RESULTS}/{name}/"},
            "EnforceWorkGroupConfiguration": True,
        }
        if cutoff is not None:
            configuration["BytesScannedCutoffPerQuery"] = cutoff
        self.athena.create_work_group(Name=name, Configuration=configuration)


def source(moto: Any, athena: dict[str, Any] | None = None, **extra: Any) -> DataExportConfig:
    values: dict[str, Any] = {
        "name": "cur",
        "bucket": BUCKET,
        "prefix": PREFIX,
        "backfill": "90d",
        "keep_tags": KEEP,
        "aws": {"region": "us-east-1", "endpoint_url": moto.endpoint_url},
    }
    if athena is not None:
        values["athena"] = athena
    return DataExportConfig.model_validate({**values, **extra})


ATHENA = {"database": "cur", "table": "cur2", "workgroup": "spendwatch", "max_bytes_scanned": 100_000_000_000}


def stored(store: Store) -> list[tuple[Any, ...]]:
    return store.query("SELECT * EXCLUDE (batch_id) FROM cost_lines ORDER BY ALL")


@pytest.fixture
def estate(moto_server: Any, tmp_path: Path, aws_session: Any) -> Estate:
    return Estate(moto_server, tmp_path / "export", aws_session)


def test_athena_pushdown_stores_exactly_what_the_direct_s3_path_stores(
    estate: Estate, tmp_path: Path, clock: FixedClock, clients: dict[str, Any], call_log: CallLog
) -> None:
    estate.workgroup()
    direct = Store(tmp_path / "direct.duckdb", clock=clock)
    pushed = Store(tmp_path / "athena.duckdb", clock=clock)

    run = collect_source(source(estate.moto), direct, clock, clients=clients)
    assert run.ok, run.error or run.problems
    call_log.calls.clear()
    run = collect_source(source(estate.moto, ATHENA), pushed, clock, clients=clients)
    assert run.ok, run.error or run.problems

    assert len(estate.engine.executed) == 2  # one query per billing period
    assert stored(pushed) == stored(direct)
    assert len(stored(direct)) > 400
    teams = {t for (t,) in pushed.query("SELECT DISTINCT tags['team'] FROM cost_lines")}
    assert teams == {None, "data, science", "plattform-ü"}
    owners = {o for (o,) in pushed.query("SELECT DISTINCT owner FROM cost_lines")}
    assert owners == {None, "p0@example.com", "p1@example.com", "p2@example.com", "p3@example.com", "ben@example.com"}
    loads = "SELECT period_start, period_end, row_count, billed_total FROM loads ORDER BY 1, 2"
    assert pushed.query(loads) == direct.query(loads)
    # The pushdown read nothing from the export's data files: only manifests and the result CSVs.
    keys = [p["Key"] for p in call_log.operations("s3", "GetObject")]
    assert not [k for k in keys if "/data/" in k]
    assert sum(k.endswith(".csv") for k in keys) == 2
    for month, rows in estate.rows.items():
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
        end = datetime(start.year + (start.month == 12), start.month % 12 + 1, 1, tzinfo=UTC)
        total = pushed.query(
            "SELECT sum(billed_cost) FROM cost_lines WHERE charge_period_start >= ? AND charge_period_start < ?",
            [start, end],
        )[0][0]
        assert total == sum(r["line_item_unblended_cost"] for r in rows)


def test_eks_split_cost_through_athena_stores_what_the_direct_path_stores_and_the_bills_totals(
    moto_server: Any, tmp_path: Path, clock: FixedClock, clients: dict[str, Any], aws_session: Any
) -> None:
    """Pod lines carry their split + unused cost, the node's twin lines take it off: in the SQL Athena runs too."""
    rows = eks_rows(NOV + timedelta(days=3), hours=12)
    estate = Estate(moto_server, tmp_path / "export", aws_session, rows={"2026-11": rows}, tabler=split_table)
    estate.workgroup()
    k8s = {"kubernetes": {"keep_labels": ["team"]}, "owner_tags": ["owner"], "keep_tags": []}
    direct = Store(tmp_path / "direct.duckdb", clock=clock)
    pushed = Store(tmp_path / "athena.duckdb", clock=clock)

    assert collect_source(source(estate.moto, **k8s), direct, clock, clients=clients).ok
    run = collect_source(source(estate.moto, ATHENA, **k8s), pushed, clock, clients=clients)
    assert run.ok, run.error or run.problems

    [executed] = estate.engine.executed
    assert "split_line_item_split_cost" in executed.query and "split_line_item_unused_cost" in executed.query
    assert stored(pushed) == stored(direct)
    billed = sum(r["line_item_unblended_cost"] for r in rows)
    assert pushed.query("SELECT sum(billed_cost) FROM cost_lines")[0][0] == pytest.approx(billed, abs=1e-6)
    found = {
        (ns, wl, owner): cost
        for ns, wl, owner, cost in pushed.query(
            "SELECT k8s_namespace, k8s_workload, owner, sum(billed_cost) FROM cost_lines "
            "WHERE k8s_cluster = 'eks-ml-train' GROUP BY ALL"
        )
    }
    assert found == pytest.approx(workload_sums(rows))  # each workload: its pods' split + unused, from the rows
    assert len(found) == len(PODS)
    teams = {
        t
        for (t,) in pushed.query(
            "SELECT DISTINCT tags['k8s-label/team'] FROM cost_lines WHERE k8s_namespace IS NOT NULL"
        )
    }
    assert teams == {"ml"}


def test_the_query_is_partition_pruned_and_takes_every_value_as_a_parameter(
    estate: Estate, tmp_path: Path, clock: FixedClock, clients: dict[str, Any], call_log: CallLog
) -> None:
    estate.workgroup()
    run = collect_source(source(estate.moto, ATHENA), Store(tmp_path / "s.duckdb", clock=clock), clock, clients=clients)
    assert run.ok, run.error or run.problems

    [request] = [
        p for p in call_log.operations("athena", "StartQueryExecution") if "'2026-11'" in p["ExecutionParameters"]
    ]
    query, parameters = request["QueryString"], request["ExecutionParameters"]
    assert request["WorkGroup"] == "spendwatch"
    assert request["ResultConfiguration"] == {"OutputLocation": f"s3://{RESULTS}/spendwatch/"}
    # Values are parameters, never text of the query …
    assert query.count("?") == len(parameters)
    for value in ("2026-11", "user_owner", "it''s", "it's", "1000"):
        assert value not in query
    assert {"'2026-11'", "'user_owner'", "'user:owner'", "'it''s'", "1000"} <= set(parameters)
    # … and every read of the table is limited to the period's partition.
    tree = sqlglot.parse_one(query, read="trino")
    tables = [t for t in tree.find_all(exp.Table) if t.name == "cur2"]
    assert len(tables) == 2  # the lines and the resource ranking
    for table in tables:
        where = table.find_ancestor(exp.Select).args["where"]
        pruned = [
            eq
            for eq in where.find_all(exp.EQ)
            if isinstance(eq.left, exp.Column)
            and eq.left.name == "billing_period"
            and isinstance(eq.right, exp.Placeholder)
        ]
        assert len(pruned) == 1
    # Bound as Athena binds it, the query names the period; the engine read one partition's files only.
    bound = next(e.bound for e in estate.engine.executed if "'2026-11'" in e.parameters)
    assert "\"billing_period\" = '2026-11'" in bound
    plan = estate.engine.con.execute("EXPLAIN ANALYZE " + sqlglot.transpile(bound, read="trino", write="duckdb")[0])
    assert "BILLING_PERIOD=2026-10" not in plan.fetchall()[0][1]


def test_a_workgroup_without_a_bytes_scanned_cutoff_is_refused_before_any_query(
    estate: Estate, tmp_path: Path, clock: FixedClock, clients: dict[str, Any], call_log: CallLog
) -> None:
    estate.workgroup(cutoff=None)
    store = Store(tmp_path / "s.duckdb", clock=clock)

    run = collect_source(source(estate.moto, ATHENA), store, clock, clients=clients)

    assert len(run.problems) == 2 and all("\n" not in p for p in run.problems)
    assert run.problems[1] == (
        "cur 2026-11: source cur: Athena workgroup spendwatch has no per-query cutoff; athena.max_bytes_scanned "
        "asks for at most 100000000000 (set BytesScannedCutoffPerQuery on the workgroup)"
    )
    assert call_log.operations("athena", "StartQueryExecution") == []
    assert store.query("SELECT count(*) FROM cost_lines") == [(0,)]


def test_a_workgroup_cutoff_above_the_configured_maximum_is_refused(
    estate: Estate, tmp_path: Path, clock: FixedClock, clients: dict[str, Any], call_log: CallLog
) -> None:
    estate.workgroup(cutoff=200_000_000_000)
    run = collect_source(source(estate.moto, ATHENA), Store(tmp_path / "s.duckdb", clock=clock), clock, clients=clients)
    assert run.problems[0].endswith(
        "Athena workgroup spendwatch has a cutoff of 200000000000 bytes; athena.max_bytes_scanned asks for at most "
        "100000000000 (set BytesScannedCutoffPerQuery on the workgroup)"
    )
    assert call_log.operations("athena", "StartQueryExecution") == []


def test_a_query_failed_by_athena_stores_nothing_and_keeps_the_previous_load(
    estate: Estate, tmp_path: Path, clock: FixedClock, clients: dict[str, Any], aws_session: Any
) -> None:
    estate.workgroup()
    store = Store(tmp_path / "s.duckdb", clock=clock)
    assert collect_source(source(estate.moto, ATHENA), store, clock, clients=clients).ok
    before = stored(store)
    estate.publish("2026-11", [estate.rows["2026-11"][:50]])  # a restatement: November must reload

    # moto cannot fail a query: Athena's answer for a scan over the workgroup's cutoff, shape-checked.
    athena = aws_session.client("athena", region_name="us-east-1")
    stub = Stubber(athena)
    workgroup = {"Name": "spendwatch", "Configuration": {"BytesScannedCutoffPerQuery": 50_000_000_000}}
    workgroup["Configuration"]["ResultConfiguration"] = {"OutputLocation": f"s3://{RESULTS}/spendwatch/"}
    stub.add_response("get_work_group", {"WorkGroup": workgroup}, {"WorkGroup": "spendwatch"})
    stub.add_response("start_query_execution", {"QueryExecutionId": "q-1"}, ANY_START)
    reason = "Query cancelled! : Bytes scanned limit was exceeded\nat stage 3"
    stub.add_response(
        "get_query_execution",
        {"QueryExecution": {"QueryExecutionId": "q-1", "Status": {"State": "FAILED", "StateChangeReason": reason}}},
        {"QueryExecutionId": "q-1"},
    )
    stub.activate()
    run = collect_source(source(estate.moto, ATHENA), store, clock, clients={**clients, "aws:athena": athena})

    stub.assert_no_pending_responses()
    assert run.problems == [
        "cur 2026-11: source cur: Athena query q-1 failed: Query cancelled! : Bytes scanned limit was exceeded"
    ]
    assert stored(store) == before
    assert store.get_state("cur", "manifest:2026-11") is not None  # the old fingerprint: retried next run


ANY_START = {
    "QueryString": ANY,
    "QueryExecutionContext": {"Database": "cur", "Catalog": "AwsDataCatalog"},
    "WorkGroup": "spendwatch",
    "ExecutionParameters": ANY,
    "ResultConfiguration": {"OutputLocation": f"s3://{RESULTS}/spendwatch/"},
}


def test_a_query_cancelled_in_athena_is_one_problem_and_nothing_is_stored(
    estate: Estate, tmp_path: Path, clock: FixedClock, clients: dict[str, Any], aws_session: Any
) -> None:
    estate.workgroup()

    def cancel(parsed: dict[str, Any], **_: Any) -> None:  # someone stops it in the console
        estate.athena.stop_query_execution(QueryExecutionId=parsed["QueryExecutionId"])

    aws_session.events.register("after-call.athena.StartQueryExecution", cancel)
    store = Store(tmp_path / "s.duckdb", clock=clock)
    run = collect_source(source(estate.moto, ATHENA), store, clock, clients=clients)

    assert len(run.problems) == 2
    assert run.problems[0].startswith("cur 2026-10: source cur: Athena query ")
    assert run.problems[0].endswith(" cancelled: no reason given")
    assert store.query("SELECT count(*) FROM cost_lines") == [(0,)]
    assert store.get_state("cur", "manifest:2026-10") is None


@pytest.fixture
def stuck_queries(moto_server: Any) -> Any:
    set_athena_progression(moto_server.endpoint_url, {"progression": "manual", "times": 1_000_000})
    yield
    set_athena_progression(moto_server.endpoint_url, None)


def test_a_query_past_the_timeout_is_stopped_and_nothing_is_stored(
    estate: Estate, tmp_path: Path, clock: FixedClock, clients: dict[str, Any], call_log: CallLog, stuck_queries: Any
) -> None:
    estate.workgroup()
    store = Store(tmp_path / "s.duckdb", clock=clock)
    athena = {**ATHENA, "timeout": "1s", "poll_interval": "1s"}

    run = collect_source(source(estate.moto, athena), store, clock, clients=clients)

    stopped = [p["QueryExecutionId"] for p in call_log.operations("athena", "StopQueryExecution")]
    assert len(stopped) == 2
    assert (
        run.problems[0]
        == f"cur 2026-10: source cur: Athena query {stopped[0]} ran past athena.timeout (0:00:01); stopped it"
    )
    state = estate.athena.get_query_execution(QueryExecutionId=stopped[0])["QueryExecution"]["Status"]["State"]
    assert state == "CANCELLED"
    assert store.query("SELECT count(*) FROM cost_lines") == [(0,)]


def test_a_table_without_the_configured_partition_column_is_a_clear_problem(
    estate: Estate, tmp_path: Path, clock: FixedClock, clients: dict[str, Any], call_log: CallLog
) -> None:
    estate.workgroup()
    athena = {**ATHENA, "partition": "year_month"}
    run = collect_source(source(estate.moto, athena), Store(tmp_path / "s.duckdb", clock=clock), clock, clients=clients)
    assert run.problems[0] == (
        "cur 2026-10: source cur: athena.partition is year_month but table cur.cur2 has no year or month column; "
        "set athena.partition to the table's partitioning (or none)"
    )
    assert call_log.operations("athena", "StartQueryExecution") == []


def test_an_unpartitioned_table_is_limited_to_the_period_by_usage_start(
    estate: Estate, tmp_path: Path, clock: FixedClock, clients: dict[str, Any]
) -> None:
    estate.workgroup()
    direct = Store(tmp_path / "direct.duckdb", clock=clock)
    pushed = Store(tmp_path / "athena.duckdb", clock=clock)
    assert collect_source(source(estate.moto), direct, clock, clients=clients).ok
    run = collect_source(source(estate.moto, {**ATHENA, "partition": "none"}), pushed, clock, clients=clients)
    assert run.ok, run.error or run.problems
    november = next(e for e in estate.engine.executed if "'2026-12-01 00:00:00'" in e.parameters)
    assert november.parameters.count("'2026-11-01 00:00:00'") == 2  # lines and ranking: both [Nov, Dec)
    # Without a partition, the line booked into November that starts in October is in October's query.
    only_nov = "SELECT round(sum(billed_cost), 6) FROM cost_lines WHERE charge_period_start >= '2026-11-01'"
    assert pushed.query(only_nov)[0][0] == direct.query(only_nov)[0][0] - 0.75


@pytest.mark.parametrize(
    ("field", "value"),
    [("table", 'cur2" WHERE 1=1 --'), ("database", "cur db"), ("catalog", "a.b"), ("workgroup", "wg;x")],
)
def test_athena_identifiers_are_validated_when_the_config_is_loaded(tmp_path: Path, field: str, value: str) -> None:
    athena = json.dumps({"database": "cur", "table": "cur2", field: value})  # JSON is YAML
    text = f"sources:\n  - name: cur\n    type: aws-data-export\n    bucket: billing\n    athena: {athena}\n"
    with pytest.raises(ConfigError, match=rf"sources\[0\]\.athena\.{field}") as raised:
        parse_config(text, tmp_path / "c.yaml", environ={})
    assert "\n" not in str(raised.value)


def test_parameters_bind_like_athena_and_doubles_print_like_java() -> None:
    assert (
        bind_parameters("SELECT '?', \"?\", ? FROM t WHERE a = ?", ["'x'", "2"])
        == "SELECT '?', \"?\", 'x' FROM t WHERE a = 2"
    )
    with pytest.raises(ValueError, match="1 placeholder"):
        bind_parameters("SELECT ?", [])
    assert [java_double(v) for v in (2.0, 0.5, 1 / 1024, 12345678.0, -1e-05)] == [
        "2.0",
        "0.5",
        "9.765625E-4",
        "1.2345678E7",
        "-1.0E-5",
    ]


def test_athena_pushdown_of_a_focus_table_stores_what_the_direct_path_stores(
    moto_server: Any, tmp_path: Path, clock: FixedClock, clients: dict[str, Any], aws_session: Any
) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint_url, region_name="us-east-1")
    for bucket in (BUCKET, RESULTS):
        s3.create_bucket(Bucket=bucket)
    rows = []
    for h in range(40):
        tags = {"user:owner": f"p{h % 3}@example.com", "user:team": "data, science"} if h % 4 else {}
        rows.append(focus_line(NOV + timedelta(hours=h), (h + 1) / 128, resource=f"i-{h % 6}", tags=tags))
    rows.append(focus_line(NOV, 9.5, category="Tax", frequency="One-Time", resource=None, hours=24 * 30))
    rows.append(focus_line(NOV + timedelta(days=2), -2.25, category="Credit", frequency="One-Time", resource=None))
    folder = tmp_path / "export" / "data" / "BILLING_PERIOD=2026-11"
    folder.mkdir(parents=True)
    bodies = {}
    for number, part in enumerate([rows[0::2], rows[1::2]]):
        sink = io.BytesIO()
        pq.write_table(focus_table(part), sink)
        bodies[f"focus1-{number:05d}.snappy.parquet"] = sink.getvalue()
        (folder / f"focus1-{number:05d}.snappy.parquet").write_bytes(sink.getvalue())
    put_data_export(s3, BUCKET, "focus/focus1", "2026-11", bodies, export="focus1")
    glue = boto3.client("glue", endpoint_url=moto_server.endpoint_url, region_name="us-east-1")
    glue.create_database(DatabaseInput={"Name": "cur"})
    glue.create_table(
        DatabaseName="cur",
        TableInput={
            "Name": "focus1",
            "StorageDescriptor": {"Columns": glue_columns(focus_table(rows).schema)},
            "PartitionKeys": [{"Name": "billing_period", "Type": "string"}],
        },
    )
    engine = DuckAthena(moto_server.endpoint_url)
    engine.add_table("AwsDataCatalog", "cur", "focus1", tmp_path / "export" / "data", partition="BILLING_PERIOD")
    engine.attach(aws_session)
    athena = boto3.client("athena", endpoint_url=moto_server.endpoint_url, region_name="us-east-1")
    athena.create_work_group(
        Name="spendwatch",
        Configuration={
            "ResultConfiguration": {"OutputLocation": f"s3://{RESULTS}/spendwatch/"},
            "BytesScannedCutoffPerQuery": 50_000_000_000,
        },
    )

    stores = []
    for pushdown in (None, {**ATHENA, "table": "focus1"}):
        config = source(moto_server, pushdown).model_copy(update={"prefix": "focus/focus1"})
        store = Store(tmp_path / f"{'athena' if pushdown else 'direct'}.duckdb", clock=clock)
        run = collect_source(config, store, clock, clients=clients)
        assert run.ok, run.error or run.problems
        stores.append(stored(store))

    assert len(engine.executed) == 1
    assert stores[0] == stores[1]
    assert sum(row[16] for row in stores[1]) == sum(r["BilledCost"] for r in rows)  # billed_cost

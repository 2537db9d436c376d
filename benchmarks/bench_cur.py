"""Load a generated 20-million-line CUR 2.0 month from Parquet into a store, end to end, against a ceiling.

    python benchmarks/bench_cur.py                 # 20M lines, 3 interleaved rounds (default)
    python benchmarks/bench_cur.py --lines 2000000 --repeat 1   # quicker
    python benchmarks/bench_cur.py --resources all --data /tmp/cur20m   # every resource; keep the files

Generates a month of CUR 2.0 line items (25k resources over 20 accounts, hourly, with owner/job tags
in ``resource_tags``) as Parquet files (in a temporary folder, or ``--data`` to reuse them), then,
each in a fresh process so peak memory is its own, alternating for ``--repeat`` rounds:

1. **spendwatch**: ``CurLoader`` (the aws-data-export reduction, grain hourly, ``--resources``) +
   ``Store.replace_cost_lines`` of the month from the loader's Parquet file — the path
   ``aws-data-export`` takes after downloading; prints what was stored (rows, totals, an order-free
   digest of every row) so runs of different code can be compared;
2. **ceiling**: a bare DuckDB ``GROUP BY`` of the same files on the grain's keys into a table, same
   engine, same memory limit, none of the reduction's work (``run_duckdb``);
3. with ``--pandas``: a plain ``pandas.read_parquet`` + ``groupby`` (~9 GB peak at 20M lines).

Prints lines/s (wall clock and per CPU second, which load on the machine disturbs far less), peak
RSS, the load average, and same-round ratios against each baseline.
Targets (issue 17): >= 5M lines/s at <= 1 GB peak on the 20M-line month; ``resources: all`` <= 15 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

MONTH = datetime(2026, 10, 1, tzinfo=UTC)
HOURS = 31 * 24
FILE_LINES = 2_000_000


def _dict(values: list[str], indices: np.ndarray) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(indices.astype(np.int32)), pa.array(values))


def generate(folder: Path, lines: int, seed: int = 11) -> list[Path]:
    """CUR 2.0 Parquet files shaped like a real estate: every resource bills every hour.

    ``lines / 744`` resources, each owned by one of 60 people; a person works in one of 20 accounts
    and uses a few usage types, so resources share (account, service, usage type, owner) — as in a
    real bill, where that is what lets the long tail fold into few stored rows.
    """
    rng = np.random.default_rng(seed)
    resources = max(1, lines // HOURS)
    accounts = [f"{100000000000 + i}" for i in range(20)]
    products = ["AmazonEC2", "AmazonS3", "AmazonRDS", "AWSLambda", "AmazonSageMaker"]
    names = [
        "Amazon Elastic Compute Cloud",
        "Amazon Simple Storage Service",
        "Amazon Relational Database Service",
        "AWS Lambda",
        "Amazon SageMaker",
    ]
    usage = [f"USE1-BoxUsage:{f}.{s}" for f in ("m5", "c5", "r5", "g5") for s in ("large", "xlarge", "2xlarge")]
    usage += ["USE1-TimedStorage-ByteHrs", "USE1-InstanceUsage:db.r5.large", "USE1-Lambda-GB-Second"]
    usage += ["USE1-Train:ml.g5.xlarge"]
    usage_product = [0] * 12 + [1, 2, 3, 4]
    owners = [f"person{i:02d}@example.com" for i in range(60)]
    owner_usage = rng.integers(0, len(usage), (len(owners), 3))
    res_owner = rng.integers(0, len(owners), resources)
    res_usage = owner_usage[res_owner, rng.integers(0, 3, resources)]
    res_account = res_owner % len(accounts)
    res_product = np.array(usage_product)[res_usage]
    res_rate = rng.gamma(2.0, 0.2, resources)
    resource_ids = [f"arn:aws:ec2:us-east-1:{accounts[a]}:instance/i-{r:017x}" for r, a in enumerate(res_account)]
    start0 = np.datetime64(MONTH.replace(tzinfo=None), "ms")
    hours_per_file = max(1, FILE_LINES // resources)
    owner_names = np.array(owners, dtype=object)
    teams = np.array(["team-a", "team-b", "team-c"], dtype=object)
    files = []
    made = 0
    for number, first_hour in enumerate(range(0, HOURS, hours_per_file)):
        hours = np.arange(first_hour, min(HOURS, first_hour + hours_per_file))
        res = np.tile(np.arange(resources), len(hours))
        hour = np.repeat(hours, resources)
        n = len(res)
        if made + n > lines:
            res, hour, n = res[: lines - made], hour[: lines - made], lines - made
        if n <= 0:
            break
        made += n
        starts = start0 + hour.astype("timedelta64[h]")
        kind = np.where(rng.random(n) < 0.97, 0, np.where(rng.random(n) < 0.5, 1, 2))
        cost = res_rate[res] * rng.uniform(0.8, 1.2, n)
        offsets = pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32))
        keys = pa.array(np.tile(np.array(["user_owner", "user_team"], dtype=object), n), type=pa.string())
        pairs = np.stack([owner_names[res_owner[res]], teams[res_owner[res] % 3]], 1).ravel()
        table = pa.table(
            {
                "bill_payer_account_id": _dict(["999999999999"], np.zeros(n)),
                "bill_invoice_id": pa.nulls(n, pa.string()),
                "line_item_usage_account_id": _dict(accounts, res_account[res]),
                "line_item_line_item_type": _dict(["Usage", "DiscountedUsage", "SavingsPlanCoveredUsage"], kind),
                "line_item_product_code": _dict(products, res_product[res]),
                "product_product_name": _dict(names, res_product[res]),
                "line_item_usage_type": _dict(usage, res_usage[res]),
                "product_region_code": _dict(["us-east-1"], np.zeros(n)),
                "line_item_resource_id": _dict(resource_ids, res),
                "line_item_currency_code": _dict(["USD"], np.zeros(n)),
                "line_item_usage_start_date": pa.array(starts, pa.timestamp("ms")),
                "line_item_usage_end_date": pa.array(starts + np.timedelta64(1, "h"), pa.timestamp("ms")),
                "line_item_unblended_cost": pa.array(cost),
                "pricing_public_on_demand_cost": pa.array(cost * 1.3),
                "savings_plan_savings_plan_effective_cost": pa.array(np.where(kind == 2, cost * 0.7, np.nan)),
                "resource_tags": pa.MapArray.from_arrays(offsets, keys, pa.array(pairs, type=pa.string())),
            }
        )
        path = folder / f"cur2-{number:05d}.snappy.parquet"
        pq.write_table(table, path, row_group_size=250_000, compression="snappy")
        files.append(path)
    return files


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_spendwatch(folder: Path, resources: Literal["top", "all"] = "top") -> dict[str, float]:
    from spendwatch.collectors.aws.cur_files import ExportFile
    from spendwatch.collectors.aws.cur_load import CurLoader
    from spendwatch.collectors.aws.cur_sql import Grain, kept_tag_keys
    from spendwatch.collectors.base import DEFAULT_JOB_TAGS, DEFAULT_OWNER_TAGS
    from spendwatch.store import Store

    files = [ExportFile(p, p.name) for p in sorted(folder.glob("cur2-*.parquet"))]
    path = folder / "bench.duckdb"
    path.unlink(missing_ok=True)
    Path(f"{path}.wal").unlink(missing_ok=True)
    store = Store(path)
    store.migrate()
    end = datetime(2026, 11, 1, tzinfo=UTC)
    began, cpu = time.perf_counter(), cpu_seconds()
    tags = kept_tag_keys(DEFAULT_OWNER_TAGS, DEFAULT_JOB_TAGS, ["team"])
    work = Path(tempfile.mkdtemp(prefix="work-", dir=folder))  # spills and the finished lines
    with CurLoader(
        tag_keys=tags, owner_tags=DEFAULT_OWNER_TAGS, job_tags=DEFAULT_JOB_TAGS, grain=Grain(resources=resources),
        work_dir=work,
        memory_limit="1GB",
    ) as loader:  # fmt: skip
        loader.load(files)
        reduced = time.perf_counter()
        lines = loader.finish(MONTH, end)
        finished = time.perf_counter()
        # What aws-data-export does: the whole month in one replace, read from the loader's Parquet file.
        stored = store.replace_cost_lines("bench", MONTH, end, loader.lines_file()).rows
        line_items = loader.line_items
    seconds = time.perf_counter() - began
    cpu_used = cpu_seconds() - cpu
    shutil.rmtree(work, ignore_errors=True)
    assert stored == lines
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_used,
        "reduce_seconds": reduced - began,
        "finish_seconds": finished - reduced,
        "store_seconds": began + seconds - finished,
        "line_items": line_items,
        "stored": stored,
        "peak_mb": peak_mb(),
        **stored_summary(store),
    }


def stored_summary(store: Any) -> dict[str, float]:
    """What was stored, to compare runs of different code: totals and an order-free digest of every row.

    Each row's digest covers its keys, tags, owner, job and its amounts rounded to 1e-6 (the grouping
    may add a group's lines in another order, which moves the last bits, never the sixth decimal).
    """
    digest = (
        "hash(charge_period_start, charge_period_end, billing_account_id, sub_account_id, service_name, "
        "service_category, sku_id, region_id, resource_id, charge_category, charge_frequency, billing_currency, "
        "CAST(tags AS VARCHAR), owner, job_id, is_estimated, round(billed_cost, 6), round(effective_cost, 6), "
        "round(list_cost, 6))"
    )
    row = store.query(
        f"SELECT count(*), sum(billed_cost), sum(effective_cost), sum(list_cost), bit_xor({digest}) FROM cost_lines"
    )[0]
    return {"rows": row[0], "billed": row[1], "effective": row[2], "list": row[3], "digest": int(row[4] or 0)}


def run_pandas(folder: Path) -> dict[str, float]:
    import pandas as pd

    began, cpu = time.perf_counter(), cpu_seconds()
    frame = pd.concat([pd.read_parquet(p) for p in sorted(folder.glob("cur2-*.parquet"))], ignore_index=True)
    frame["hour"] = frame["line_item_usage_start_date"].dt.floor("h")
    keys = [
        "hour",
        "bill_payer_account_id",
        "line_item_usage_account_id",
        "line_item_product_code",
        "line_item_usage_type",
        "product_region_code",
        "line_item_resource_id",
        "line_item_line_item_type",
        "line_item_currency_code",
    ]
    grouped = frame.groupby(keys, observed=True, sort=False)[
        ["line_item_unblended_cost", "pricing_public_on_demand_cost"]
    ].sum()
    seconds = time.perf_counter() - began
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds() - cpu,
        "line_items": len(frame),
        "groups": len(grouped),
        "peak_mb": peak_mb(),
    }


CEILING_KEYS = (
    "bill_payer_account_id",
    "line_item_usage_account_id",
    "line_item_product_code",
    "line_item_usage_type",
    "product_region_code",
    "line_item_line_item_type",
    "line_item_currency_code",
)


def run_duckdb(folder: Path, resources: Literal["top", "all"] = "top") -> dict[str, float]:
    """The ceiling: a bare DuckDB GROUP BY of the same files on the storage grain's keys, into a table.

    Same engine, same memory limit, same threads as the reduction, none of its work: no renaming or
    casting, no charge categories, no tags, no ranking, no store. With ``resources: top`` the resource
    id is left out of the keys (the grain folds all but 1,000 resources, so it is a fair stand-in for
    the fold); with ``all`` it is in.
    """
    import duckdb

    files = ", ".join(f"'{p}'" for p in sorted(folder.glob("cur2-*.parquet")))
    keys = ["date_trunc('hour', line_item_usage_start_date)", *CEILING_KEYS]
    if resources == "all":
        keys.append("line_item_resource_id")
    began, cpu = time.perf_counter(), cpu_seconds()
    con = duckdb.connect(":memory:", config={"memory_limit": "1GB", "temp_directory": str(folder / "ceiling-spill")})
    con.execute(
        f"CREATE TABLE grouped AS SELECT {', '.join(keys)}, sum(line_item_unblended_cost) AS billed, "
        f"sum(pricing_public_on_demand_cost) AS list, count(*) AS line_items FROM read_parquet([{files}]) "
        f"GROUP BY ALL"
    )
    groups, line_items = con.execute("SELECT count(*), sum(line_items) FROM grouped").fetchone()  # type: ignore[misc]
    con.close()
    return {
        "seconds": time.perf_counter() - began,
        "cpu_seconds": cpu_seconds() - cpu,
        "line_items": line_items,
        "groups": groups,
        "peak_mb": peak_mb(),
    }


def run_floor(folder: Path, resources: Literal["top", "all"] = "top") -> dict[str, float]:
    """The floor: the least work that gives the stored rows' information, in one DuckDB statement.

    What no reduction can skip, and nothing more: with ``resources: top`` the ranking pass (resource
    id and cost) and the top 1,000 ids; then one ``GROUP BY`` on the hour, the ceiling's keys, the
    kept resource id and the two tag values read from the tag map, written straight into a table of
    a DuckDB file (as the store keeps lines), checkpointed. No renaming, casting, charge categories,
    tags map, owner, checks or hand-over between engines. Same memory limit and threads.
    """
    import duckdb

    files = ", ".join(f"'{p}'" for p in sorted(folder.glob("cur2-*.parquet")))
    source = f"read_parquet([{files}])"
    path = folder / "floor.duckdb"
    path.unlink(missing_ok=True)
    began, cpu = time.perf_counter(), cpu_seconds()
    con = duckdb.connect(":memory:", config={"memory_limit": "1GB", "temp_directory": str(folder / "floor-spill")})
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"ATTACH '{path}' AS kept")
    resource = "line_item_resource_id"
    if resources == "top":
        con.execute(
            f"CREATE TABLE top AS SELECT line_item_resource_id AS id FROM {source} GROUP BY 1 "
            "ORDER BY sum(abs(line_item_unblended_cost)) DESC LIMIT 1000"
        )
        resource = "CASE WHEN line_item_resource_id IN (SELECT id FROM top) THEN line_item_resource_id END"
    tags = [
        f"map_values(resource_tags)[list_position(map_keys(resource_tags), '{key}')] AS {key}"
        for key in ("user_owner", "user_team")
    ]
    hour = "date_trunc('hour', line_item_usage_start_date) AS hour"
    keys = [hour, *CEILING_KEYS, f"{resource} AS resource_id", *tags]
    con.execute(
        f"CREATE TABLE kept.grouped AS SELECT {', '.join(keys)}, sum(line_item_unblended_cost) AS billed, "
        f"sum(pricing_public_on_demand_cost) AS list, max(line_item_usage_end_date) AS period_end, "
        f"count(*) AS line_items FROM {source} GROUP BY ALL"
    )
    con.execute("CHECKPOINT kept")
    groups, line_items = con.execute("SELECT count(*), sum(line_items) FROM kept.grouped").fetchone()  # type: ignore[misc]
    con.close()
    seconds, cpu_used = time.perf_counter() - began, cpu_seconds() - cpu
    path.unlink(missing_ok=True)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_used,
        "line_items": line_items,
        "groups": groups,
        "peak_mb": peak_mb(),
    }


def child(mode: str, folder: Path, resources: str = "top") -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--folder", str(folder), "--resources", resources],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds of spendwatch and the baselines")
    parser.add_argument("--resources", choices=["top", "all"], default="top", help="the grain's resources setting")
    parser.add_argument("--data", type=Path, help="keep the generated files in this folder and reuse them next time")
    parser.add_argument("--no-baseline", action="store_true", help="skip the DuckDB ceiling")
    parser.add_argument("--pandas", action="store_true", help="also run the pandas baseline (~9 GB peak at 20M lines)")
    parser.add_argument("--floor", action="store_true", help="also run the floor (same information, one statement)")
    parser.add_argument("--child", choices=["spendwatch", "pandas", "duckdb", "floor"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        runners = {"spendwatch": run_spendwatch, "duckdb": run_duckdb, "floor": run_floor}
        result = runners[args.child](args.folder, args.resources) if args.child in runners else run_pandas(args.folder)
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory(prefix="spendwatch-bench-cur-") as tmp:
        folder = prepare(args.data or Path(tmp), args.lines)
        print(f"grain: hourly, resources: {args.resources}; load average {os.getloadavg()[0]:.1f} at the start")
        modes = ["spendwatch"] + ([] if args.no_baseline else ["duckdb"]) + (["floor"] if args.floor else [])
        modes += ["pandas"] if args.pandas else []
        runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
        for round_ in range(1, args.repeat + 1):
            for mode in modes:
                runs[mode].append(child(mode, folder, args.resources))
                report(f"[{round_}] {LABELS[mode]}", runs[mode][-1], mode)
        summarise(runs)


LABELS = {
    "spendwatch": "spendwatch",
    "duckdb": "DuckDB GROUP BY (ceiling)",
    "floor": "DuckDB same information, one statement (floor)",
    "pandas": "pandas read_parquet + groupby",
}


def prepare(folder: Path, lines: int) -> Path:
    """The generated month in ``folder``: made once, reused while the line count matches."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "generated.json"
    if marker.exists() and json.loads(marker.read_text()).get("lines") == lines:
        files = sorted(folder.glob("*.parquet"))
        print(f"reusing {lines:,} CUR 2.0 line items in {len(files)} Parquet files in {folder}")
        return folder
    for old in folder.glob("cur2-*.parquet"):
        old.unlink()
    began = time.perf_counter()
    files = generate(folder, lines)
    os.sync()  # the generator's writes are flushed now, not during the first measured round
    marker.write_text(json.dumps({"lines": lines}))
    size = sum(p.stat().st_size for p in files) / 1e6
    print(f"generated {lines:,} CUR 2.0 line items in {len(files)} Parquet files ({size:,.0f} MB) "
          f"in {time.perf_counter() - began:.1f}s")  # fmt: skip
    return folder


def rate(run: dict[str, float]) -> float:
    return run["line_items"] / run["seconds"]


def report(label: str, run: dict[str, float], mode: str) -> None:
    what = f"-> {run['stored']:,.0f} stored rows" if mode == "spendwatch" else f"-> {run['groups']:,.0f} groups"
    extra = ""
    if "reduce_seconds" in run:
        extra = (
            f" (reduce {run['reduce_seconds']:.2f}s, finish {run['finish_seconds']:.2f}s, "
            f"store {run['store_seconds']:.2f}s)"
        )
    print(
        f"{label}: {run['line_items']:,.0f} lines {what} in {run['seconds']:.2f}s{extra} "
        f"= {rate(run) / 1e6:.2f}M lines/s, {run['line_items'] / run['cpu_seconds'] / 1e6:.2f}M lines per CPU-s, "
        f"peak RSS {run['peak_mb']:,.0f} MB (load average {os.getloadavg()[0]:.1f})"
    )
    if "digest" in run:
        print(
            f"    stored: {run['rows']:,} rows, billed {run['billed']:,.6f}, effective {run['effective']:,.6f}, "
            f"list {run['list']:,.6f}, digest {run['digest']:016x}"
        )


def summarise(runs: dict[str, list[dict[str, float]]]) -> None:
    ours = runs["spendwatch"]
    rates = sorted(rate(r) for r in ours)
    best, median = rates[-1], statistics.median(rates)
    peak = max(r["peak_mb"] for r in ours)
    per_cpu = statistics.median(r["line_items"] / r["cpu_seconds"] for r in ours)
    print(f"spendwatch over {len(ours)} round(s): best {best / 1e6:.2f}M lines/s, median {median / 1e6:.2f}M, "
          f"{per_cpu / 1e6:.2f}M lines per CPU-s, worst peak RSS {peak:,.0f} MB")  # fmt: skip
    for mode, base in runs.items():
        if mode == "spendwatch" or not base:
            continue
        # Same-round ratios: each round's spendwatch run against the baseline run right after it.
        speed = [rate(o) / rate(b) for o, b in zip(ours, base, strict=False)]
        cpu = [o["cpu_seconds"] / b["cpu_seconds"] for o, b in zip(ours, base, strict=False)]
        print(
            f"  vs {LABELS[mode]}: median {statistics.median(speed):.2f}x its speed "
            f"(rounds: {', '.join(f'{x:.2f}' for x in speed)}), {statistics.median(cpu):.2f}x its CPU time, "
            f"peak {peak:,.0f} vs {max(r['peak_mb'] for r in base):,.0f} MB"
        )


if __name__ == "__main__":
    main()

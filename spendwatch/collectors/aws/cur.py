"""``aws-data-export``: CUR 2.0, FOCUS and legacy CUR exports in S3, optionally reduced by Athena.

Billing periods are discovered by their manifests:

* AWS Data Exports (CUR 2.0, FOCUS): ``<prefix>/metadata/BILLING_PERIOD=YYYY-MM/…-Manifest.json``,
  listing ``dataFiles`` (``s3://`` URIs);
* legacy CUR: ``<prefix>/YYYYMMDD-YYYYMMDD/<report>-Manifest.json``, listing ``reportKeys``.

A period is loaded only when its manifest changed since the last load (its fingerprint is kept in the
store). The current month and — until ``previous_month_until`` (day of month, default 15) — the
previous one are open: AWS restates them several times a day, so their manifests are read on every run;
closed months are re-read only when the manifest object itself changed (its ETag, free in the listing).

With ``athena:`` set, the files are not downloaded: the same reduction runs as SQL in Athena over the
CUR table (see ``aws_athena``), and only the grouped rows come back.

A malformed manifest or file is a ``Problem`` naming the S3 object; the period keeps its previous
data and the other periods still load.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from spendwatch.collectors.aws.api import AwsApi
from spendwatch.collectors.aws.cur_files import ExportFile
from spendwatch.collectors.aws.cur_load import CurLoader
from spendwatch.collectors.aws.cur_sql import Grain, kept_tag_keys
from spendwatch.collectors.base import SOURCES, Batch, CollectWindow, CostBatch, Problem, Source, SourceConfig
from spendwatch.collectors.k8s.costs import KubernetesLabels, label_tag
from spendwatch.config_types import ConfigPath, Duration
from spendwatch.connections import AwsConnection
from spendwatch.errors import InputError, PermissionDeniedError, SourceError
from spendwatch.plugins import StrictModel

_DATA_EXPORTS = re.compile(r"(?:^|/)metadata/BILLING_PERIOD=(\d{4})-(\d{2})/(?:[^/]+/)?[^/]+-Manifest\.json$")
_LEGACY = re.compile(r"(?:^|/)(\d{8})-(\d{8})/[^/]+-Manifest\.json$")
_DATA_SUFFIXES = (".parquet", ".snappy.parquet", ".csv.gz", ".csv", ".gz", ".csv.zip")
_ATHENA_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,254}$"  # Glue database / table names


class GrainConfig(StrictModel):
    """How finely lines are stored (see docs/aws.md: rows per month for each choice)."""

    period: Literal["hourly", "daily"] = Field(default="hourly", description="hourly feeds hourly monitors")
    resources: Literal["all", "top", "none"] = Field(
        default="top", description="keep every resource id, the top N by cost per period, or none"
    )
    top_resources: int = Field(default=1000, ge=1, le=1_000_000, description="N for resources: top")

    def grain(self) -> Grain:
        return Grain(period=self.period, resources=self.resources, top_resources=self.top_resources)


class AthenaConfig(StrictModel):
    """Run the reduction in Athena over the CUR table instead of downloading the files."""

    # Identifiers cannot be execution parameters, so they are checked here and quoted into the SQL;
    # every value (period, tag keys, limits) goes to Athena as an execution parameter.
    database: str = Field(pattern=_ATHENA_NAME, description="Glue database holding the CUR table")
    table: str = Field(pattern=_ATHENA_NAME, description="the CUR 2.0 / FOCUS / legacy CUR table (Parquet)")
    workgroup: str = Field(
        default="primary",
        pattern=r"^[A-Za-z0-9._-]{1,128}$",
        description="set a bytes-scanned cutoff on it (see max_bytes_scanned)",
    )
    catalog: str = Field(default="AwsDataCatalog", pattern=r"^[A-Za-z0-9_@-]{1,127}$")
    output_location: str | None = Field(
        default=None, pattern=r"^s3://", description="s3:// URI for results (else the workgroup's setting)"
    )
    partition: Literal["billing_period", "year_month", "none"] = Field(
        default="billing_period",
        description="billing_period='YYYY-MM' (Data Exports), year/month columns (legacy CUR), or no pruning",
    )
    max_bytes_scanned: int | None = Field(
        default=None,
        ge=10_000_000,
        description="refuse a workgroup without a per-query cutoff at or below this many bytes",
    )
    poll_interval: Duration = Field(default=timedelta(seconds=2))
    timeout: Duration = Field(default=timedelta(minutes=30))


class DataExportConfig(SourceConfig):
    type: Literal["aws-data-export"] = "aws-data-export"
    aws: AwsConnection = Field(default_factory=AwsConnection)
    bucket: str = Field(min_length=3, max_length=63, description="the export's S3 bucket")
    prefix: str = Field(
        default="", description="folder of one export: '<prefix>/<export-name>' (Data Exports) or '<prefix>/<report>'"
    )
    grain: GrainConfig = Field(default_factory=GrainConfig)
    keep_tags: list[str] = Field(
        default_factory=list, description="tag keys stored with each line besides the owner_tags and job_tags"
    )
    previous_month_until: int = Field(
        default=15, ge=1, le=28, description="re-check last month's manifest until this day of the month"
    )
    memory_limit: str = Field(default="1GB", pattern=r"^\d+(\.\d+)?\s*(KB|MB|GB|KiB|MiB|GiB)$")
    threads: int | None = Field(default=None, ge=1, le=64, description="DuckDB threads (default: all cores)")
    work_dir: ConfigPath | None = Field(default=None, description="scratch space for downloads and spills")
    athena: AthenaConfig | None = Field(default=None, description="push the reduction down to Athena")
    kubernetes: KubernetesLabels | None = Field(
        default=None,
        description="EKS split cost allocation: cluster, namespace, workload, owner (docs/kubernetes.md)",
    )

    def k8s_columns(self) -> dict[str, list[str]] | None:
        """Which tag keys name a pod line's cluster, namespace, workload and owner (EKS's aws:eks:* tags)."""
        if self.kubernetes is None or not self.kubernetes.enabled:
            return None
        labels = self.kubernetes
        return {
            "k8s_cluster": ["aws:eks:cluster-name"],
            "k8s_namespace": ["aws:eks:namespace"],
            "k8s_workload": [
                "aws:eks:workload-name",
                "aws:eks:deployment",
                *(label_tag(k) for k in labels.workload_labels),
            ],
            "owner": [label_tag(k) for k in labels.owner_labels],
        }

    def stored_tags(self) -> list[str]:
        """Tag keys kept with each line: owner, job and keep_tags, then the Kubernetes ones."""
        tags = kept_tag_keys(self.owner_tags, self.job_tags, self.keep_tags)
        k8s = self.k8s_columns()
        if k8s is None:
            return tags
        assert self.kubernetes is not None
        extra = [key for keys in k8s.values() for key in keys]
        extra += ["aws:eks:workload-type", *(label_tag(k) for k in self.kubernetes.stored_labels())]
        # Kubernetes keys may read the same export column as an owner tag (k8s-label/owner and owner):
        # they are kept under both names, since a pod's owner label and a node's owner tag differ.
        return tags + [key for key in dict.fromkeys(extra) if key not in tags]

    @field_validator("prefix")
    @classmethod
    def _strip_slashes(cls, value: str) -> str:
        return value.strip("/")


@dataclass(frozen=True)
class Manifest:
    key: str
    etag: str
    period_start: datetime
    period_end: datetime

    @property
    def month(self) -> str:
        return f"{self.period_start:%Y-%m}"


def _month_start(year: int, month: int) -> datetime:
    return datetime(year, month, 1, tzinfo=UTC)


def _next_month(moment: datetime) -> datetime:
    return datetime(moment.year + (moment.month == 12), moment.month % 12 + 1, 1, tzinfo=UTC)


def manifest_period(key: str) -> tuple[datetime, datetime] | None:
    """The billing period a manifest key belongs to, or None if the key is not a period manifest."""
    match = _DATA_EXPORTS.search(key)
    if match:
        start = _month_start(int(match.group(1)), int(match.group(2)))
        return start, _next_month(start)
    match = _LEGACY.search(key)
    if match:
        start = datetime.strptime(match.group(1), "%Y%m%d").replace(tzinfo=UTC)
        end = datetime.strptime(match.group(2), "%Y%m%d").replace(tzinfo=UTC)
        return start, end
    return None


def data_keys(manifest: bytes, bucket: str, key: str, *, prefix: str = "") -> list[tuple[str, str]]:
    """(bucket, key) of every data file a manifest lists; ``InputError`` naming the manifest if malformed.

    A manifest is data that whoever can write under the prefix controls, so every file it lists must
    be in the export's own ``bucket`` under ``prefix``; one that is not is refused, naming it.
    """
    where = f"s3://{bucket}/{key}"
    try:
        document = json.loads(manifest)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{where}: malformed manifest: not JSON ({exc.msg if hasattr(exc, 'msg') else exc})") from None
    if not isinstance(document, dict):
        raise InputError(f"{where}: malformed manifest: not a JSON object")
    files: list[tuple[str, str]] = []
    if "dataFiles" in document:
        listed = document["dataFiles"]
        if not isinstance(listed, list) or not all(isinstance(u, str) and u.startswith("s3://") for u in listed):
            raise InputError(f"{where}: malformed manifest: dataFiles must be a list of s3:// URIs")
        for uri in listed:
            target_bucket, _, target_key = uri[len("s3://") :].partition("/")
            files.append((target_bucket, target_key))
    elif "reportKeys" in document:
        listed = document["reportKeys"]
        if not isinstance(listed, list) or not all(isinstance(k, str) and k for k in listed):
            raise InputError(f"{where}: malformed manifest: reportKeys must be a list of object keys")
        target_bucket = str(document.get("bucket") or bucket)
        files.extend((target_bucket, k) for k in listed)
    else:
        raise InputError(f"{where}: malformed manifest: it lists neither dataFiles nor reportKeys")
    if not files:
        raise InputError(f"{where}: malformed manifest: it lists no data files")
    for file_bucket, file_key in files:
        outside = _outside(file_bucket, file_key, bucket, prefix)
        if outside is not None:
            raise InputError(
                f"{where}: manifest lists s3://{file_bucket}/{file_key}: {outside}; refused (only files under the "
                "export's bucket and prefix are read, and the prefix must be writable only by AWS: docs/security.md)"
            )
    bad = [k for _, k in files if not k.lower().endswith(_DATA_SUFFIXES)]
    if bad:
        raise InputError(f"{where}: malformed manifest: {bad[0]} is not a Parquet or CSV file")
    return files


def _outside(file_bucket: str, file_key: str, bucket: str, prefix: str) -> str | None:
    """Why a listed file is outside the export's bucket and prefix, or ``None``."""
    if file_bucket != bucket:
        return f"not in the export bucket {bucket}"
    if prefix and not file_key.startswith(f"{prefix}/"):
        return f"not under s3://{bucket}/{prefix}/"
    if any(part in (".", "..") for part in file_key.split("/")):
        return "a '.' or '..' path segment"
    if any(not ch.isprintable() for ch in file_key):
        return "a control character in the key"
    return None


@SOURCES.register("aws-data-export")
class DataExportSource(Source):
    config_model: ClassVar[type[SourceConfig]] = DataExportConfig
    config: DataExportConfig

    def collect(self, window: CollectWindow) -> Iterator[Batch]:
        api = AwsApi(self.name, self.config.aws, self.context)
        s3 = api.client("s3")
        manifests = self._discover(api, s3)
        if not manifests:
            raise InputError(
                f"source {self.name}: no billing-period manifests under s3://{self.config.bucket}/{self.config.prefix} "
                "(check bucket and prefix: '<prefix>/<export-name>' for Data Exports)"
            )
        for manifest in manifests:
            if manifest.period_end <= window.since or manifest.period_start > window.until:
                continue
            yield from self._period(api, s3, manifest, window.until)

    def _discover(self, api: AwsApi, s3: Any) -> list[Manifest]:
        prefix = f"{self.config.prefix}/" if self.config.prefix else ""
        newest: dict[datetime, tuple[datetime, Manifest]] = {}
        token: str | None = None
        while True:
            params: dict[str, Any] = {"Bucket": self.config.bucket, "Prefix": prefix}
            if token:
                params["ContinuationToken"] = token
            page = self._listing(api, s3, params)
            for item in page.get("Contents", []):
                key = str(item["Key"])
                period = manifest_period(key)
                if period is None:
                    continue
                modified = item.get("LastModified") or datetime.min.replace(tzinfo=UTC)
                found = Manifest(key, str(item.get("ETag", "")).strip('"'), *period)
                if period[0] not in newest or modified >= newest[period[0]][0]:
                    newest[period[0]] = (modified, found)
            token = page.get("NextContinuationToken") if page.get("IsTruncated") else None
            if not token:
                break
        return [found for _, (_, found) in sorted(newest.items())]

    def _listing(self, api: AwsApi, s3: Any, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return api.call(s3, "ListObjectsV2", **params)
        except SourceError as exc:
            if "NoSuchBucket" in str(exc):  # a typo in the config, not an AWS failure
                raise InputError(f"source {self.name}: bucket {self.config.bucket!r} does not exist") from None
            raise

    def _is_open(self, manifest: Manifest, now: datetime) -> bool:
        current = _month_start(now.year, now.month)
        if manifest.period_end > current:
            return True
        previous = _month_start(current.year - (current.month == 1), (current.month - 2) % 12 + 1)
        return manifest.period_start >= previous and now.day <= self.config.previous_month_until

    def _period(self, api: AwsApi, s3: Any, manifest: Manifest, now: datetime) -> Iterator[Batch]:
        state_key = f"manifest:{manifest.month}"
        saved = self.context.store.get_state(self.name, state_key)
        saved_etag = saved.split("|", 1)[0] if saved else None
        if saved is not None and saved_etag == manifest.etag and not self._is_open(manifest, now):
            return
        label = f"{self.name} {manifest.month}"
        try:
            body = self._read(api, s3, self.config.bucket, manifest.key)
            fingerprint = f"{manifest.etag}|{hashlib.sha256(body).hexdigest()}"
            if saved == fingerprint:
                self.context.progress(f"{label}: manifest unchanged")
                return
            files = data_keys(body, self.config.bucket, manifest.key, prefix=self.config.prefix)
            batches = self._reduce(api, s3, manifest, files)
            # Every file is downloaded and reduced before the first batch comes out, so a bad file
            # fails here, before anything of this period is written.
            first = next(batches, None)
        except PermissionDeniedError:
            raise
        except (InputError, SourceError) as exc:
            yield Problem(label, str(exc), user_error=isinstance(exc, InputError))
            return
        if first is not None:
            yield first
            yield from batches
        self.context.store.set_state(self.name, state_key, fingerprint)

    def _reduce(self, api: AwsApi, s3: Any, manifest: Manifest, files: list[tuple[str, str]]) -> Iterator[CostBatch]:
        work = Path(tempfile.mkdtemp(prefix="spendwatch-cur-", dir=self.config.work_dir))
        try:
            tags = self.config.stored_tags()
            with CurLoader(
                tag_keys=tags,
                owner_tags=self.config.owner_tags,
                job_tags=self.config.job_tags,
                grain=self.config.grain.grain(),
                work_dir=work,
                memory_limit=self.config.memory_limit,
                threads=self.config.threads,
                k8s=self.config.k8s_columns(),
            ) as loader:
                if self.config.athena is not None:
                    from spendwatch.collectors.aws.athena import AthenaPushdown

                    pushdown = AthenaPushdown(self.name, self.config.athena, api, self.context)
                    loader.add_partials(pushdown.grouped_rows(manifest.period_start, tags, self.config.grain.grain()))
                else:
                    local = self._download(api, s3, files, work)
                    loader.load(local)
                lines = loader.finish(manifest.period_start, manifest.period_end)
                self.context.count("aws_cur_line_items", loader.line_items)
                self.context.count("aws_cur_lines", lines)
                self.context.progress(
                    f"{self.name} {manifest.month}: {loader.line_items} line item(s) → {lines} stored line(s)"
                )
                # The whole period in one batch, read by the store straight from the loader's Parquet
                # file: one transaction replaces the month, and 20M lines never pass through Arrow.
                yield CostBatch(
                    manifest.period_start,
                    manifest.period_end,
                    loader.lines_file(),
                    label=f"{self.name} {manifest.month}",
                    fingerprint=manifest.etag,
                )
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _download(self, api: AwsApi, s3: Any, files: list[tuple[str, str]], work: Path) -> list[ExportFile]:
        local = []
        for number, (bucket, key) in enumerate(files):
            suffix = next((s for s in (".parquet", ".csv.gz", ".csv") if key.lower().endswith(s)), ".gz")
            if key.lower().endswith(".gz") and not key.lower().endswith(".csv.gz"):
                suffix = ".csv.gz"
            path = work / f"part-{number:05d}{suffix}"
            self.context.progress(f"{self.name}: downloading s3://{bucket}/{key}")
            try:
                answer = api.call(s3, "GetObject", Bucket=bucket, Key=key)
            except SourceError as exc:
                if "NoSuchKey" in str(exc):  # the manifest lists a file the export does not hold
                    raise InputError(f"s3://{bucket}/{key}: listed in the manifest but not in the bucket") from None
                raise
            with path.open("wb") as out:
                for chunk in answer["Body"].iter_chunks(chunk_size=1 << 20):
                    out.write(chunk)
            self.context.count("aws_cur_bytes", path.stat().st_size)
            local.append(ExportFile(path, f"s3://{bucket}/{key}"))
        return local

    def _read(self, api: AwsApi, s3: Any, bucket: str, key: str) -> bytes:
        answer = api.call(s3, "GetObject", Bucket=bucket, Key=key)
        data: bytes = answer["Body"].read()
        return data

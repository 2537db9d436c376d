"""A third-party plugin package, as another team would write it: one source, one channel, one action.

The plugin tests copy this file into a temporary package (``spendwatch_tinyplugin``) with its own
``pyproject.toml`` declaring the entry points, and install it. It uses only spendwatch's public
plugin API: the registries, the base classes, ``register_resource_type``.

* ``tiny-ledger`` (source): a CSV of ``day,account,service,cost`` rows from an in-house cloud;
* ``tiny-log`` (channel): appends each alert's title as a JSON line to a file;
* ``tiny-vm-park`` (action): parks a ``tiny-vm`` (the in-house cloud's VMs), with one option.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from spendwatch.collectors.base import SOURCES, Batch, CollectWindow, Source, SourceConfig
from spendwatch.collectors.focus import split_by_month
from spendwatch.config_types import ConfigPath
from spendwatch.errors import InputError
from spendwatch.killswitch.base import Action, Observed, Outcome, Target, register, register_resource_type
from spendwatch.notify.channels import CHANNELS, AlertMessage, Channel, ChannelConfig, Delivery
from spendwatch.plugins import StrictModel


class TinyLedgerConfig(SourceConfig):
    type: Literal["tiny-ledger"] = "tiny-ledger"
    path: ConfigPath = Field(description="the ledger CSV: day,account,service,cost")
    currency: str = Field(default="EUR", description="the ledger's currency")


@SOURCES.register("tiny-ledger")
class TinyLedger(Source):
    config_model: ClassVar[type[SourceConfig]] = TinyLedgerConfig
    config: TinyLedgerConfig

    def collect(self, window: CollectWindow) -> Iterator[Batch]:
        rows: dict[str, list[Any]] = {k: [] for k in ("start", "end", "account", "service", "cost")}
        with self.config.path.open(newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.DictReader(handle), 2):
                try:
                    start = datetime.fromisoformat(row["day"]).replace(tzinfo=UTC)
                    cost = float(row["cost"])
                except (KeyError, ValueError):
                    raise InputError(f"{self.config.path}: row {number}: not day,account,service,cost") from None
                rows["start"].append(start)
                rows["end"].append(start + timedelta(days=1))
                rows["account"].append(row["account"])
                rows["service"].append(row["service"])
                rows["cost"].append(cost)
        self.context.count("ledger_rows", len(rows["cost"]))
        lines = pa.table(
            {
                "provider": ["tinycloud"] * len(rows["cost"]),
                "sub_account_id": rows["account"],
                "service_name": rows["service"],
                "charge_category": ["Usage"] * len(rows["cost"]),
                "charge_period_start": pa.array(rows["start"], pa.timestamp("us", tz="UTC")),
                "charge_period_end": pa.array(rows["end"], pa.timestamp("us", tz="UTC")),
                "billed_cost": rows["cost"],
                "effective_cost": rows["cost"],
                "billing_currency": [self.config.currency] * len(rows["cost"]),
            }
        )
        yield from split_by_month(lines, label=self.name)


class TinyLogConfig(ChannelConfig):
    type: Literal["tiny-log"] = "tiny-log"
    path: ConfigPath = Field(description="the file alerts are appended to")


@CHANNELS.register("tiny-log")
class TinyLog(Channel):
    config_model: ClassVar[type[ChannelConfig]] = TinyLogConfig
    config: TinyLogConfig

    def send_alert(self, alert: AlertMessage) -> Delivery:
        with self.config.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"key": alert.key, "title": alert.title}) + "\n")
        return Delivery(self.name, detail=str(self.config.path))


register_resource_type("tiny-vm", "tinycloud", platforms=["tinycloud-vm"])


class ParkOptions(StrictModel):
    grace_minutes: int = Field(default=5, ge=0, le=60, description="minutes the VM gets to shut down")


@register("tiny-vm-park")
class TinyVmPark(Action):
    provider: ClassVar[str] = "tinycloud"
    resource_type: ClassVar[str] = "tiny-vm"
    verb: ClassVar[str] = "park"
    valid_origin_states: ClassVar[frozenset[str]] = frozenset({"RUNNING"})
    done_states: ClassVar[frozenset[str]] = frozenset({"PARKED"})
    reversible: ClassVar[bool] = True
    options_model = ParkOptions

    def describe(self, target: Target) -> Observed | None:
        return Observed("RUNNING", owner=target.owner)

    def execute(self, target: Target, observed: Observed) -> Outcome:
        return Outcome(f"parked {target.resource_id}", {"previous_state": observed.state})

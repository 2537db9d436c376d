"""The price table GCP job estimates use: machine types, GPUs, BigQuery bytes and slots, Dataproc.

Job records carry an *estimate* (the bill itself arrives hours later through the billing export):
machine type × count × elapsed, bytes billed × $/TiB, slot-hours × edition price. The bundled
figures are public on-demand list prices for us-central1 in USD (late 2025); they are a floor, not a
quote. Three layers, later wins:

1. ``BUNDLED`` below;
2. prices read from the Cloud Billing Catalog by the ``gcp-billing-accounts`` source (cached in the
   store, see ``gcp_billing.catalog_prices``), for the region a job runs in;
3. ``prices:`` in the source config (``PriceOverrides``), for negotiated rates or other currencies.

Machine types are priced per vCPU-hour and GiB-hour of their family (``n2-standard-8`` = 8 vCPU,
32 GiB), or by a whole-machine price for accelerator-optimised types (``a2-highgpu-1g``, ``a3-…``,
``g2-…``), plus attached GPUs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import Field

from spendwatch.plugins import StrictModel

TIB = 1 << 40
ACCELERATOR_FAMILIES = frozenset({"a2", "a3", "a4", "g2"})
HOUR_MS = 3_600_000

# GiB of memory per vCPU for the predefined shapes; n1 is the odd one out.
_SHAPES = {"standard": 4.0, "highmem": 8.0, "highcpu": 1.0, "megamem": 14.9, "ultramem": 24.0}
_N1_SHAPES = {"standard": 3.75, "highmem": 6.5, "highcpu": 0.9}
_SHARED_CORE = {
    "e2-micro": (2, 1.0),
    "e2-small": (2, 2.0),
    "e2-medium": (2, 4.0),
    "f1-micro": (1, 0.6),
    "g1-small": (1, 1.7),
}
_PREDEFINED = re.compile(
    r"^(?P<family>[a-z][a-z0-9]*)-(?P<shape>standard|highmem|highcpu|megamem|ultramem)-(?P<vcpus>\d+)"
)
_CUSTOM = re.compile(r"^(?:(?P<family>[a-z][a-z0-9]*)-)?custom-(?P<vcpus>\d+)-(?P<mib>\d+)(?:-ext)?$")


@dataclass(frozen=True)
class MachineShape:
    family: str
    vcpus: int
    memory_gib: float


def machine_shape(machine_type: str) -> MachineShape | None:
    """vCPUs and memory of a predefined or custom machine type (``None`` when unknown)."""
    name = machine_type.rsplit("/", 1)[-1].strip().lower()
    if name in _SHARED_CORE:
        vcpus, memory = _SHARED_CORE[name]
        return MachineShape(name.split("-")[0], vcpus, memory)
    custom = _CUSTOM.match(name)
    if custom:
        return MachineShape(custom["family"] or "n1", int(custom["vcpus"]), int(custom["mib"]) / 1024)
    predefined = _PREDEFINED.match(name)
    if predefined:
        family, shape, vcpus = predefined["family"], predefined["shape"], int(predefined["vcpus"])
        per_vcpu = (_N1_SHAPES if family == "n1" else _SHAPES).get(shape, 4.0)
        return MachineShape(family, vcpus, vcpus * per_vcpu)
    return None


@dataclass(frozen=True)
class PriceTable:
    currency: str = "USD"
    bigquery_on_demand_per_tib: float = 6.25
    slot_hour: dict[str, float] = field(
        default_factory=lambda: {"standard": 0.04, "enterprise": 0.06, "enterprise_plus": 0.10}
    )
    vcpu_hour: dict[str, float] = field(default_factory=dict)
    gib_hour: dict[str, float] = field(default_factory=dict)
    machine_hour: dict[str, float] = field(default_factory=dict)
    gpu_hour: dict[str, float] = field(default_factory=dict)
    dataproc_vcpu_hour: float = 0.010
    dataproc_serverless_dcu_hour: float = 0.060
    vertex_training_markup: float = 1.15
    source: str = "bundled"

    def machine_hourly(self, machine_type: str) -> float | None:
        """On-demand $/hour of one machine (without attached GPUs), or ``None`` when unknown."""
        name = machine_type.rsplit("/", 1)[-1].strip().lower()
        if name in self.machine_hour:
            return self.machine_hour[name]
        shape = machine_shape(name)
        if shape is None:
            return None
        vcpu = self.vcpu_hour.get(shape.family)
        gib = self.gib_hour.get(shape.family)
        if vcpu is None or gib is None:
            return None
        return shape.vcpus * vcpu + shape.memory_gib * gib

    @staticmethod
    def includes_gpus(machine_type: str) -> bool:
        """Accelerator-optimised types (a2, a3, a4, g2) carry their GPUs in the machine price."""
        name = machine_type.rsplit("/", 1)[-1].strip().lower()
        return name.split("-", 1)[0] in ACCELERATOR_FAMILIES

    def gpu_hourly(self, accelerator: str) -> float | None:
        name = accelerator.rsplit("/", 1)[-1].strip().lower().replace("_", "-")
        if name in self.gpu_hour:
            return self.gpu_hour[name]
        # Vertex spells them NVIDIA_TESLA_T4; Compute nvidia-tesla-t4.
        return self.gpu_hour.get(name.replace("nvidia-", "nvidia-tesla-")) or self.gpu_hour.get(
            name.replace("nvidia-tesla-", "nvidia-")
        )

    def merged(self, overrides: PriceOverrides | None, *, source: str | None = None) -> PriceTable:
        if overrides is None:
            return self
        values: dict[str, Any] = overrides.model_dump(exclude_none=True)
        for name in ("slot_hour", "vcpu_hour", "gib_hour", "machine_hour", "gpu_hour"):
            if name in values:
                values[name] = {**getattr(self, name), **values[name]}
        values["source"] = source or f"{self.source}+config"
        return replace(self, **values)


class PriceOverrides(StrictModel):
    """``prices:`` in a GCP source: any subset of the price table; maps merge key by key."""

    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    bigquery_on_demand_per_tib: float | None = Field(default=None, ge=0)
    slot_hour: dict[Literal["standard", "enterprise", "enterprise_plus"], float] | None = None
    vcpu_hour: dict[str, float] | None = Field(default=None, description="machine family → $ per vCPU-hour")
    gib_hour: dict[str, float] | None = Field(default=None, description="machine family → $ per GiB-hour")
    machine_hour: dict[str, float] | None = Field(default=None, description="machine type → $ per hour")
    gpu_hour: dict[str, float] | None = Field(default=None, description="GPU type (nvidia-l4 …) → $ per hour")
    dataproc_vcpu_hour: float | None = Field(default=None, ge=0)
    dataproc_serverless_dcu_hour: float | None = Field(default=None, ge=0)
    vertex_training_markup: float | None = Field(default=None, ge=1.0)


BUNDLED = PriceTable(
    vcpu_hour={
        "e2": 0.021811,
        "n1": 0.031611,
        "n2": 0.031611,
        "n2d": 0.027502,
        "n4": 0.030740,
        "c2": 0.033982,
        "c2d": 0.029563,
        "c3": 0.034645,
        "c3d": 0.030090,
        "t2d": 0.027502,
        "m1": 0.034806,
        "m3": 0.035810,
    },
    gib_hour={
        "e2": 0.002923,
        "n1": 0.004237,
        "n2": 0.004237,
        "n2d": 0.003686,
        "n4": 0.004120,
        "c2": 0.004555,
        "c2d": 0.003962,
        "c3": 0.004644,
        "c3d": 0.004033,
        "t2d": 0.003686,
        "m1": 0.005101,
        "m3": 0.004802,
    },
    machine_hour={
        "a2-highgpu-1g": 3.673385,
        "a2-highgpu-2g": 7.34677,
        "a2-highgpu-4g": 14.69354,
        "a2-highgpu-8g": 29.38708,
        "a2-megagpu-16g": 55.739504,
        "a2-ultragpu-1g": 5.0688,
        "a2-ultragpu-8g": 40.5504,
        "a3-highgpu-8g": 88.253,
        "a3-megagpu-8g": 88.253,
        "g2-standard-4": 0.70683,
        "g2-standard-8": 0.85362,
        "g2-standard-12": 1.00041,
        "g2-standard-16": 1.14720,
        "g2-standard-24": 2.00082,
        "g2-standard-48": 4.00164,
        "e2-micro": 0.008376,
        "e2-small": 0.016751,
        "e2-medium": 0.033503,
    },
    gpu_hour={
        "nvidia-tesla-t4": 0.35,
        "nvidia-tesla-p4": 0.60,
        "nvidia-tesla-v100": 2.48,
        "nvidia-tesla-p100": 1.46,
        "nvidia-tesla-k80": 0.45,
        "nvidia-tesla-a100": 2.934,
        "nvidia-a100-80gb": 3.93,
        "nvidia-l4": 0.56,
        "nvidia-h100-80gb": 11.06,
        "nvidia-h100-mega-80gb": 11.06,
    },
)

"""The detection model: robust seasonal forecast, robust z, and a materiality gate.

Each decided column ``t`` is a pure function of the columns ``<= t`` (its trailing window, plus
the same calendar day of earlier billing periods and the weeks around it, for recurring charges).
There is no state carried from step to step, so deciding only the newest column gives exactly the
decision a full walk-forward makes at that column - the fleet scan and the backtest cannot disagree.
See docs/detection.md for the reasoning behind each rule.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from spendwatch.detect.charges import charge_lookups, declared_expectation, learnt_log_ratio, with_declared
from spendwatch.detect.clocks import (
    COMMON_ZONES,
    LocalClock,
    changed_within,
    check_zone,
    choose_clock,
    clock_advantage,
    local_clocks,
    local_grid,
    merge_local,
)
from spendwatch.detect.kinds import Kind
from spendwatch.detect.robust import BoolArray, FloatArray
from spendwatch.detect.scoring import LEAK_BLOCKS, Decision, Thresholds, decide
from spendwatch.detect.seasonal import Forecast, IntArray, WindowSpec, forecast
from spendwatch.detect.sustained import SustainedLimits
from spendwatch.detect.tails import TailSpec, routine_high

Granularity = Literal["daily", "hourly"]

ROW_BLOCK_CELLS = 500_000
"""Panel cells (series x steps) decided at once: a block's working arrays (a few MB each) stay in the
CPU's caches, where the element-wise passes over the whole panel ran from main memory. A 100k-series
fleet scan takes ~0.8x the time of one block and a third of its memory (``benchmarks/README.md``); the
result is the same to the last bit, because each series is decided from its own row only."""

SUSTAINED_REFERENCE = {"daily": 28, "hourly": 7 * 24}
"""Steps before the sustained test's span whose median level is its reference (four weeks, one week)."""

_DEFAULTS: dict[str, dict[str, float | int]] = {
    "daily": {
        "min_impact_abs": 10.0,
        "min_impact_pct": 0.3,
        "season_cycles": 8,
        "level_points": 7,
        "min_history": 14,
        "sustained_span": 9,
        "tail_count": 3,
    },
    "hourly": {
        "min_impact_abs": 2.0,
        "min_impact_pct": 0.3,
        "season_cycles": 21,
        "level_points": 24,
        "min_history": 72,
        "sustained_span": 11,
        "tail_count": 0,
    },
}


@dataclass(frozen=True)
class ModelParams:
    """Every knob of the detector. Use :meth:`for_granularity` for sensible defaults."""

    granularity: Granularity
    sensitivity: float = 1.0  # divides every z threshold: 2.0 alerts on half the surprise
    min_impact_abs: float | None = None  # $ per step over expected; None -> granularity default
    min_impact_pct: float | None = None  # fraction over expected; None -> granularity default
    z_threshold: float = 5.0  # robust z an upward step must exceed (at sensitivity 1)
    spread_z: float = 3.0  # an intermittent job's spike must also exceed this many sigmas of its runs' spread
    sustained_z: float = 3.0  # robust z a leak must have risen over the long level
    leak_step_z: float = 1.5  # robust z the level must rise by from block to block to be a leak
    leak_block: int = 4  # steps per block when looking for a level rising block after block
    season_cycles: int | None = None  # window length in cycles (weeks for daily, days for hourly)
    level_points: int | None = None  # observed points the short level is the median of
    min_history: int | None = None  # observed non-zero points needed before deciding
    recurrence_months: int = 3  # previous months a monthly charge is learnt from (daily; 0 = no charges)
    intermittent_zero_share: float = 0.2  # above this share of zeros a zero is "job idle", not a drop
    scale_floor_pct: float = 0.02  # floor on the robust sigma as a fraction of the expected cost
    additive_gate: float = 0.5  # sigmas an offset must out-explain a ratio by to forecast additively
    sustained_run_length: float = 1000.0  # steps between CUSUM false alarms on noise at the reference cost
    sustained_reference: float = 100_000.0  # $ per day at which sustained_run_length applies
    sustained_cap: float = 2.5  # largest increment (sigmas) one step adds to the CUSUM
    sustained_span: int | None = None  # steps the CUSUM reads before the decided one; None -> default
    time_zones: tuple[str, ...] = COMMON_ZONES  # local clocks an hourly series is tried against (and UTC)
    clock_gate: float = 0.5  # sigmas a local clock must out-explain UTC by (hourly)
    tail_days: int = 365  # steps of history a series' routine one-day bumps are learnt from
    tail_count: int | None = None  # that many bumps as big make a spike routine (0 = off); None -> default
    history_cut: bool = False  # the data goes back before the panel's first column (the daemon's history window)

    def __post_init__(self) -> None:
        if self.granularity not in _DEFAULTS:
            raise ValueError(f"granularity must be 'daily' or 'hourly', not {self.granularity!r}")
        if not self.sensitivity > 0:
            raise ValueError(f"sensitivity must be > 0, got {self.sensitivity}")
        negative = [f for f in ("min_impact_abs", "min_impact_pct") if (getattr(self, f) or 0) < 0]
        if negative:
            raise ValueError(f"{negative[0]} must be >= 0, got {getattr(self, negative[0])}")
        if not self.additive_gate >= 0:
            raise ValueError(f"additive_gate must be >= 0 (inf = never additive), got {self.additive_gate}")
        if self.tail_days < 1 or (self.tail_count or 0) < 0:
            raise ValueError(f"tail_days must be >= 1 and tail_count >= 0, got {self.tail_days}, {self.tail_count}")
        if not self.clock_gate >= 0:
            raise ValueError(f"clock_gate must be >= 0, got {self.clock_gate}")
        for zone in self.time_zones:
            check_zone(zone)

    @classmethod
    def for_granularity(
        cls, granularity: Granularity, **overrides: float | int | bool | tuple[str, ...] | None
    ) -> ModelParams:
        """Parameters with the granularity's defaults filled in, then ``overrides`` applied."""
        if granularity not in _DEFAULTS:
            raise ValueError(f"granularity must be 'daily' or 'hourly', not {granularity!r}")
        filled: dict[str, float | int | bool | tuple[str, ...] | None] = dict(_DEFAULTS[granularity])
        filled.update({k: v for k, v in overrides.items() if v is not None})
        return cls(granularity=granularity, **filled)  # type: ignore[arg-type]

    def resolved(self) -> ModelParams:
        """These parameters with every ``None`` replaced by the granularity default."""
        defaults = _DEFAULTS[self.granularity]
        missing = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        return replace(self, **missing)  # type: ignore[arg-type]

    def window_spec(self) -> WindowSpec:
        full = self.resolved()
        hourly = self.granularity == "hourly"
        return WindowSpec(
            cycle=24 if hourly else 7,
            n_cycles=int(full.season_cycles or 0),
            weekly_cycles=7 if hourly else 0,
            level_points=int(full.level_points or 0),
            min_points=int(full.min_history or 0),
            additive_gate=self.additive_gate,
            scale_floor=self.scale_floor_pct,
            sustained_span=int(full.sustained_span or 0),
            sustained_reference=SUSTAINED_REFERENCE[self.granularity],
        )

    def tail_spec(self) -> TailSpec:
        full = self.resolved()
        # Only a bump the materiality gate would have flagged can be a charge the charge rule learnt.
        return TailSpec(
            days=self.tail_days,
            count=int(full.tail_count or 0),
            charge_log=float(np.log1p(full.min_impact_pct or 0.0)),
        )

    def thresholds(self) -> Thresholds:
        full = self.resolved()
        return Thresholds(
            z=self.z_threshold / self.sensitivity,
            spread_z=self.spread_z / self.sensitivity,
            sustained_z=self.sustained_z / self.sensitivity,
            leak_step_z=self.leak_step_z / self.sensitivity,
            min_abs=float(full.min_impact_abs or 0.0),
            min_pct=float(full.min_impact_pct or 0.0),
            scale_floor_pct=self.scale_floor_pct,
            intermittent_zero_share=self.intermittent_zero_share,
            hourly=self.granularity == "hourly",
            sustained=SustainedLimits(
                allowance=0.5 * float(np.log1p(full.min_impact_pct or 0.0)),
                run_length=self.sustained_run_length / self.sensitivity,
                reference_cost=self.sustained_reference / (24.0 if self.granularity == "hourly" else 1.0),
                cap=self.sustained_cap,
                min_abs=float(full.min_impact_abs or 0.0),
                step_z=self.z_threshold / self.sensitivity,
            ),
            history_cut=self.history_cut,
        )


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@dataclass(frozen=True)
class DetectionResult:
    """Decisions for columns ``start .. start + n_decided - 1``; arrays are (n_series, n_decided).

    ``score`` is the signed robust z (log scale) of the step against ``expected`` (NaN where
    the step is missing, not a positive cost, or there is not enough history); ``upper`` is
    the lowest cost that alerts as a spike, ``lower`` the highest that counts as a drop, at the
    configured sensitivity and materiality; ``kind`` holds :class:`Kind` values (int8).
    """

    start: int
    expected: FloatArray
    lower: FloatArray
    upper: FloatArray
    score: FloatArray
    is_anomaly: BoolArray
    kind: np.ndarray
    is_drop: BoolArray

    def __post_init__(self) -> None:
        for name in ("expected", "lower", "upper", "score", "is_anomaly", "kind", "is_drop"):
            _read_only(getattr(self, name))


class Detector:
    """Vectorised walk-forward detector over a (n_series, n_steps) panel."""

    def __init__(self, params: ModelParams) -> None:
        self.params = params.resolved()
        self._spec = self.params.window_spec()
        self._thresholds = self.params.thresholds()
        self._recent = LEAK_BLOCKS * self.params.leak_block
        self._tails = self.params.tail_spec()

    def fit(
        self,
        values: np.ndarray,
        timestamps: np.ndarray,
        *,
        decide_from: int = 0,
        rebase_at: np.ndarray | None = None,
        declared: np.ndarray | None = None,
    ) -> DetectionResult:
        """Decide columns ``decide_from .. n_steps-1``, each from columns ``<=`` itself only.

        ``values`` is float (n_series, n_steps), NaN = missing; ``timestamps`` the (n_steps,)
        UTC column starts; ``rebase_at`` per series: history before that column is not used
        for the level (-1 = no rebase). ``declared`` (same shape as ``values``, optional) is the
        part of each cost the bill itself calls a recurring charge (FOCUS ``ChargeFrequency``),
        NaN where the bill does not say: such charges are kept out of the usage model and judged
        against their own earlier occurrences (:mod:`spendwatch.detect.charges`).
        """
        panel = np.asarray(values, dtype=np.float64)
        if panel.ndim != 2:
            raise ValueError(f"values must be 2-D (n_series, n_steps), got shape {panel.shape}")
        n_series, n_steps = panel.shape
        if len(timestamps) != n_steps:
            raise ValueError(f"timestamps has {len(timestamps)} entries for {n_steps} columns")
        if not 0 <= decide_from <= n_steps:
            raise ValueError(f"decide_from must be within 0..{n_steps}, got {decide_from}")
        rebase = self._rebase(rebase_at, n_series)
        charges = self._declared(declared, panel.shape)
        decided = np.arange(decide_from, n_steps, dtype=np.int64)
        stamps = np.asarray(timestamps)
        months = self.params.recurrence_months if self.params.granularity == "daily" else 0
        earlier = charge_lookups(stamps, decided, months)
        plan = _Columns(
            stamps=stamps,
            decided=decided,
            earlier=earlier,
            # The zones' hour grids depend on the timestamps only: made once, not once per block.
            clocks=local_clocks(stamps, self.params.time_zones) if self.params.granularity == "hourly" else [],
        )
        rows = max(1, ROW_BLOCK_CELLS // max(1, n_steps))
        blocks = [
            self._decide_rows(
                panel[lo : lo + rows],
                None if charges is None else charges[lo : lo + rows],
                rebase[lo : lo + rows],
                plan,
            )
            for lo in range(0, max(n_series, 1), rows)  # an empty panel is one empty block
        ]
        decision = blocks[0] if len(blocks) == 1 else _stack(blocks)
        return _result(decide_from, decision)

    def _decide_rows(self, panel: FloatArray, charges: FloatArray | None, rebase: IntArray, plan: _Columns) -> Decision:
        """The decisions of one block of whole series (each row depends on itself only)."""
        usage = panel if charges is None else panel - np.nan_to_num(charges)
        decided = plan.decided
        base = forecast(usage, decided, self._spec, rebase, self._recent)
        earlier = plan.earlier
        recurring = learnt_log_ratio(usage, earlier, decided, base.log_expected, self._thresholds)
        if charges is not None:
            recurring = with_declared(recurring, base.log_expected, declared_expectation(charges, earlier, decided))
        routine = routine_high(usage, plan.stamps, decided, self._tails) if self._tails.count else None
        decision = decide(panel[:, panel.shape[1] - len(decided) :], base, recurring, self._thresholds, routine)
        if self.params.granularity == "hourly":
            decision = self._on_local_clocks(panel, plan.clocks, decided, base, decision, rebase)
        return decision

    def _on_local_clocks(
        self,
        panel: FloatArray,
        clocks: list[LocalClock],
        decided: IntArray,
        base: Forecast,
        decision: Decision,
        rebase: IntArray,
    ) -> Decision:
        """Re-decide, on a zone's local hour grid, the windows that a DST change of that zone
        crosses and whose series that zone's clock explains better (see :mod:`clocks`)."""
        if not clocks or len(decided) == 0:
            return decision
        grids = [local_grid(panel, clock) for clock in clocks]
        advantages = [
            clock_advantage(panel, grid, clock, decided, self._spec.length)
            for clock, grid in zip(clocks, grids, strict=True)
        ]
        noise = np.fmax(base.log_scale, self.params.scale_floor_pct)
        changed = [changed_within(clock, decided, self._spec.length) for clock in clocks]
        choice = choose_clock(advantages, changed, noise, self.params.clock_gate)
        merged = Decision(*(np.array(getattr(decision, f)) for f in Decision.__dataclass_fields__))
        for number, (clock, grid) in enumerate(zip(clocks, grids, strict=True)):
            cells = (choice.best == number) & (choice.local | choice.unsure)
            if not cells.any():
                continue
            rows, columns = np.flatnonzero(cells.any(axis=1)), np.flatnonzero(cells.any(axis=0))
            local_rebase = np.where(rebase[rows] >= 0, clock.local_index[np.maximum(rebase[rows], 0)], -1)
            local_columns = clock.local_index[decided[columns]]
            on_local = forecast(grid[rows], local_columns, self._spec, local_rebase, self._recent)
            observed = panel[np.ix_(rows, decided[columns])]
            local = decide(observed, on_local, np.zeros(observed.shape), self._thresholds)
            block = np.ix_(rows, columns)
            merge_local(
                merged, local, rows, columns, cells[block] & choice.local[block], cells[block] & choice.unsure[block]
            )
        return merged

    @staticmethod
    def _declared(declared: np.ndarray | None, shape: tuple[int, ...]) -> FloatArray | None:
        if declared is None:
            return None
        charges = np.asarray(declared, dtype=np.float64)
        if charges.shape != shape:
            raise ValueError(f"declared must have the shape of values {shape}, got {charges.shape}")
        return charges

    @staticmethod
    def _rebase(rebase_at: np.ndarray | None, n_series: int) -> IntArray:
        if rebase_at is None:
            return np.full(n_series, -1, dtype=np.int64)
        rebase = np.asarray(rebase_at, dtype=np.int64)
        if rebase.shape != (n_series,):
            raise ValueError(f"rebase_at must have shape ({n_series},), got {rebase.shape}")
        return rebase


@dataclass(frozen=True)
class _Columns:
    """What every block of rows of one fit shares: the columns decided and read, and the local clocks."""

    stamps: np.ndarray
    decided: IntArray
    earlier: list[IntArray]  # per charge period, the same calendar slot earlier (charge_lookups)
    clocks: list[LocalClock]


def _stack(blocks: list[Decision]) -> Decision:
    """One decision from the decisions of consecutive blocks of rows."""
    return Decision(*(np.concatenate([getattr(b, f) for b in blocks], axis=0) for f in Decision.__dataclass_fields__))


def _result(start: int, decision: Decision) -> DetectionResult:
    return DetectionResult(
        start=start,
        expected=decision.expected,
        lower=decision.lower,
        upper=decision.upper,
        score=decision.score,
        is_anomaly=decision.is_anomaly,
        kind=decision.kind,
        is_drop=decision.is_drop,
    )


__all__ = ["DetectionResult", "Detector", "Granularity", "Kind", "ModelParams"]

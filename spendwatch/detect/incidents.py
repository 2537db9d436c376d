"""Incidents: consecutive anomalous steps of one series, kept in the ``anomalies`` table.

An incident is a deterministic function of the decisions in the re-scoring window, so every
detection run recomputes the segments there and reconciles them with what is stored:

* a segment overlapping (or touching) a stored incident of the same series updates it — it stays
  one incident however many runs see it (``open`` → ``ongoing`` → ``resolved``);
* a new segment becomes a new incident (``open``, or ``resolved`` if it already ended);
* a stored incident inside the window that no longer has a segment was restated away: ``withdrawn``;
* feedback (``acknowledged``, ``expected``) survives every update — people's decisions win.

Drops (spend falling far below expected) are stored with kind ``drop`` and status ``reported``:
shown in the digest, never alerted on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from spendwatch.errors import NotFoundError, UserError
from spendwatch.store import Connection, Store, Where
from spendwatch.store.records import (
    Contributor,
    Incident,
    JobLink,
    SeriesPoint,
    contributors_from_json,
    jobs_from_json,
    points_from_json,
    to_json,
)

FEEDBACK_STATUSES = frozenset({"acknowledged", "expected"})
_KIND_NAMES = {1: "spike", 2: "shift", 3: "leak", 4: "burst", 5: "drop"}
_KIND_PRECEDENCE = ("leak", "shift", "burst", "spike")


@dataclass(frozen=True)
class SeverityThresholds:
    """Impact (in the series' currency) from which an incident is medium, high, critical."""

    medium: float = 200.0
    high: float = 1_000.0
    critical: float = 10_000.0

    def classify(self, impact: float) -> str:
        if impact >= self.critical:
            return "critical"
        if impact >= self.high:
            return "high"
        if impact >= self.medium:
            return "medium"
        return "low"


@dataclass(frozen=True)
class SeriesDecisions:
    """One series' decided steps in the re-scoring window."""

    monitor: str
    granularity: str
    key: str
    dimensions: dict[str, str]
    currency: str
    timestamps: Sequence[datetime]
    actual: np.ndarray
    expected: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    score: np.ndarray
    is_anomaly: np.ndarray
    is_drop: np.ndarray
    kind: np.ndarray

    @property
    def step(self) -> timedelta:
        return timedelta(hours=1) if self.granularity == "hourly" else timedelta(days=1)


@dataclass
class Segment:
    """A run of anomalous (or drop) steps, gaps of at most ``gap`` normal steps allowed."""

    first: int
    last: int
    kind: str
    contributors: tuple[Contributor, ...] = ()
    jobs: tuple[JobLink, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def segments(flags: np.ndarray, kinds: np.ndarray, *, gap: int, drop: bool = False) -> list[Segment]:
    """Runs of True in ``flags``; runs separated by at most ``gap`` False steps are one run."""
    where = np.flatnonzero(flags)
    found: list[Segment] = []
    for index in where:
        if found and index - found[-1].last <= gap + 1:
            found[-1].last = int(index)
        else:
            found.append(Segment(int(index), int(index), "drop"))
    if not drop:
        for segment in found:
            segment.kind = _segment_kind(kinds[segment.first : segment.last + 1])
    return found


def _segment_kind(kinds: np.ndarray) -> str:
    names = {_KIND_NAMES.get(int(k), "spike") for k in kinds if int(k) not in (0, 5)}
    return next((name for name in _KIND_PRECEDENCE if name in names), "spike")


@dataclass(frozen=True)
class IncidentFigures:
    first_seen: datetime
    last_seen: datetime
    peak_at: datetime
    peak_actual: float
    peak_expected: float
    peak_score: float
    actual_total: float
    expected_total: float
    impact: float
    impact_pct: float


def figures(series: SeriesDecisions, segment: Segment) -> IncidentFigures:
    span = slice(segment.first, segment.last + 1)
    actual = np.nan_to_num(series.actual[span])
    expected = np.nan_to_num(series.expected[span])
    excess = actual - expected
    peak = int(np.argmin(excess) if segment.kind == "drop" else np.argmax(excess))
    expected_total = float(expected.sum())
    impact = float(excess.sum())
    return IncidentFigures(
        first_seen=series.timestamps[segment.first],
        last_seen=series.timestamps[segment.last],
        peak_at=series.timestamps[segment.first + peak],
        peak_actual=float(actual[peak]),
        peak_expected=float(expected[peak]),
        peak_score=float(np.nan_to_num(series.score[span][peak])),
        actual_total=float(actual.sum()),
        expected_total=expected_total,
        impact=impact,
        impact_pct=impact / expected_total if expected_total > 0 else float("inf") if impact > 0 else 0.0,
    )


def chart_points(series: SeriesDecisions, segment: Segment, context: int) -> tuple[SeriesPoint, ...]:
    """The steps around an incident for its chart: ``context`` before, through the newest step."""
    start = max(0, segment.first - context)
    points = []
    for i in range(start, len(series.timestamps)):
        if np.isnan(series.actual[i]):
            continue
        points.append(
            SeriesPoint(
                at=series.timestamps[i],
                actual=float(series.actual[i]),
                expected=_finite(series.expected[i]),
                lower=_finite(series.lower[i]),
                upper=_finite(series.upper[i]),
                is_anomaly=bool(series.is_anomaly[i] or series.is_drop[i]),
            )
        )
    return tuple(points)


def _finite(value: float) -> float:
    return float(value) if np.isfinite(value) else 0.0


# -- reconciliation --------------------------------------------------------------------------------


@dataclass
class ReconcileCounts:
    opened: int = 0
    updated: int = 0
    resolved: int = 0
    withdrawn: int = 0
    drops: int = 0


@dataclass(frozen=True)
class _Stored:
    id: int
    first_seen: datetime
    last_seen: datetime
    status: str
    kind: str


def reconcile(
    con: Connection,
    series: SeriesDecisions,
    found: list[tuple[Segment, IncidentFigures, tuple[SeriesPoint, ...]]],
    *,
    window_start: datetime,
    newest: datetime,
    gap: int,
    severity: SeverityThresholds,
    now: datetime,
    counts: ReconcileCounts,
) -> None:
    """Bring the stored incidents of one series in line with the segments found in the window."""
    step = series.step
    stored = _stored_near(con, series, window_start - (gap + 1) * step)
    matched: set[int] = set()
    for segment, numbers, points in found:
        match = _match(stored, numbers, step, gap, segment.kind, matched)
        active = numbers.last_seen >= newest
        if match is None:
            status = "reported" if segment.kind == "drop" else ("open" if active else "resolved")
            _insert(con, series, segment, numbers, points, status, severity, now)
            if segment.kind == "drop":
                counts.drops += 1
            else:
                counts.opened += 1
                counts.resolved += status == "resolved"
            continue
        matched.add(match.id)
        status = _next_status(match, segment.kind, active, grew=numbers.last_seen > match.last_seen)
        first = min(match.first_seen, numbers.first_seen)
        if any(other.id != match.id and other.first_seen == first for other in stored):
            first = match.first_seen  # that start is another incident's key (one already matched this pass)
        _update(con, match.id, series, segment, numbers, points, status, first, active, severity, now)
        counts.updated += 1
        counts.resolved += status == "resolved" and match.status != "resolved"
    for incident in stored:
        if incident.id in matched or incident.status == "withdrawn":
            continue
        if incident.first_seen >= window_start:
            _set_status(con, incident.id, "withdrawn", now)
            counts.withdrawn += 1
        elif incident.status in ("open", "ongoing"):
            con.execute(
                "UPDATE anomalies SET status = 'resolved', resolved_at = ?, updated_at = ? WHERE id = ?",
                [incident.last_seen + step, now, incident.id],
            )
            counts.resolved += 1


def _next_status(match: _Stored, kind: str, active: bool, *, grew: bool) -> str:
    if match.status in FEEDBACK_STATUSES:
        return match.status
    if kind == "drop":
        return "reported"
    if not active:
        return "resolved"
    if match.status == "withdrawn":  # brought back: as new as an insert would be
        return "open"
    # A re-run over the same data (after a crash, or twice in a day) must leave what the first run left:
    # an incident becomes ongoing only when a newer step still shows it.
    return "open" if match.status == "open" and not grew else "ongoing"


def _stored_near(con: Connection, series: SeriesDecisions, since: datetime) -> list[_Stored]:
    rows = con.execute(
        "SELECT id, first_seen, last_seen, status, kind FROM anomalies "
        "WHERE monitor = ? AND granularity = ? AND series_key = ? AND last_seen >= ? ORDER BY first_seen",
        [series.monitor, series.granularity, series.key, since],
    ).fetchall()
    return [_Stored(int(r[0]), r[1], r[2], str(r[3]), str(r[4])) for r in rows]


def _match(
    stored: list[_Stored], numbers: IncidentFigures, step: timedelta, gap: int, kind: str, taken: set[int]
) -> _Stored | None:
    # The incident that started at this step is this one, even withdrawn (a restatement took it away and
    # another brought it back): its (series, first_seen) key is taken, so no other incident may move onto it.
    for incident in stored:
        if incident.id not in taken and incident.first_seen == numbers.first_seen:
            return incident
    for incident in stored:
        if incident.id in taken or incident.status == "withdrawn" or (incident.kind == "drop") != (kind == "drop"):
            continue
        if incident.first_seen <= numbers.last_seen and incident.last_seen >= numbers.first_seen - (gap + 1) * step:
            return incident
    return None


def _insert(
    con: Connection,
    series: SeriesDecisions,
    segment: Segment,
    numbers: IncidentFigures,
    points: tuple[SeriesPoint, ...],
    status: str,
    severity: SeverityThresholds,
    now: datetime,
) -> None:
    con.execute(
        """
        INSERT INTO anomalies (monitor, granularity, series_key, dimensions, billing_currency, kind, status,
            severity, first_seen, last_seen, resolved_at, peak_at, peak_actual, peak_expected, peak_score,
            actual_total, expected_total, impact, impact_pct, contributors, jobs, points, created_at, updated_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (monitor, granularity, series_key, first_seen) DO UPDATE SET
            status = excluded.status, last_seen = excluded.last_seen, updated_at = excluded.updated_at
        """,
        [
            series.monitor, series.granularity, series.key, json.dumps(series.dimensions),
            series.currency, segment.kind, status, _severity(segment, numbers, severity),
            numbers.first_seen, numbers.last_seen,
            None if status in ("open", "reported") else numbers.last_seen + series.step,
            numbers.peak_at, numbers.peak_actual, numbers.peak_expected, numbers.peak_score,
            numbers.actual_total, numbers.expected_total, numbers.impact, _finite_pct(numbers.impact_pct),
            to_json(list(segment.contributors)), to_json(list(segment.jobs)), to_json(list(points)), now, now,
        ],
    )  # fmt: skip


def _update(
    con: Connection,
    incident_id: int,
    series: SeriesDecisions,
    segment: Segment,
    numbers: IncidentFigures,
    points: tuple[SeriesPoint, ...],
    status: str,
    first_seen: datetime,
    active: bool,
    severity: SeverityThresholds,
    now: datetime,
) -> None:
    con.execute(
        """
        UPDATE anomalies SET kind = ?, status = ?, severity = ?, first_seen = ?, last_seen = ?, resolved_at = ?,
            peak_at = ?, peak_actual = ?, peak_expected = ?, peak_score = ?, actual_total = ?,
            expected_total = ?, impact = ?, impact_pct = ?, contributors = ?, jobs = ?, points = ?,
            updated_at = ?
        WHERE id = ?
        """,
        [
            segment.kind, status, _severity(segment, numbers, severity), first_seen, numbers.last_seen,
            None if active else numbers.last_seen + series.step, numbers.peak_at, numbers.peak_actual,
            numbers.peak_expected, numbers.peak_score, numbers.actual_total, numbers.expected_total,
            numbers.impact, _finite_pct(numbers.impact_pct), to_json(list(segment.contributors)),
            to_json(list(segment.jobs)), to_json(list(points)), now, incident_id,
        ],
    )  # fmt: skip


def _severity(segment: Segment, numbers: IncidentFigures, thresholds: SeverityThresholds) -> str:
    return "low" if segment.kind == "drop" else thresholds.classify(numbers.impact)


def _finite_pct(value: float) -> float:
    # "infinitely more than expected" (expected 0) is stored as 100x, which still reads as huge.
    return min(value, 100.0) if np.isfinite(value) else 100.0


def _set_status(con: Connection, incident_id: int, status: str, now: datetime) -> None:
    con.execute("UPDATE anomalies SET status = ?, updated_at = ? WHERE id = ?", [status, now, incident_id])


# -- reading and feedback --------------------------------------------------------------------------

_COLUMNS = (
    "id, monitor, granularity, series_key, dimensions, billing_currency, kind, status, severity, first_seen, "
    "last_seen, resolved_at, peak_at, peak_actual, peak_expected, peak_score, actual_total, expected_total, "
    "impact, impact_pct, contributors, jobs, points, feedback, feedback_by, feedback_at, feedback_note, "
    "alerted_at, created_at, updated_at"
)


def _incident(row: Sequence[Any]) -> Incident:
    return Incident(
        id=int(row[0]), monitor=row[1], granularity=row[2], series_key=row[3], dimensions=json.loads(row[4]),
        billing_currency=row[5], kind=row[6], status=row[7], severity=row[8], first_seen=row[9],
        last_seen=row[10], resolved_at=row[11], peak_at=row[12], peak_actual=row[13], peak_expected=row[14],
        peak_score=row[15], actual_total=row[16], expected_total=row[17], impact=row[18], impact_pct=row[19],
        contributors=contributors_from_json(row[20]), jobs=jobs_from_json(row[21]),
        points=points_from_json(row[22]), feedback=row[23], feedback_by=row[24], feedback_at=row[25],
        feedback_note=row[26], alerted_at=row[27], created_at=row[28], updated_at=row[29],
    )  # fmt: skip


def load_incidents(
    store: Store,
    *,
    statuses: Iterable[str] | None = None,
    kinds: Iterable[str] | None = None,
    since: datetime | None = None,
    monitor: str | None = None,
    limit: int | None = None,
) -> list[Incident]:
    """Stored incidents, the most recent first. ``since`` keeps those seen (last_seen) at or after it."""
    where = (
        Where().any_of("status", statuses).any_of("kind", kinds).at_least("last_seen", since).equal("monitor", monitor)
    )
    tail = f" LIMIT {int(limit)}" if limit else ""
    sql = f"SELECT {_COLUMNS} FROM anomalies {where.sql} ORDER BY last_seen DESC, impact DESC{tail}"
    rows = store.query(sql, where.params)
    return [_incident(row) for row in rows]


def get_incident(store: Store, incident_id: int) -> Incident:
    rows = store.query(f"SELECT {_COLUMNS} FROM anomalies WHERE id = ?", [incident_id])
    if not rows:
        raise NotFoundError(f"no anomaly with id {incident_id} (see `spendwatch anomalies list`)")
    return _incident(rows[0])


def give_feedback(store: Store, incident_id: int, verdict: str, *, actor: str, note: str | None = None) -> Incident:
    """``acknowledged`` stops alerting; ``expected`` also makes the new level the series' baseline."""
    if verdict not in FEEDBACK_STATUSES:
        raise UserError(f"feedback must be one of {', '.join(sorted(FEEDBACK_STATUSES))}, not {verdict!r}")
    incident = get_incident(store, incident_id)
    if incident.kind == "drop":
        raise UserError(f"anomaly {incident_id} is a drop: drops are reported, never alerted, so need no feedback")
    now = store.clock.now()
    with store.transaction() as con:
        con.execute(
            "UPDATE anomalies SET status = ?, feedback = ?, feedback_by = ?, feedback_at = ?, feedback_note = ?, "
            "updated_at = ? WHERE id = ?",
            [verdict, verdict, actor, now, note, now, incident_id],
        )
        if verdict == "expected":
            con.execute(
                "INSERT OR REPLACE INTO baselines VALUES (?, ?, ?, ?, ?)",
                [incident.monitor, incident.granularity, incident.series_key, incident.first_seen, incident_id],
            )
    return get_incident(store, incident_id)


def load_baselines(store: Store, monitor: str, granularity: str) -> dict[str, datetime]:
    rows = store.query(
        "SELECT series_key, rebase_at FROM baselines WHERE monitor = ? AND granularity = ?", [monitor, granularity]
    )
    return {str(key): at for key, at in rows}

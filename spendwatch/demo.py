"""``spendwatch demo``: the whole pipeline on a simulated estate, no cloud account, no network.

simulated estate → store → detection → attribution → kill-switch plan (dry-run) → the runaway-job
guard replayed poll by poll (dry-run, and enforce against a local stand-in) → digest files, then a
summary naming each injected incident, the user or job it was attributed to and the $ impact.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

from spendwatch.clock import Clock
from spendwatch.collect import collect_source
from spendwatch.collectors.estate import Incident as Injected
from spendwatch.collectors.simulated import SimulatedEstate, SimulatedSourceConfig
from spendwatch.config import Config, parse_config
from spendwatch.detect.incidents import load_incidents
from spendwatch.detect.runner import run_detection
from spendwatch.guard.demo import GuardDemoResult, replay_runaway
from spendwatch.killswitch.engine import KillSwitchRun, run_killswitch
from spendwatch.money import format_money
from spendwatch.notify.cli import render_to_dir
from spendwatch.store import Store
from spendwatch.store.records import Incident

Say = Callable[[str], None]


@dataclass(frozen=True)
class Finding:
    """How the demo's detection did on one injected incident."""

    injected: Injected
    incident: Incident | None

    @property
    def named(self) -> str | None:
        """The user or job spendwatch named for it."""
        if self.incident is None:
            return None
        job = self.incident.top_job()
        if job is not None and job.cost >= 0.25 * self.incident.impact:
            return job.user or job.job_id
        top = self.incident.top_contributor()
        return top.value if top is not None else None

    @property
    def correct(self) -> bool:
        if not self.injected.expected_alert:
            return self.incident is None
        expected = {self.injected.culprit_user, self.injected.culprit_job} - {None}
        return self.incident is not None and self.named in expected


def demo_config(output: Path) -> Config:
    """The embedded demo config, also written to ``output/demo.yaml`` so the CLI can open its store."""
    text = resources.files("spendwatch").joinpath("demo.yaml").read_text(encoding="utf-8")
    path = output / "demo.yaml"
    path.write_text(text, encoding="utf-8")
    return parse_config(text, path, environ={})


@dataclass(frozen=True)
class DemoResult:
    findings: list[Finding]
    plan: KillSwitchRun
    digest: list[Path]
    guard: GuardDemoResult
    config_path: Path = Path("spendwatch-demo/demo.yaml")

    def commands(self) -> list[str]:
        """The exact commands that show this demo's store (quoted for a POSIX shell)."""
        config = shlex.quote(str(self.config_path))
        return [
            f"spendwatch -c {config} anomalies list",
            f"spendwatch -c {config} actions list",
            f"spendwatch -c {config} budgets list",
            f"spendwatch -c {config} digest --to-dir {shlex.quote(str(self.config_path.parent / 'digest'))}",
        ]


def run_demo(output: Path, clock: Clock, *, seed: int = 7, days: int = 120, say: Say = print) -> DemoResult:
    output.mkdir(parents=True, exist_ok=True)
    config = demo_config(output)
    source = config.sources[0]
    assert isinstance(source, SimulatedSourceConfig)
    source = source.model_copy(update={"seed": seed, "days": days})
    _start_afresh(config.store.path, say)
    store = Store(config.store.path, clock=clock)
    say(f"1/5 simulating {days} days of an ML/data estate on AWS and GCP (seed {seed}) …")
    run = collect_source(source, store, clock)
    if run.error:
        raise RuntimeError(f"the simulated source failed: {run.error}")
    say(f"    {run.cost_rows:,} cost lines and {run.jobs:,} job records in {store.path}")
    say("2/5 detecting anomalies and attributing them …")
    detection = run_detection(config, store, clock)
    say(f"    {detection.series_scored} series scored, {detection.opened} incident(s) found")
    say("3/5 planning the kill switch (dry-run: nothing is touched) …")
    # The estate is simulated: no cloud or cluster is asked about it, whatever credentials this machine holds.
    plan = run_killswitch(config, store, clock, offline="the demo's estate is simulated")
    for action in plan.dry_run:
        say(f"    would {action.summary}")
    say("4/5 replaying the runaway query poll by poll through the runaway-job guard …")
    guard = replay_runaway(store, clock, config)
    say("5/5 writing the daily digest …")
    # Dated today (in the config's zone): it reports on yesterday, the day of the headline incident.
    today = clock.now().astimezone(ZoneInfo(config.daemon.timezone)).date()
    digest = render_to_dir(config, store, clock, today, output / "digest", charts=True)
    for path in digest:
        say(f"    {path}")
    estate = SimulatedEstate(seed, days, clock.now())
    findings = match_injected(estate.scenario, load_incidents(store))
    return DemoResult(findings, plan, digest, guard, output / "demo.yaml")


def _start_afresh(store_path: Path, say: Say) -> None:
    """The demo's store is its own: a second run replaces it, so every run tells the same story."""
    leftovers = [store_path.with_name(store_path.name + suffix) for suffix in ("", ".wal")]
    if any(path.exists() for path in leftovers):
        say(f"    replacing the previous demo store {store_path}")
    for path in leftovers:
        path.unlink(missing_ok=True)


def match_injected(scenario: list[Injected], incidents: list[Incident]) -> list[Finding]:
    """For each injected incident, the alerting incident that best covers it (largest impact)."""
    findings = []
    for injected in scenario:
        end = injected.end or injected.start + timedelta(days=3650)
        candidates = [
            incident
            for incident in incidents
            if incident.kind != "drop"
            and incident.status != "withdrawn"
            and incident.dimensions.get("sub_account_id", injected.sub_account_id) == injected.sub_account_id
            and incident.dimensions.get("service_name", injected.service_name) == injected.service_name
            and incident.dimensions.get("provider", injected.provider) == injected.provider
            and set(incident.dimensions) & {"sub_account_id", "service_name"}
            and incident.first_seen < end
            and incident.last_seen + timedelta(days=1) > injected.start
        ]
        best = max(candidates, key=lambda i: (i.granularity == "daily", i.impact), default=None)
        findings.append(Finding(injected, best))
    return findings


def summary_lines(findings: list[Finding]) -> list[str]:
    lines = []
    for finding in findings:
        injected, incident = finding.injected, finding.incident
        mark = "ok " if finding.correct else "MISS"
        if not injected.expected_alert:
            verdict = "no alert, as it should be" if incident is None else f"alerted as #{incident.id} (wrong)"
            lines.append(f"[{mark}] {injected.key}: {injected.title} — {verdict}")
            continue
        if incident is None:
            lines.append(f"[{mark}] {injected.key}: {injected.title} — not found")
            continue
        lines.append(
            f"[{mark}] {injected.key}: {injected.title} — incident #{incident.id} ({incident.kind}, "
            f"{incident.severity}), {format_money(incident.impact, incident.billing_currency, signed=True)} since "
            f"{incident.first_seen:%Y-%m-%d}; {incident.culprit_sentence()}"
        )
    return lines

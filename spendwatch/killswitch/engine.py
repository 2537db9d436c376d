"""The kill-switch engine: match rules → journal the plan → re-read → act (or not) → journal the result.

``run_killswitch(config, store, clock)`` is what the daemon and the demo call once per pass:

1. approvals past their expiry become ``expired`` (they do nothing);
2. if the global pause is on, nothing else happens;
3. actions a crashed process left ``planned``/``running``/``undoing`` are reconciled (never acted twice);
4. actions approved but not yet carried out are carried out;
5. each enabled rule is matched against open incidents and running job records; every match becomes
   a journaled action (once per rule × target × episode × mode, by idempotency key), re-read, checked
   against protection, state and owner, and then — by mode — described (``dry-run``), put up for
   approval (``approve``) or executed within the circuit breaker's caps (``enforce``).

``approve``/``reject``/``undo`` serve the CLI; they go through the same checks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from spendwatch.clock import Clock
from spendwatch.errors import ActionError, UserError
from spendwatch.killswitch.base import Action, ActionContext, Observed, action_for
from spendwatch.killswitch.config import KillSwitchConfig, Rule
from spendwatch.killswitch.hook import PAYLOAD_VERSION, HookAction
from spendwatch.killswitch.journal import (
    ActionRecord,
    CapReached,
    JournalConflict,
    NewAction,
    action_events,
    add_event,
    get_action,
    list_actions,
    plan_action,
    transition,
)
from spendwatch.killswitch.rules import JobRecord, Match, load_running_jobs, match_rule, one_match_per_target
from spendwatch.killswitch.runs import KillSwitchRun, SkipNote, idempotency_key, runner_alive, runner_id
from spendwatch.killswitch.safety import Breaker, is_paused, owner_from_labels, protection_reason, reread_problem
from spendwatch.killswitch.scope import rule_problem, scope_problem
from spendwatch.store import Store
from spendwatch.store.records import Incident

__all__ = ["ENGINE_ACTOR", "KillSwitch", "KillSwitchRun", "SkipNote", "idempotency_key", "run_killswitch", "runner_id"]

log = logging.getLogger("spendwatch.killswitch")
ENGINE_ACTOR = "spendwatch"


class KillSwitch:
    """One engine over one store; cheap to build per run or per CLI command."""

    def __init__(
        self,
        settings: KillSwitchConfig,
        store: Store,
        clock: Clock,
        *,
        clients: Mapping[str, Any] | None = None,
        actor: str = ENGINE_ACTOR,
        offline: str | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.context = ActionContext(settings, clients, offline=offline)
        self.actor = actor

    # -- the run -------------------------------------------------------------------------------

    def run(
        self, *, incidents: Sequence[Incident] | None = None, jobs: Sequence[JobRecord] | None = None
    ) -> KillSwitchRun:
        now = self.clock.now()
        run = KillSwitchRun(started_at=now)
        if not self.settings.enabled:
            return run
        self.expire(run)
        if is_paused(self.store):
            run.paused = True
            return run
        breaker = Breaker(self.settings.caps, self.store, now)
        self.reconcile(run, breaker)
        for record in list_actions(self.store, states=["approved"]):
            self._carry_out(record, run, breaker)
        rules = [r for r in self.settings.rules if r.enabled]
        if not rules:
            return run
        incident_list = list(incidents) if incidents is not None else self._load_incidents(rules)
        job_list = list(jobs) if jobs is not None else self._load_jobs(rules)
        clusters = self.settings.kubernetes.clusters
        for rule in rules:
            matches = one_match_per_target(
                match_rule(rule, incident_list, job_list, now),
                lambda m: scope_problem(m.rule, m.target, m.context, clusters=clusters) is None,
            )
            if len(matches) > rule.max_targets:
                run.skipped.append(
                    SkipNote(
                        rule.name,
                        f"{len(matches)} targets",
                        f"circuit breaker: rule matched {len(matches)} targets, more than max_targets "
                        f"({rule.max_targets}); acted on none",
                    )
                )
                log.warning(
                    "rule %s matched %d targets (max %d): acting on none", rule.name, len(matches), rule.max_targets
                )
                continue
            for match in matches:
                self._handle_match(match, run, breaker)
        log.info("kill switch run: %s", run.summary())
        return run

    def _load_incidents(self, rules: list[Rule]) -> list[Incident]:
        statuses = {s for r in rules if r.when.incident is not None for s in r.when.incident.statuses}
        if not statuses:
            return []
        from spendwatch.detect.incidents import load_incidents

        return load_incidents(self.store, statuses=sorted(statuses))

    def _load_jobs(self, rules: list[Rule]) -> list[JobRecord]:
        states = {s for r in rules if r.when.job is not None for s in r.when.job.states}
        return load_running_jobs(self.store, states) if states else []

    # -- planning ------------------------------------------------------------------------------

    def _handle_match(self, match: Match, run: KillSwitchRun, breaker: Breaker) -> None:
        rule, target = match.rule, match.target
        outside = scope_problem(rule, target, match.context, clusters=self.settings.kubernetes.clusters)
        if outside is not None:
            # Not planned at all: the incident or job record pointed outside what the rule covers.
            log.warning("rule %s: refused %s: %s", rule.name, target.describe(), outside)
            run.skipped.append(SkipNote(rule.name, target.describe(), outside))
            return
        impl_cls = self._action_class(rule, target.resource_type)
        if impl_cls is None:
            run.skipped.append(
                SkipNote(rule.name, target.describe(), f"no {rule.do!r} action for {target.resource_type}")
            )
            return
        reversible = rule.hook.reversible if rule.do == "hook" and rule.hook is not None else impl_cls.reversible
        mode, notes = rule.how, []
        # Hooks are the user's own program, not an irreversible verb: they run in the mode the rule says.
        if mode == "enforce" and not reversible and not rule.allow_irreversible and rule.do != "hook":
            mode = "approve"
            notes.append("irreversible: needs approval because the rule does not allow_irreversible")
        key = idempotency_key(rule.name, mode, rule.do, target, match.episode)
        plan = {
            "action": impl_cls.plugin_name or "hook",
            "mode_requested": rule.how,
            "notes": notes,
            "context": match.context,
            "episode": match.episode,
            "permissions": list(impl_cls.permissions),
        }
        new = NewAction(key, rule.name, match.anomaly_id, rule.do, mode, target, match.reason, reversible, plan)
        record, created = plan_action(self.store, new, now=self.clock.now(), actor=self.actor)
        if not created:
            run.unchanged += 1
            return
        run.planned.append(record)
        protected = protection_reason(self.settings.protection, target)
        if protected is not None:
            self._skip(record, protected, run)
            return
        self._carry_out(record, run, breaker)

    def _action_class(self, rule: Rule | None, resource_type: str, verb: str | None = None) -> type[Action] | None:
        verb = verb or (rule.do if rule else None)
        if verb == "hook":
            return HookAction
        return action_for(resource_type, verb) if verb else None

    def build_action(self, record: ActionRecord) -> Action:
        """The action implementation for a journaled record (its rule's options, or the hook's config)."""
        rule = self.settings.rule(record.rule)
        if record.verb == "hook":
            if rule is None or rule.hook is None:
                raise UserError(f"action {record.id}: rule {record.rule!r} (a hook) is no longer in the config")
            return HookAction(rule.hook, self.context, self._payload(record))
        cls = action_for(record.target.resource_type, record.verb)
        if cls is None:
            raise UserError(f"action {record.id}: no {record.verb!r} action for {record.target.resource_type}")
        options = cls.options_model.model_validate(rule.options if rule is not None else {})
        return cls(options, self.context)

    def _payload(self, record: ActionRecord) -> dict[str, Any]:
        context = dict(record.plan.get("context") or {})
        return {
            "version": PAYLOAD_VERSION,
            "action": {
                "id": record.id,
                "rule": record.rule,
                "verb": record.verb,
                "mode": record.mode,
                "planned_at": record.planned_at.isoformat(),
            },
            "reason": record.reason,
            "target": record.target.as_dict(),
            "incident": context.get("incident"),
            "job": context.get("job"),
        }

    # -- carrying out ----------------------------------------------------------------------------

    def _carry_out(self, record: ActionRecord, run: KillSwitchRun, breaker: Breaker, *, approved: bool = False) -> None:
        """From ``planned`` or ``approved``: re-read, check, and then describe, ask, or act."""
        if record.mode != "dry-run":
            changed = rule_problem(self.settings.rule(record.rule), record, clusters=self.settings.kubernetes.clusters)
            if changed is not None:
                self._skip(record, changed, run)
                return
        try:
            impl = self.build_action(record)
            observed = impl.describe(record.target)
        except (ActionError, UserError) as exc:
            if record.mode == "dry-run":
                self._describe_unverified(record, exc, run)
                return
            self._fail(record, f"re-read failed: {exc}", run)
            return
        problem = reread_problem(self.settings, record.target, observed, impl.valid_origin_states)
        if problem is not None:
            self._skip(record, problem, run)
            return
        assert observed is not None
        fields = self._observed_fields(record, observed)
        if record.mode == "dry-run":
            try:
                would = impl.dry_run(record.target, observed)
            except ActionError as exc:
                would = f"would fail: {exc}"
            done = self._move(
                record,
                "skipped",
                fields={**fields, "result": {"summary": would, "dry_run": True}, "finished_at": self.clock.now()},
                detail={"dry_run": would, "observed_state": observed.state},
            )
            if done is not None:
                run.dry_run.append(done)
            return
        if record.mode == "approve" and record.state == "planned":
            rule = self.settings.rule(record.rule)
            expires = self.clock.now() + self.settings.expiry_for(rule)
            waiting = self._move(
                record,
                "awaiting-approval",
                fields={**fields, "expires_at": expires},
                detail={"expires_at": expires.isoformat(), "observed_state": observed.state},
            )
            if waiting is not None:
                run.awaiting_approval.append(waiting)
            return
        self._act(record, impl, observed, fields, run, breaker)

    def _describe_unverified(self, record: ActionRecord, exc: Exception, run: KillSwitchRun) -> None:
        """A dry-run whose target cannot be re-read (no credentials, no network) still says what it would do.

        Nothing is acted on in dry-run, so the plan is worth showing; it says plainly that the target's
        current state was not checked. Approve and enforce never act on an unread target.
        """
        would = f"would {record.verb} {record.target.describe()} (current state not verified: {exc})"
        done = self._move(
            record,
            "skipped",
            fields={"result": {"summary": would, "dry_run": True, "verified": False}, "finished_at": self.clock.now()},
            detail={"dry_run": would, "unverified": str(exc)},
        )
        if done is not None:
            run.dry_run.append(done)

    def _observed_fields(self, record: ActionRecord, observed: Observed) -> dict[str, Any]:
        owner = observed.owner or owner_from_labels(observed.labels, self.settings.owner_tags)
        return {"owner": owner} if owner and not record.target.owner else {}

    def _act(
        self,
        record: ActionRecord,
        impl: Action,
        observed: Observed,
        fields: Mapping[str, Any],
        run: KillSwitchRun,
        breaker: Breaker,
    ) -> None:
        refusal = breaker.refusal(record.at_stake)
        if refusal is None and is_paused(self.store):
            refusal = "paused: spendwatch actions resume-all lets it run"
        if refusal is not None:
            if refusal.startswith("paused"):
                run.skipped.append(SkipNote(record.rule, record.summary, refusal, record.id))
                return
            self._skip(record, refusal, run)
            return
        snapshot = {"state": observed.state, **dict(observed.snapshot)}
        try:
            running = transition(
                self.store,
                record.id,
                "running",
                now=self.clock.now(),
                actor=self.actor,
                expect={record.state},
                fields={**fields, "started_at": self.clock.now(), "prior_state": snapshot},
                detail={"runner": runner_id(), "observed_state": observed.state},
                max_started_per_hour=self.settings.caps.max_actions_per_hour,
            )
        except CapReached as exc:
            self._skip(record, str(exc), run)
            return
        except JournalConflict as exc:
            run.skipped.append(SkipNote(record.rule, record.summary, f"taken by another process: {exc}", record.id))
            return
        breaker.count(record.at_stake)
        self._execute(running, impl, observed, run)

    def _execute(self, record: ActionRecord, impl: Action, observed: Observed, run: KillSwitchRun) -> None:
        try:
            outcome = impl.execute(record.target, observed)
        except ActionError as exc:
            self._fail(record, str(exc), run)
            return
        except Exception as exc:  # one broken action must not stop the run; the journal says what happened
            log.exception("action %s raised", record.id)
            self._fail(record, f"{type(exc).__name__}: {exc}", run)
            return
        done = self._move(
            record,
            "done",
            fields={"result": {"summary": outcome.summary, **dict(outcome.detail)}, "finished_at": self.clock.now()},
            detail={"summary": outcome.summary},
        )
        if done is not None:
            run.executed.append(done)

    # -- journal helpers -----------------------------------------------------------------------

    def _move(
        self,
        record: ActionRecord,
        state: str,
        *,
        fields: Mapping[str, Any] | None = None,
        detail: Mapping[str, Any] | None = None,
        actor: str | None = None,
    ) -> ActionRecord | None:
        try:
            return transition(
                self.store,
                record.id,
                state,
                now=self.clock.now(),
                actor=actor or self.actor,
                expect={record.state},
                fields=fields,
                detail=detail,
            )
        except JournalConflict as exc:
            log.warning("action %s: %s", record.id, exc)
            return None

    def _skip(self, record: ActionRecord, reason: str, run: KillSwitchRun) -> None:
        moved = self._move(
            record,
            "skipped",
            fields={"result": {"summary": f"skipped: {reason}"}, "finished_at": self.clock.now()},
            detail={"reason": reason},
        )
        run.skipped.append(SkipNote(record.rule, record.summary, reason, record.id))
        if moved is None:
            log.warning("action %s could not be marked skipped (%s)", record.id, reason)

    def _fail(self, record: ActionRecord, error: str, run: KillSwitchRun | None) -> ActionRecord | None:
        moved = self._move(
            record,
            "failed",
            fields={"error": error[:2000], "finished_at": self.clock.now()},
            detail={"error": error[:2000]},
        )
        if moved is not None and run is not None:
            run.failed.append(moved)
        return moved

    # -- expiry and reconciliation ---------------------------------------------------------------

    def expire(self, run: KillSwitchRun) -> None:
        now = self.clock.now()
        for record in list_actions(self.store, states=["awaiting-approval"]):
            if record.expires_at is not None and record.expires_at <= now:
                moved = self._move(
                    record, "expired", fields={"finished_at": now}, detail={"expired_at": record.expires_at.isoformat()}
                )
                if moved is not None:
                    run.expired.append(moved)

    def reconcile(self, run: KillSwitchRun, breaker: Breaker) -> None:
        """Repair what a killed process left between ``planned`` and a final state, without acting twice."""
        for record in sorted(list_actions(self.store, states=["planned", "running", "undoing"]), key=lambda r: r.id):
            if record.state == "planned":
                self._carry_out(record, run, breaker)
                run.reconciled.append(get_action(self.store, record.id))
            elif record.state == "running" and not runner_alive(self._runner(record.id, "running")):
                self._reconcile_running(record, run)
            elif record.state == "undoing" and not runner_alive(self._runner(record.id, "undoing")):
                self._reconcile_undo(record, run)

    def _runner(self, action_id: int, state: str) -> str | None:
        for event in reversed(action_events(self.store, action_id)):
            if event.state == state:
                runner = event.detail.get("runner")
                return str(runner) if runner else None
        return None

    def _reconcile_running(self, record: ActionRecord, run: KillSwitchRun) -> None:
        note = "interrupted while running (process ended)"
        try:
            impl = self.build_action(record)
        except UserError as exc:
            self._fail(record, f"{note}; {exc}", run)
            return
        if isinstance(impl, HookAction):
            moved = self._fail(record, f"{note}: a hook's outcome cannot be re-read, so it is not run again", run)
            if moved is not None:
                run.reconciled.append(moved)
            return
        try:
            observed = impl.describe(record.target)
        except ActionError as exc:
            log.warning("action %s: cannot re-read to reconcile (%s); will retry next run", record.id, exc)
            return
        if observed is None or impl.took_effect(observed):
            state = "gone" if observed is None else observed.state
            if observed is None and impl.reversible:
                moved = self._fail(record, f"{note}; the target is gone, so the outcome is unknown", run)
            else:
                moved = self._move(
                    record,
                    "done",
                    fields={
                        "result": {"summary": f"{note}; reconciled: target is {state}", "reconciled": True},
                        "finished_at": self.clock.now(),
                    },
                    detail={"reconciled": True, "observed_state": state},
                )
            if moved is not None:
                run.reconciled.append(moved)
            return
        problem = reread_problem(self.settings, record.target, observed, impl.valid_origin_states)
        if problem is not None:
            self._skip(record, f"{note}; {problem}", run)
            return
        # The call never landed (the target is still in an origin state): make it now, once.
        add_event(
            self.store,
            record.id,
            "running",
            now=self.clock.now(),
            actor=self.actor,
            detail={"runner": runner_id(), "resumed": True},
        )
        before = len(run.executed)
        self._execute(record, impl, observed, run)
        if len(run.executed) > before:
            run.reconciled.append(run.executed[-1])

    def _reconcile_undo(self, record: ActionRecord, run: KillSwitchRun) -> None:
        impl = self.build_action(record)
        observed = impl.describe(record.target)
        snapshot = dict(record.prior_state or {})
        if observed is not None and impl.is_undone(observed, snapshot):
            moved = self._move(
                record,
                "undone",
                fields={"undone_at": self.clock.now()},
                detail={"reconciled": True, "observed_state": observed.state},
            )
        else:
            moved = self._finish_undo(record, impl, self.actor)
        if moved is not None:
            run.reconciled.append(moved)

    # -- what people do from the CLI ---------------------------------------------------------------

    def approve(self, action_id: int, actor: str, *, execute: bool = True) -> ActionRecord:
        self._check_approver(actor)
        record = get_action(self.store, action_id)
        now = self.clock.now()
        if record.state != "awaiting-approval":
            raise UserError(f"action {action_id} is {record.state}; only an action awaiting approval can be approved")
        if record.expires_at is not None and record.expires_at <= now:
            self._move(
                record, "expired", fields={"finished_at": now}, detail={"expired_at": record.expires_at.isoformat()}
            )
            raise UserError(f"action {action_id}: its approval expired at {record.expires_at:%Y-%m-%d %H:%M} UTC")
        approved = self._move(
            record,
            "approved",
            fields={"decided_at": now, "decided_by": actor},
            detail={"approved_by": actor},
            actor=actor,
        )
        if approved is None:
            raise UserError(f"action {action_id} changed while approving; see `spendwatch actions show {action_id}`")
        if not execute or is_paused(self.store):
            return approved
        run = KillSwitchRun(started_at=now)
        self._carry_out(approved, run, Breaker(self.settings.caps, self.store, now))
        return get_action(self.store, action_id)

    def reject(self, action_id: int, actor: str, note: str | None = None) -> ActionRecord:
        self._check_approver(actor)
        record = get_action(self.store, action_id)
        if record.state != "awaiting-approval":
            raise UserError(f"action {action_id} is {record.state}; only an action awaiting approval can be rejected")
        moved = self._move(
            record,
            "rejected",
            fields={"decided_at": self.clock.now(), "decided_by": actor, "finished_at": self.clock.now()},
            detail={"rejected_by": actor, "note": note},
            actor=actor,
        )
        if moved is None:
            raise UserError(f"action {action_id} changed while rejecting; see `spendwatch actions show {action_id}`")
        return moved

    def _check_approver(self, actor: str) -> None:
        refusal = self.settings.approver_refusal(actor)
        if refusal is not None:
            raise UserError(refusal)

    def undo(self, action_id: int, actor: str) -> ActionRecord:
        record = get_action(self.store, action_id)
        if record.state != "done":
            raise UserError(f"action {action_id} is {record.state}; only a done action can be undone")
        if not record.reversible:
            raise UserError(f"action {action_id} ({record.verb} {record.target.resource_type}) cannot be undone")
        impl = self.build_action(record)
        undoing = self._move(record, "undoing", detail={"runner": runner_id(), "requested_by": actor}, actor=actor)
        if undoing is None:
            raise UserError(f"action {action_id} changed while undoing; see `spendwatch actions show {action_id}`")
        finished = self._finish_undo(undoing, impl, actor)
        assert finished is not None
        if finished.state != "undone":
            raise ActionError(
                f"undo of action {action_id} failed: {finished.result and finished.result.get('undo_error')}"
            )
        return finished

    def _finish_undo(self, record: ActionRecord, impl: Action, actor: str) -> ActionRecord | None:
        snapshot = dict(record.prior_state or {})
        result = dict(record.result or {})
        try:
            outcome = impl.undo(record.target, snapshot)
        except (ActionError, NotImplementedError) as exc:
            return self._move(
                record,
                "done",
                fields={"result": {**result, "undo_error": str(exc)}},
                detail={"undo_error": str(exc)},
                actor=actor,
            )
        return self._move(
            record,
            "undone",
            fields={"undone_at": self.clock.now(), "result": {**result, "undo": outcome.summary}},
            detail={"summary": outcome.summary},
            actor=actor,
        )


def _settings(config: Any) -> KillSwitchConfig:
    settings = getattr(config, "killswitch", config)
    if not isinstance(settings, KillSwitchConfig):
        raise TypeError("run_killswitch needs a Config or a KillSwitchConfig")
    return settings


def run_killswitch(
    config: Any,
    store: Store,
    clock: Clock,
    *,
    clients: Mapping[str, Any] | None = None,
    incidents: Sequence[Incident] | None = None,
    jobs: Sequence[JobRecord] | None = None,
    actor: str = ENGINE_ACTOR,
    offline: str | None = None,
) -> KillSwitchRun:
    """One kill-switch pass. ``config`` is the root ``Config`` (or its ``killswitch`` section).

    ``incidents``/``jobs`` default to the store's open incidents and running job records;
    ``clients`` injects cloud clients and ``offline`` refuses them all (see ``ActionContext``).
    """
    engine = KillSwitch(_settings(config), store, clock, clients=clients, actor=actor, offline=offline)
    return engine.run(incidents=incidents, jobs=jobs)

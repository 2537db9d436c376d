"""``spendwatch actions …``: read the journal, approve / reject / undo, pause and resume the kill switch.

Commands that decide (approve, reject, undo, pause, resume-all) record who did it: ``--as NAME``, else
``$USER``. Heavy modules are imported inside the commands so ``spendwatch --help`` stays fast.
"""

from __future__ import annotations

import getpass
import json
import os
from datetime import UTC, datetime
from typing import Any

import click

from spendwatch.cli_util import Env, echo_json, handle_errors, json_option, pass_env
from spendwatch.terminal import clean


def _actor(name: str | None) -> str:
    if name:
        return name
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _engine(env: Env) -> Any:
    from spendwatch.killswitch.engine import KillSwitch

    return KillSwitch(env.config.killswitch, env.store, env.clock)


def _money(value: float | None, currency: str) -> str:
    from spendwatch.money import format_money

    return "-" if value is None else format_money(value, currency)


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _record_json(record: Any) -> dict[str, Any]:
    return {
        "id": record.id,
        "rule": record.rule,
        "verb": record.verb,
        "mode": record.mode,
        "state": record.state,
        "target": record.target.as_dict(),
        "reason": record.reason,
        "saving_per_hour": record.saving_per_hour,
        "at_stake": record.at_stake,
        "reversible": record.reversible,
        "result": record.result,
        "error": record.error,
        "prior_state": record.prior_state,
        "planned_at": record.planned_at,
        "expires_at": record.expires_at,
        "decided_by": record.decided_by,
        "decided_at": record.decided_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "undone_at": record.undone_at,
    }


@click.group("actions")
def actions_group() -> None:
    """The kill switch's journal: list, show, approve, reject, undo; pause and resume."""


@actions_group.command("list")
@click.option("--state", "states", multiple=True, help="only this state (repeatable): awaiting-approval, done …")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="changed on or after this day (UTC)")
@click.option("--rule", help="only this rule")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON lines")
@pass_env
@handle_errors
def actions_list(
    env: Env, states: tuple[str, ...], since: datetime | None, rule: str | None, limit: int, as_json: bool
) -> None:
    """List journaled actions, newest first."""
    from spendwatch.errors import InputError
    from spendwatch.killswitch.journal import STATES, list_actions

    for state in states:
        if state not in STATES:
            raise InputError(f"--state {state!r}: not a state (known: {', '.join(STATES)})")
    records = list_actions(
        env.store,
        states=states or None,
        since=since.replace(tzinfo=UTC) if since else None,
        rule=rule,
        limit=limit,
    )
    if as_json:
        for record in records:
            click.echo(json.dumps(_record_json(record), default=str))
        return
    if not records:
        click.echo("no actions")
        return
    click.echo(f"{'ID':>5}  {'STATE':<17} {'MODE':<8} {'RULE':<20} {'SAVES/H':>11}  WHAT")
    for r in records:
        saves = clean(_money(r.saving_per_hour, r.target.currency))
        click.echo(f"{r.id:>5}  {r.state:<17} {r.mode:<8} {clean(r.rule[:20]):<20} {saves:>11}  {clean(r.summary)}")


@actions_group.command("show")
@click.argument("action_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="the action and its events as JSON")
@pass_env
@handle_errors
def actions_show(env: Env, action_id: int, as_json: bool) -> None:
    """Show one action: the plan, the result and every event."""
    from spendwatch.killswitch.journal import action_events, get_action

    record = get_action(env.store, action_id)
    if as_json:
        events = [
            {"at": e.event_at, "state": e.state, "actor": e.actor, "detail": dict(e.detail or {})}
            for e in action_events(env.store, action_id)
        ]
        click.echo(json.dumps({**_record_json(record), "events": events}, default=str, indent=2))
        return
    lines = [
        f"action {record.id}: {clean(record.summary)}",
        f"  rule      {clean(record.rule)}  (mode {record.mode}, "
        f"{'reversible' if record.reversible else 'irreversible'})",
        f"  state     {record.state}",
        f"  reason    {clean(record.reason)}",
        f"  saving    {clean(_money(record.saving_per_hour, record.target.currency))}/h, "
        f"at stake {clean(_money(record.at_stake, record.target.currency))}",
        f"  planned   {_when(record.planned_at)}"
        + (f", expires {_when(record.expires_at)}" if record.expires_at else ""),
    ]
    if record.decided_by:
        lines.append(f"  decided   by {clean(record.decided_by)} at {_when(record.decided_at)}")
    if record.result:
        result = record.result.get("summary") or json.dumps(dict(record.result), default=str)
        lines.append(f"  result    {clean(result)}")
        if record.result.get("undo_error"):
            lines.append(f"  undo      failed: {clean(record.result['undo_error'])}")
    if record.error:
        lines.append(f"  error     {clean(record.error)}")
    if record.prior_state:
        lines.append(f"  prior     {json.dumps(dict(record.prior_state), default=str, sort_keys=True)}")
    lines.append("  events")
    for event in action_events(env.store, action_id):
        detail = json.dumps(dict(event.detail), default=str, sort_keys=True) if event.detail else ""
        lines.append(f"    {_when(event.event_at)}  {event.state:<17} {clean(event.actor):<12} {clean(detail)}")
    click.echo("\n".join(lines))


@actions_group.command("approve")
@click.argument("action_id", type=int)
@click.option("--as", "actor", help="who approves (default: $USER)")
@click.option("--no-execute", is_flag=True, help="record the approval; the next run carries it out")
@json_option()
@pass_env
@handle_errors
def actions_approve(env: Env, action_id: int, actor: str | None, no_execute: bool, as_json: bool) -> None:
    """Approve an action awaiting approval; it is carried out now (re-read and checked first)."""
    record = _engine(env).approve(action_id, _actor(actor), execute=not no_execute)
    outcome = (record.result or {}).get("summary") or record.error or ""
    if as_json:
        echo_json(_record_json(record))
    else:
        click.echo(f"action {record.id}: {record.state}" + (f" — {clean(outcome)}" if outcome else ""))
    if record.state == "failed":
        raise SystemExit(1)


@actions_group.command("reject")
@click.argument("action_id", type=int)
@click.option("--as", "actor", help="who rejects (default: $USER)")
@click.option("--note", help="why (kept in the journal)")
@json_option()
@pass_env
@handle_errors
def actions_reject(env: Env, action_id: int, actor: str | None, note: str | None, as_json: bool) -> None:
    """Reject an action awaiting approval: nothing is done."""
    record = _engine(env).reject(action_id, _actor(actor), note)
    if as_json:
        echo_json(_record_json(record))
        return
    click.echo(f"action {record.id}: rejected by {clean(record.decided_by)}")


@actions_group.command("undo")
@click.argument("action_id", type=int)
@click.option("--as", "actor", help="who undoes (default: $USER)")
@json_option()
@pass_env
@handle_errors
def actions_undo(env: Env, action_id: int, actor: str | None, as_json: bool) -> None:
    """Undo a done, reversible action: restart what was stopped, restore saved sizes."""
    record = _engine(env).undo(action_id, _actor(actor))
    if as_json:
        echo_json(_record_json(record))
        return
    click.echo(f"action {record.id}: undone — {clean((record.result or {}).get('undo', ''))}")


@actions_group.command("pause")
@click.option("--as", "actor", help="who pauses (default: $USER)")
@json_option()
@pass_env
@handle_errors
def actions_pause(env: Env, actor: str | None, as_json: bool) -> None:
    """Pause the kill switch everywhere: no run or approval acts until resume-all."""
    from spendwatch.killswitch.safety import set_paused

    set_paused(env.store, True, _actor(actor))
    if as_json:
        _pause_json(env)
        return
    click.echo("kill switch paused: nothing will be acted on until `spendwatch actions resume-all`")


@actions_group.command("resume-all")
@click.option("--as", "actor", help="who resumes (default: $USER)")
@json_option()
@pass_env
@handle_errors
def actions_resume(env: Env, actor: str | None, as_json: bool) -> None:
    """Lift the global pause."""
    from spendwatch.killswitch.safety import set_paused

    set_paused(env.store, False, _actor(actor))
    if as_json:
        _pause_json(env)
        return
    click.echo("kill switch resumed")


def _pause_json(env: Env) -> None:
    from spendwatch.killswitch.safety import pause_info

    paused, by, at = pause_info(env.store)
    echo_json({"paused": paused, "by": by, "at": at})


@actions_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="as JSON")
@pass_env
@handle_errors
def actions_status(env: Env, as_json: bool) -> None:
    """Paused or not, rules and their modes, and what awaits approval."""
    from spendwatch.killswitch.journal import list_actions
    from spendwatch.killswitch.safety import pause_info

    paused, by, at = pause_info(env.store)
    settings = env.config.killswitch
    if as_json:
        waiting = list_actions(env.store, states=["awaiting-approval"])
        rules = [{"name": r.name, "do": r.do, "how": r.how, "enabled": r.enabled} for r in settings.rules]
        data = {"paused": paused, "paused_by": by, "paused_at": at, "rules": rules, "awaiting_approval": len(waiting)}
        click.echo(json.dumps(data, default=str, indent=2))
        return
    click.echo(f"kill switch: {'PAUSED by ' + str(by) + ' at ' + _when(at) if paused else 'active'}")
    for rule in settings.rules:
        flag = "" if rule.enabled else " (disabled)"
        click.echo(f"  rule {rule.name}: {rule.do} [{rule.how}]{flag}")
    waiting = list_actions(env.store, states=["awaiting-approval"])
    click.echo(f"  {len(waiting)} action(s) awaiting approval")


@actions_group.command("run")
@json_option()
@pass_env
@handle_errors
def actions_run(env: Env, as_json: bool) -> None:
    """Run the kill switch once (what the daemon does each pass)."""
    from spendwatch.killswitch.engine import run_killswitch

    run = run_killswitch(env.config, env.store, env.clock, actor=_actor(None))
    if as_json:
        lists = ("planned", "executed", "dry_run", "awaiting_approval", "failed", "expired", "reconciled")
        echo_json(
            {"started_at": run.started_at, "paused": run.paused, "unchanged": run.unchanged,
             **{name: [_record_json(r) for r in getattr(run, name)] for name in lists},
             "skipped": [vars(note) for note in run.skipped]}
        )  # fmt: skip
        if run.failed:
            raise SystemExit(1)
        return
    click.echo(run.summary())
    for note in run.skipped:
        click.echo(f"  skipped [{note.rule}] {clean(note.target)}: {clean(note.reason)}")
    for record in run.failed:
        click.echo(f"  failed #{record.id} {clean(record.summary)}: {clean(record.error)}")
    if run.failed:
        raise SystemExit(1)

"""Who may approve, and the re-check of the rule when an approved action is carried out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from spendwatch.cli import main
from spendwatch.clock import SystemClock
from spendwatch.config import load_config
from spendwatch.errors import ConfigError, UserError
from spendwatch.killswitch.config import KillSwitchConfig
from spendwatch.killswitch.engine import KillSwitch, run_killswitch
from spendwatch.killswitch.journal import action_events, get_action
from spendwatch.store import Store
from tests.killswitch.factories import incident, job, rule, settings
from tests.killswitch.test_engine import _instances, _running


def test_may_approve_is_the_allow_list_case_blind() -> None:
    config = settings([rule(how="approve")], approvers=["Lead@Example.com", "oncall"])
    assert config.may_approve("lead@example.com") and config.may_approve(" ONCALL ")
    assert not config.may_approve("mallory") and not config.may_approve("")
    assert not config.may_approve("lead@example.com.evil")


def test_an_approve_rule_needs_approvers() -> None:
    with pytest.raises(ValueError, match=r"killswitch\.approvers"):
        KillSwitchConfig.model_validate({"rules": [rule(how="approve")]})


def test_approvers_config_error_names_the_rule(tmp_path: Path) -> None:
    path = tmp_path / "sw.yaml"
    path.write_text(
        "store: {path: sw.duckdb}\nsources: [{name: demo, type: simulated}]\nkillswitch:\n  rules:\n"
        "    - {name: gpu, when: {incident: {}}, do: stop, how: approve}\n"
    )
    with pytest.raises(ConfigError, match=r"rule gpu: 'how: approve' needs killswitch.approvers"):
        load_config(path)


def test_someone_off_the_list_cannot_approve_or_reject(aws: Any, store: Store, ks_clock: Any) -> None:
    [vm] = _instances(aws, 1)
    config = settings([rule(how="approve")], endpoint=aws.endpoint_url, approvers=["lead"])
    [waiting] = run_killswitch(config, store, ks_clock, incidents=[incident([vm])]).awaiting_approval
    engine = KillSwitch(config, store, ks_clock)
    with pytest.raises(UserError, match=r"'mallory' is not in killswitch\.approvers"):
        engine.approve(waiting.id, "mallory")
    with pytest.raises(UserError, match=r"'mallory' is not in killswitch\.approvers"):
        engine.reject(waiting.id, "mallory")
    assert get_action(store, waiting.id).state == "awaiting-approval"
    assert _running(aws, [vm]) == {vm}
    assert engine.approve(waiting.id, "LEAD").state == "done"


def _approved_then(aws: Any, store: Store, ks_clock: Any, change: dict[str, Any] | None) -> tuple[Any, str]:
    [vm] = _instances(aws, 1)
    config = settings([rule(how="approve")], endpoint=aws.endpoint_url, approvers=["lead"])
    [waiting] = run_killswitch(config, store, ks_clock, incidents=[incident([vm])]).awaiting_approval
    approved = KillSwitch(config, store, ks_clock).approve(waiting.id, "lead", execute=False)
    assert approved.state == "approved"
    rules = [] if change is None else [rule(**change)]
    later = settings(rules, endpoint=aws.endpoint_url, approvers=["lead"])
    run = run_killswitch(later, store, ks_clock, incidents=[])
    assert not run.executed
    return get_action(store, waiting.id), vm


def test_approved_action_whose_rule_was_deleted_does_not_run(aws: Any, store: Store, ks_clock: Any) -> None:
    record, vm = _approved_then(aws, store, ks_clock, None)
    assert record.state == "skipped" and _running(aws, [vm]) == {vm}
    assert "rule r is no longer in the config" in action_events(store, record.id)[-1].detail["reason"]


def test_approved_action_whose_rule_went_dry_run_does_not_run(aws: Any, store: Store, ks_clock: Any) -> None:
    record, vm = _approved_then(aws, store, ks_clock, {"how": "dry-run"})
    assert record.state == "skipped" and _running(aws, [vm]) == {vm}
    assert "rule r is now dry-run" in action_events(store, record.id)[-1].detail["reason"]


def test_approved_action_whose_rule_was_disabled_does_not_run(aws: Any, store: Store, ks_clock: Any) -> None:
    record, vm = _approved_then(aws, store, ks_clock, {"enabled": False})
    assert record.state == "skipped" and _running(aws, [vm]) == {vm}
    assert "rule r is disabled" in action_events(store, record.id)[-1].detail["reason"]


def test_cli_refuses_an_unlisted_approver_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "sw.yaml"
    script = tmp_path / "noop.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    path.write_text(
        f"store: {{path: {tmp_path / 'store.duckdb'}}}\nsources: [{{name: demo, type: simulated}}]\n"
        "killswitch:\n  approvers: [lead]\n  rules:\n"
        f"    - {{name: page, when: {{job: {{}}}}, do: hook, how: approve, hook: {{command: [{script}]}}}}\n"
    )
    config = load_config(path)
    clock = SystemClock()
    store = Store(config.store.path, clock=clock)
    [waiting] = run_killswitch(config, store, clock, jobs=[job("bigquery", "a", provider="gcp")]).awaiting_approval
    runner = CliRunner()
    for verb in ("approve", "reject"):
        result = runner.invoke(main, ["--config", str(path), "actions", verb, str(waiting.id), "--as", "mallory"])
        assert result.exit_code == 2
        assert result.output.strip().splitlines() == [
            "spendwatch: error: 'mallory' is not in killswitch.approvers: only those listed may approve or reject"
        ]
    result = runner.invoke(main, ["--config", str(path), "actions", "approve", str(waiting.id), "--as", "lead"])
    assert result.exit_code == 0 and f"action {waiting.id}: done" in result.output

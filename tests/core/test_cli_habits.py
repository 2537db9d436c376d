"""The CLI matches habits: ``-c/--config`` before or after any subcommand, ``--json`` on every command
that lists or shows, one clear line (exit 2) for a config that is not one."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from spendwatch.cli import main
from tests.doubles.clock import FixedClock
from tests.notify import small_estate
from tests.notify.estate import insert_incident
from tests.notify.small_estate import NOW

READERS = ("list", "show", "status", "audit", "validate")  # commands that list or show something


def leaves(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += leaves(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


def options(command: click.Command) -> set[str]:
    return {opt for param in command.params for opt in getattr(param, "opts", ())}


def test_every_subcommand_takes_config_after_its_name() -> None:
    missing = [" ".join(path) for path, command in leaves(main) if "--config" not in options(command)]
    assert missing == []


def test_every_command_that_lists_or_shows_has_json() -> None:
    readers = [(path, command) for path, command in leaves(main) if path[-1] in READERS]
    assert {" ".join(p) for p, _ in readers} >= {
        "anomalies list", "anomalies show", "actions list", "actions show", "actions status", "budgets list",
        "guard status", "guard audit", "config validate",
    }  # fmt: skip
    assert [" ".join(p) for p, c in readers if "--json" not in options(c)] == []


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    from spendwatch.killswitch.base import Target
    from spendwatch.killswitch.journal import NewAction, plan_action

    folder = tmp_path_factory.mktemp("cli")
    clock = FixedClock(NOW)
    _, store = small_estate.build(folder, clock, budgets=[{"name": "estate", "amount": 50_000}])
    incident = insert_incident(store, now=NOW)
    target = Target("aws", "sagemaker-training-job", "job-1", account="210987654321", owner="ben@example.com")
    new = NewAction("cli:1", "r", incident, "stop", "dry-run", target, "why", True, {})
    action, _ = plan_action(store, new, now=NOW, actor="spendwatch")
    return folder / "spendwatch.yaml", incident, action.id


def run(*argv: str) -> str:
    result = CliRunner().invoke(main, list(argv))
    assert result.exit_code == 0, (argv, result.output)
    return result.output


@pytest.mark.parametrize(
    "command",
    [["anomalies", "list"], ["actions", "list"], ["actions", "status"], ["budgets", "list", "--date", "2026-11-03"]],
    ids=lambda c: " ".join(c[:2]),
)
def test_config_before_or_after_the_subcommand_is_the_same(world: tuple[Path, int, int], command: list[str]) -> None:
    config = str(world[0])
    before = run("-c", config, *command)
    assert run(*command, "-c", config) == before
    assert run(*command, "--config", config) == before
    assert before.strip()


@pytest.mark.parametrize(
    "command",
    [
        ["anomalies", "list"],
        ["anomalies", "show", "{incident}"],
        ["actions", "list"],
        ["actions", "show", "{action}"],
        ["actions", "status"],
        ["budgets", "list", "--date", "2026-11-03"],
        ["guard", "status"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_json_output_is_json(world: tuple[Path, int, int], command: list[str]) -> None:
    config, incident, action = world
    argv = [part.format(incident=incident, action=action) for part in command]
    output = run(*argv, "--json", "-c", str(config))
    if "\n{" in output.strip() or output.lstrip().startswith("{\n"):
        documents = [json.loads(output)] if output.lstrip().startswith("{\n") else []
    else:
        documents = []
    if not documents:
        documents = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert documents, output
    if argv[:2] == ["anomalies", "show"]:
        assert documents[0]["id"] == incident
    if argv[:2] == ["actions", "show"]:
        assert documents[0]["id"] == action and documents[0]["events"]
    if argv[:2] == ["budgets", "list"]:
        assert documents[0]["name"] == "estate" and documents[0]["month"] == "2026-11"


def test_config_validate_json(world: tuple[Path, int, int]) -> None:
    summary = json.loads(run("config", "validate", str(world[0]), "--json"))
    assert summary["valid"] and summary["budgets"][0]["name"] == "estate"
    assert [s["type"] for s in summary["sources"]] == ["focus"]


def test_a_store_file_given_as_the_config_is_one_clear_line(world: tuple[Path, int, int]) -> None:
    store = world[0].parent / "small.duckdb"
    for argv in (["-c", str(store), "anomalies", "list"], ["anomalies", "list", "-c", str(store)]):
        result = CliRunner().invoke(main, argv)
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and "small.duckdb" in lines[0] and "Traceback" not in result.output


def test_budgets_list_without_budgets_says_how_to_add_them(tmp_path: Path) -> None:
    small_estate.build(tmp_path, FixedClock(datetime(2026, 11, 4, tzinfo=UTC)))
    output = run("budgets", "list", "-c", str(tmp_path / "spendwatch.yaml"))
    assert "no budgets configured" in output and "budgets:" in output

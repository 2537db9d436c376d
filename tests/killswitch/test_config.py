"""Every kill-switch validator fed bad input: one line naming file:line and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from spendwatch.config import load_config
from spendwatch.errors import ConfigError

HEAD = """store:
  path: sw.duckdb
sources:
  - name: demo
    type: simulated
killswitch:
"""


def _load(tmp_path: Path, section: str) -> object:
    path = tmp_path / "spendwatch.yaml"
    path.write_text(HEAD + section)
    return load_config(path)


def test_defaults_are_safe(tmp_path: Path) -> None:
    config = _load(tmp_path, "  rules:\n    - name: r\n      when: {incident: {min_severity: high}}\n      do: stop\n")
    ks = config.killswitch  # type: ignore[attr-defined]
    assert ks.rules[0].how == "dry-run"
    assert ks.approval_expiry.total_seconds() == 24 * 3600
    assert ks.protection.tags["spendwatch:protect"] == ["true", "yes", "1"]
    assert ks.caps.max_actions_per_run == 5 and not ks.allow_disable_billing


@pytest.mark.parametrize(
    ("section", "line", "message"),
    [
        ("  rules:\n    - name: r\n      when: {incident: {}}\n      do: explode\n", 10, "unknown verb 'explode'"),
        (
            "  rules:\n    - name: r\n      when: {incident: {}}\n      do: stop\n      resource_types: [ec2-vm]\n",
            11,
            "unknown resource type 'ec2-vm'",
        ),
        (
            "  rules:\n    - name: r\n      when: {incident: {}}\n      do: pause\n      resource_types: [ec2-instance]\n",
            8,
            "ec2-instance cannot 'pause'",
        ),
        (
            "  rules:\n    - name: r\n      when: {incident: {}}\n      do: cancel\n      how: enforce\n",
            8,
            "needs 'allow_irreversible: true'",
        ),
        (
            "  rules:\n    - name: r\n      when: {incident: {}}\n      do: disable-billing\n",
            6,
            "allow_disable_billing",
        ),
        ("  rules:\n    - name: r\n      when: {}\n      do: stop\n", 9, "exactly one of 'incident' or 'job'"),
        (
            "  rules:\n    - name: r\n      when: {incident: {}, job: {}}\n      do: stop\n",
            9,
            "exactly one of 'incident' or 'job'",
        ),
        ("  rules:\n    - name: r\n      when: {incident: {}}\n      do: hook\n", 8, "needs a 'hook:' block"),
        (
            "  rules:\n    - name: r\n      when: {incident: {}}\n      do: hook\n      hook: {command: [a], url: 'http://x'}\n",
            11,
            "exactly one of 'command' or 'url'",
        ),
        (
            "  rules:\n    - name: r\n      when: {incident: {}}\n      do: stop\n      hook: {command: [a]}\n",
            8,
            "only for 'do: hook'",
        ),
        (
            "  rules:\n    - name: r\n      when: {incident: {}}\n      do: stop\n      resource_types: [ec2-instance]\n"
            "      options: {hibernat: true}\n",
            8,
            "options for ec2-instance-stop: hibernat: unknown key",
        ),
        ("  rules:\n    - name: r\n      when: {incident: {min_severity: huge}}\n      do: stop\n", 9, "min_severity"),
        ("  rules:\n    - name: r\n      when: {incident: {}}\n      do: stop\n      how: yolo\n", 11, "how"),
        ("  aws_accounts: {'12345': {region: us-east-1}}\n", 7, "12-digit"),
        ("  caps: {max_actions_per_run: -1}\n", 7, "max_actions_per_run"),
        ("  approval_expiry: soon\n", 7, "not a duration"),
        (
            "  rules:\n    - {name: r, when: {incident: {}}, do: stop}\n    - {name: r, when: {incident: {}}, do: stop}\n",
            7,
            "used twice",
        ),
        ("  rulez: []\n", 7, "unknown key"),
    ],
)
def test_bad_killswitch_config(tmp_path: Path, section: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, section)
    text = str(info.value)
    assert "\n" not in text
    assert message in text
    assert f"spendwatch.yaml:{line}:" in text and "killswitch" in text

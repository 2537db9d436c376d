"""Every hostile string of the corpus through every output: zero injections, zero crashes.

For each string a store holds an incident whose every dimension, contributor, job field and currency
is that string, cost lines whose every text column and tag is that string, and kill-switch actions
planned on its targets (four strings share a store, each with its own records, to keep the run
short). Then, through the public entry points:

* the digest (``spendwatch digest --to-dir``): the HTML has no element, attribute or URL the benign
  digest does not have; the text part no control character; the ``.eml`` headers are the benign
  ones, each on one line; charts render;
* alerts (``run_alerts``) to a webhook of every chat format and to a folder channel: no mention,
  link, image, tag or control character a chat would act on; alert emails' headers are clean;
  every file the folder channel writes has a safe name inside its folder;
* the CLI (anomalies and actions, list and show): no control character reaches the terminal and no
  line is forged;
* ``costs export`` to CSV: no cell a spreadsheet would evaluate; to Parquet: the values unchanged.
"""

from __future__ import annotations

import csv
import email
import json
import re
import sys
from dataclasses import dataclass, replace
from datetime import timedelta
from email import policy
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from spendwatch.cli import main
from spendwatch.config import load_config
from spendwatch.killswitch.engine import run_killswitch
from spendwatch.notify.alerts import action_alert, incident_alert, run_alerts
from spendwatch.notify.chat import CHAT_FORMATS, render_chat
from spendwatch.notify.config import NotifyConfig
from spendwatch.store import Store
from spendwatch.terminal import clean
from tests.doubles.clock import FixedClock
from tests.security.conftest import Receiver
from tests.security.corpus import HOSTILE
from tests.security.detectors import chat_injections, formula_cells, terminal_injections
from tests.security.records import (
    NOW,
    hostile_action,
    hostile_cost_lines,
    hostile_incident,
    hostile_settings,
    store_incident,
)

pytestmark = pytest.mark.slow  # runs first (tests/conftest.py): it is among the suite's longest files

BENIGN = "benign-value"
csv.field_size_limit(sys.maxsize)  # the 100 000-character strings make long cells
SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
URL_ATTRIBUTES = {"href", "src", "action", "background", "poster", "formaction"}


def _config(folder: Path, receiver: Receiver) -> Path:
    hooks = [{"name": f"chat-{f}", "type": "webhook", "url": f"{receiver.url}/{f}", "format": f} for f in CHAT_FORMATS]
    config = {
        "store": {"path": "s.duckdb"},
        "sources": [{"name": "bills", "type": "simulated"}],
        "notify": {
            "from": "spendwatch <spendwatch@example.com>",
            "channels": [*hooks, {"name": "outbox", "type": "folder", "path": "outbox"}],
            "digest": {"channel": "outbox", "recipients": ["finops@example.com"]},
            "alerts": {"channels": [h["name"] for h in hooks] + ["outbox"], "min_severity": "low",
                       "recipients": ["ops@example.com"],
                       "action_states": ["awaiting-approval", "done", "failed"]},
        },
    }  # fmt: skip
    path = folder / "sw.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _fill(folder: Path, texts: list[str]) -> Store:
    """One incident, its cost lines and its journaled actions per string, all in one store."""
    clock = FixedClock(NOW)
    store = Store(folder / "s.duckdb", clock=clock)
    # The digest dated NOW reports on the day before.
    start = NOW.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    lines = pa.concat_tables([hostile_cost_lines(text, start) for text in texts])
    store.replace_cost_lines("bills", start, start + timedelta(days=1), lines)
    incidents = [hostile_incident(text, incident_id=0) for text in texts]
    incidents = [replace(i, id=store_incident(store, i)) for i in incidents]
    run_killswitch(hostile_settings(texts[0]), store, clock, incidents=incidents)
    return store


@dataclass
class Seen:
    """Everything one string produced, by output."""

    html: str
    text: str
    eml: list[bytes]
    chats: dict[str, list[Any]]
    files: list[Path]
    cli: dict[str, str]
    csv_rows: list[list[str]]
    parquet_values: list[Any]


def _run(folder: Path, receiver: Receiver, texts: list[str]) -> Seen:
    config_path = _config(folder, receiver)
    store = _fill(folder, texts)
    runner = CliRunner()
    cli = {}
    base = ["--config", str(config_path)]
    count = len(texts)
    for args in (
        ["digest", "--to-dir", str(folder / "digest"), "--date", NOW.date().isoformat()],
        ["anomalies", "list", "--all"], *[["anomalies", "show", str(i)] for i in range(1, count + 1)],
        ["actions", "list"], *[["actions", "show", str(i)] for i in range(1, 2 * count + 1)],
        ["costs", "export", "-o", str(folder / "export.csv")],
        ["costs", "export", "-o", str(folder / "export.parquet")],
    ):  # fmt: skip
        result = runner.invoke(main, [*base, *args])
        assert result.exit_code == 0, (args, result.output, result.exception)
        cli[" ".join(args)] = result.output + (result.stderr if result.stderr_bytes else "")
    run = run_alerts(load_config(config_path, environ={}), store, FixedClock(NOW))
    assert run.failed == 0, run.errors
    assert run.sent >= 2 * count * (len(CHAT_FORMATS) + 1)  # each incident and its action, on every channel
    [html] = (folder / "digest").glob("*.html")
    [txt] = (folder / "digest").glob("*.txt")
    with (folder / "export.csv").open(newline="", encoding="utf-8", errors="surrogateescape") as handle:
        rows = list(csv.reader(handle))
    return Seen(
        html=html.read_text(encoding="utf-8"),
        text=txt.read_text(encoding="utf-8"),
        eml=[p.read_bytes() for p in [*(folder / "digest").glob("*.eml"), *(folder / "outbox").glob("*.eml")]],
        chats={f: [p for path, p in receiver.posts_by_path() if path.endswith(f"/{f}")] for f in CHAT_FORMATS},
        files=[p for p in (folder / "outbox").rglob("*") if p.is_file()],
        cli=cli,
        csv_rows=rows,
        parquet_values=pq.read_table(folder / "export.parquet").column("SubAccountId").to_pylist(),
    )


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            self.attributes.add(f"{tag}.{name}")
            if name in URL_ATTRIBUTES and value is not None:
                self.urls.append(value)


def _html(markup: str) -> _Html:
    parser = _Html()
    parser.feed(markup)
    parser.close()
    return parser


def _headers(raw: bytes) -> tuple[set[str], list[str]]:
    message = email.message_from_bytes(raw, policy=policy.default)
    problems = [f"{k}: {v!r}" for k, v in message.items() if "\r" in str(v) or "\n" in str(v)]
    return {k.lower() for k in message}, problems


@pytest.fixture(scope="module")
def benign(tmp_path_factory: pytest.TempPathFactory) -> Seen:
    receiver = Receiver()
    try:
        return _run(tmp_path_factory.mktemp("benign"), receiver, [f"{BENIGN}-{i}" for i in range(GROUP)])
    finally:
        receiver.stop()


def _storable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


STORABLE = sorted(name for name, text in HOSTILE.items() if _storable(text))
UNSTORABLE = sorted(set(HOSTILE) - set(STORABLE))
# A store per group of strings: each string is its own incident, cost lines and actions, and every one
# of them reaches every output (the digest lists up to its max_incidents, alerts go out for each).
GROUP = 4
GROUPS = [STORABLE[i : i + GROUP] for i in range(0, len(STORABLE), GROUP)]


@pytest.mark.parametrize("name", UNSTORABLE)
def test_a_string_no_store_can_hold_is_still_safe_in_memory(name: str) -> None:
    """Lone surrogates (undecodable bytes kept by ``surrogateescape``) cannot be stored, so they can only
    meet the renderers in memory: alerts in every chat format and as email, and the terminal."""
    text = HOSTILE[name]
    for alert in (
        incident_alert(hostile_incident(text), NotifyConfig(), ("ops@example.com",)),
        action_alert(hostile_action(text), NotifyConfig(), ("ops@example.com",)),
    ):
        assert alert.chat is not None and alert.email is not None
        for chat_format in CHAT_FORMATS:
            payload = render_chat(alert.chat, chat_format)
            json.dumps(payload, ensure_ascii=False).encode("utf-8")  # sendable as UTF-8
            assert chat_injections(payload, chat_format) == []
        names, problems = _headers(alert.email.wire_bytes())
        assert problems == [] and "bcc" not in names
    assert terminal_injections(clean(text)) == []


@pytest.mark.parametrize("names", GROUPS, ids=["+".join(g) for g in GROUPS])
def test_hostile_strings_through_every_output(
    names: list[str], tmp_path: Path, receiver: Receiver, benign: Seen
) -> None:
    texts = [HOSTILE[name] for name in names]
    seen = _run(tmp_path, receiver, texts + [f"{BENIGN}-{i}" for i in range(len(names), GROUP)])

    # Digest HTML: no element, attribute or URL the benign digest does not have.
    page, clean = _html(seen.html), _html(benign.html)
    assert page.tags <= clean.tags, page.tags - clean.tags
    assert page.attributes <= clean.attributes, page.attributes - clean.attributes
    ours = ("cid:", "data:image/png;base64,")  # the charts, inline or attached
    assert not [u for u in page.urls if u not in clean.urls and not u.startswith(ours)], page.urls
    # Digest text and every header of every email.
    assert terminal_injections(seen.text) == []
    assert seen.eml
    benign_headers = set().union(*(_headers(raw)[0] for raw in benign.eml))
    for raw in seen.eml:
        names, problems = _headers(raw)
        assert problems == [] and names <= benign_headers, (problems, names - benign_headers)
    # Every chat format.
    for chat_format, posts in seen.chats.items():
        assert posts, chat_format
        for post in posts:
            assert chat_injections(post, chat_format) == [], (chat_format, post)
    # Files the folder channel wrote: safe names, inside its folder.
    assert seen.files
    for path in seen.files:
        assert SAFE_NAME.match(path.name) and path.parent == tmp_path / "outbox", path
    # The terminal: no control characters, no forged line.
    for command, output in seen.cli.items():
        assert terminal_injections(output) == [], command
        assert not any(line.startswith(("FORGED", "Bcc:", "Subject:")) for line in output.splitlines()), command
    # FOCUS export: no formulas in CSV, Parquet unchanged.
    assert formula_cells(seen.csv_rows) == []
    assert len(seen.csv_rows) == len(benign.csv_rows)
    for text in texts:
        if text and "\x00" not in text:
            assert text in seen.parquet_values


def test_the_corpus_is_big_enough_and_the_detectors_bite() -> None:
    """At least 40 strings, and every detector flags the raw form of what it looks for."""
    assert len(HOSTILE) >= 40
    assert chat_injections({"text": HOSTILE["slack-channel"]}, "slack")
    assert chat_injections({"text": HOSTILE["md-link"]}, "mattermost")
    assert chat_injections({"text": HOSTILE["md-image"]}, "rocketchat")
    assert chat_injections({"text": HOSTILE["teams-at"]}, "teams")
    assert chat_injections({"text": HOSTILE["mentions"]}, "mattermost")
    assert terminal_injections(HOSTILE["osc52"]) and terminal_injections(HOSTILE["bidi"])
    assert formula_cells([[HOSTILE["csv-hyperlink"], "-3.5"]]) == [HOSTILE["csv-hyperlink"]]
    assert _html(HOSTILE["img-onerror"]).attributes == {"img.src", "img.onerror"}

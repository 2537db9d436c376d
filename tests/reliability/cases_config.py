"""Bad config files: keys, values, YAML, encodings, interpolation. Each is one line naming file, line and key."""

from __future__ import annotations

from tests.reliability.corpus import Build, Case, Workspace, case

SRC = "sources:\n  - {name: f, type: focus, path: base}\n"


def config(text: str | bytes, *, command: tuple[str, ...] = ("validate",), name: str = "bad.yaml") -> Build:
    """Write ``text`` as the config; run ``config validate`` on it, or a command with ``-c`` (default validate)."""

    def build(workspace: Workspace) -> list[str]:
        path = workspace.write(name, text)
        if command == ("validate",):
            return ["config", "validate", str(path)]
        return ["-c", str(path), *command]

    return build


def source(extra: str, *, kind: str = "focus", path: str = "base") -> str:
    """One source with ``extra`` keys (``every: 0s``) in flow style."""
    keys = f"name: f, type: {kind}" + (f", path: {path}" if kind == "focus" else "") + (f", {extra}" if extra else "")
    return f"sources:\n  - {{{keys}}}\n"


def cfg(id: str, text: str | bytes, *expect: str, command: tuple[str, ...] = ("validate",)) -> Case:
    return case("config", id, config(text, command=command), "bad.yaml", *expect, store="bytes")


BILLION_LAUGHS = "\n".join(
    [
        "a: &a [x, x, x, x, x, x, x, x, x, x]",
        "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]",
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]",
        "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]",
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]",
        "f: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]",
    ]
)

CASES: list[Case] = [
    # -- durations -----------------------------------------------------------------------------------
    cfg("every-overflow-days", source("every: 99999999999d"), ":2:", "sources[0].every", "at most 36500 days"),
    cfg("every-1e400", source("every: 1.0e+400"), "sources[0].every", "at most"),
    cfg("every-zero", source("every: 0s"), "sources[0].every", "at least 1s"),
    cfg("every-negative", source("every: -5"), "sources[0].every", "negative"),
    cfg("every-nan", source("every: .nan"), "sources[0].every", "NaN"),
    cfg("every-words", source("every: soon"), "sources[0].every", "'soon' is not a duration"),
    cfg("every-bool", source("every: true"), "sources[0].every", "duration"),
    cfg("every-huge-int", source("every: 1" + "0" * 400), "sources[0].every", "at most"),
    cfg("backfill-weeks", source("backfill: 1000000w"), "sources[0].backfill", "at most"),
    cfg("settle-lag-unit", source("settle_lag: 3 days"), "sources[0].settle_lag", "not a duration"),
    cfg("lock-timeout-inf", f"store: {{lock_timeout: .inf}}\n{SRC}", "store.lock_timeout", "at most"),
    cfg("retention-too-short", f"store: {{retention: 1h}}\n{SRC}", "store.retention", "at least 1d"),
    cfg("daemon-every-zero", f"{SRC}daemon: {{detect_every: 0s}}\n", "daemon.detect_every", "at least 1s"),
    cfg("shutdown-grace-long", f"{SRC}daemon: {{shutdown_grace: 30s}}\n", "daemon.shutdown_grace", "at most 9s"),
    # -- memory_limit (never reaches SQL) ---------------------------------------------------------------
    cfg("memory-lots", f"store: {{memory_limit: lots}}\n{SRC}", "store.memory_limit", "'lots' is not a memory size"),
    cfg(
        "memory-sql-paste",
        f'store: {{memory_limit: "1GB\'; DROP TABLE cost_lines; --"}}\n{SRC}',
        "store.memory_limit",
        "not a memory size",
    ),
    cfg("memory-zero", f"store: {{memory_limit: 0GB}}\n{SRC}", "store.memory_limit", "not a memory size"),
    cfg("memory-no-unit", f"store: {{memory_limit: 12}}\n{SRC}", "store.memory_limit", "not a memory size"),
    cfg("memory-percent", f"store: {{memory_limit: 150%}}\n{SRC}", "store.memory_limit", "at most 100%"),
    cfg(
        "memory-lots-collect",
        f"store: {{memory_limit: lots, path: store.duckdb}}\n{SRC}",
        "store.memory_limit",
        command=("collect",),
    ),
    # -- YAML itself -----------------------------------------------------------------------------------
    cfg("duplicate-store", f"store: {{path: a.duckdb}}\nstore: {{path: b.duckdb}}\n{SRC}", ":2:", "store", "twice"),
    cfg(
        "duplicate-source-key",
        "sources:\n  - name: f\n    type: focus\n    path: base\n    path: other\n",
        ":5:",
        "sources[0].path",
        "first on line 4",
    ),
    cfg("duplicate-daemon-key", f"{SRC}daemon:\n  timezone: UTC\n  timezone: Europe/Madrid\n", "daemon.timezone"),
    cfg("duplicate-in-collect", f"store: {{}}\nstore: {{}}\n{SRC}", "store", "twice", command=("collect",)),
    cfg("billion-laughs", BILLION_LAUGHS, "expands to more than"),
    cfg("syntax-indent", "sources:\n  - name: f\n   type: focus\n", "YAML syntax error"),
    cfg("syntax-tab", "sources:\n\t- name: f\n", ":2:", "YAML syntax error"),
    cfg("control-character", f"{SRC}# \x01\n", ":3:", "special characters"),
    cfg("unclosed-bracket", "sources: [\n", "YAML syntax error"),
    cfg("top-level-list", "- a\n- b\n", "top level must be a mapping"),
    cfg("top-level-scalar", "hello\n", "top level must be a mapping"),
    # -- encodings -------------------------------------------------------------------------------------
    cfg("latin-1", f"{SRC}# caf\xe9\n".encode("latin-1"), ":3:", "not UTF-8", "0xe9"),
    cfg("binary", b"\x00\x01\x02\x03garbage\x00", "not a text file"),
    cfg("utf-16", f"{SRC}".encode("utf-16"), "UTF-16"),
    cfg("utf-32", f"{SRC}".encode("utf-32"), "UTF-32"),
    cfg("gzip-by-mistake", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\x00\x00", "not a text file"),
    # -- ${ENV} interpolation ----------------------------------------------------------------------------
    cfg(
        "env-unclosed",
        f'{SRC}notify:\n  channels:\n    - {{name: m, type: smtp, host: h, password: "${{SMTP_PASSWORD"}}\n',
        "notify.channels[0].password",
        "not a complete",
    ),
    cfg(
        "env-unset",
        source("backfill: '${SPENDWATCH_TEST_UNSET_VARIABLE}'"),
        "SPENDWATCH_TEST_UNSET_VARIABLE",
        "not set",
    ),
    cfg("env-bad-name", source("backfill: '${1DAYS}'"), "sources[0].backfill", "not a complete"),
    cfg("env-empty-braces", source("backfill: '${}'"), "sources[0].backfill", "not a complete"),
    # -- keys and values --------------------------------------------------------------------------------
    cfg("unknown-top-key", f"storee: {{}}\n{SRC}", ":1:", "storee", "unknown key", "'store'"),
    cfg("unknown-source-key", source("pth: x"), "sources[0].pth", "unknown key"),
    cfg("unknown-source-type", "sources:\n  - {name: f, type: focuss}\n", "sources[0].type", "unknown source type"),
    cfg("source-without-type", "sources:\n  - {name: f, path: x}\n", "sources[0].type", "'type' is required"),
    cfg("source-bad-name", "sources:\n  - {name: My Source, type: focus, path: x}\n", "sources[0].name"),
    cfg("source-names-twice", f"{SRC}  - {{name: f, type: focus, path: other}}\n", "sources", "used twice"),
    cfg("no-sources", "sources: []\n", "sources", "at least 1"),
    cfg("sources-missing", "store: {}\n", "sources", "required key is missing"),
    cfg("empty-file", "", "sources", "required key is missing"),
    cfg("focus-without-path", "sources:\n  - {name: f, type: focus}\n", "sources[0].path", "required"),
    cfg("simulated-days", source("days: 5", kind="simulated"), "sources[0].days", "greater than or equal to 14"),
    cfg("timezone", f"{SRC}daemon: {{timezone: Mars/Olympus}}\n", "daemon.timezone", "IANA"),
    cfg("digest-at", f"{SRC}daemon: {{digest_at: '25:00'}}\n", "daemon.digest_at", "not a time of day"),
    cfg("digest-days", f"{SRC}daemon: {{digest_days: funday}}\n", "daemon.digest_days", "day-of-week"),
    cfg("health-port", f"{SRC}daemon: {{health: {{port: 70000}}}}\n", "daemon.health.port"),
    cfg("max-workers", f"{SRC}daemon: {{max_workers: 0}}\n", "daemon.max_workers"),
    cfg("cost-column", f"{SRC}detection: {{cost_column: net}}\n", "detection.cost_column"),
    cfg("rescore-zero", f"{SRC}detection: {{rescore_daily: 0}}\n", "detection.rescore_daily"),
    cfg(
        "severity-order",
        f"{SRC}detection: {{severity: {{medium: 500, high: 100}}}}\n",
        "detection.severity",
        "medium <= high",
    ),
    cfg("severity-negative", f"{SRC}detection: {{severity: {{medium: -1}}}}\n", "detection.severity.medium"),
    cfg("channel-type", f"{SRC}notify: {{channels: [{{name: m, type: pigeon}}]}}\n", "notify.channels[0].type"),
    cfg("smtp-port-text", f"{SRC}notify: {{channels: [{{name: m, type: smtp, host: h, port: lots}}]}}\n", "port"),
    cfg(
        "guard-sources",
        f"{SRC}guard: {{sources: [f]}}\n",
        "guard.sources",
        "not an aws-jobs, gcp-jobs or kubernetes-jobs source",
    ),
    cfg("snapshots-keep", f"store: {{snapshots: {{keep: -1}}}}\n{SRC}", "store.snapshots.keep"),
    cfg("monitor-dimension", f"{SRC}monitors: [{{name: m, dimensions: [colour]}}]\n", "monitors[0].dimensions"),
]


def missing_config(workspace: Workspace) -> list[str]:
    return ["-c", str(workspace.root / "nowhere.yaml"), "collect"]


def folder_config(workspace: Workspace) -> list[str]:
    (workspace.root / "a-folder.yaml").mkdir()
    return ["config", "validate", str(workspace.root / "a-folder.yaml")]


CASES += [
    case("config", "config-missing", missing_config, "nowhere.yaml", "no such config file", store="bytes"),
    case("config", "config-is-a-folder", folder_config, "a-folder.yaml", store="bytes"),
]

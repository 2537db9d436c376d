"""Bad CLI arguments, and a store file or folder that cannot be used. Each names the argument or the file."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from spendwatch.store import SCHEMA_VERSION
from spendwatch.store.locks import RWFileLock, SingletonLock
from tests.reliability.corpus import BASE_CONFIG, Build, Case, Workspace, case


def cli(*argv: str, before: Callable[[Workspace], None] | None = None) -> Build:
    """``spendwatch -c spendwatch.yaml ARGV`` on the filled workspace; ``{root}`` in ARGV is its folder."""

    def build(workspace: Workspace) -> list[str]:
        if before is not None:
            before(workspace)
        return ["-c", str(workspace.config), *(a.replace("{root}", str(workspace.root)) for a in argv)]

    return build


def arg(id: str, build: Build, *expect: str, store: str = "bytes") -> Case:
    return case("cli", id, build, *expect, store=store)


def _file_named_file(workspace: Workspace) -> None:
    workspace.write("file", "a file, not a folder")


def _folder_named_out(workspace: Workspace) -> None:
    (workspace.root / "out.csv").mkdir()


CLI_CASES: list[Case] = [
    arg("collect-since-month-13", cli("collect", "--since", "2026-13-01"), "--since", "'2026-13-01'"),
    arg("collect-since-words", cli("collect", "--since", "yesterday"), "--since", "does not match the format"),
    arg("collect-unknown-source", cli("collect", "--source", "nope"), "no source named 'nope'"),
    arg("collect-unknown-option", cli("collect", "--sorce", "base"), "No such option", "--sorce"),
    arg("unknown-command", cli("colect"), "No such command 'colect'"),
    arg("log-level", cli("--log-level", "LOUD", "collect"), "--log-level", "'LOUD'"),
    arg("export-suffix", cli("costs", "export", "-o", "{root}/out.txt"), "out.txt", "use .parquet or .csv"),
    arg("export-no-folder", cli("costs", "export", "-o", "{root}/nodir/x.csv"), "--output", "does not exist"),
    arg(
        "export-parent-is-a-file",
        cli("costs", "export", "-o", "{root}/file/x.parquet", before=_file_named_file),
        "--output",
        "is a file, not a folder",
    ),
    arg(
        "export-to-a-folder",
        cli("costs", "export", "-o", "{root}/out.csv", before=_folder_named_out),
        "--output",
        "is a directory",
    ),
    arg(
        "export-since-after-until",
        cli("costs", "export", "-o", "{root}/x.csv", "--since", "2026-12-01", "--until", "2026-11-01"),
        "--since 2026-12-01",
        "--until 2026-11-01",
    ),
    arg("export-until-words", cli("costs", "export", "-o", "{root}/x.csv", "--until", "soon"), "--until"),
    arg("export-no-output", cli("costs", "export"), "Missing option", "--output"),
    arg("anomalies-status", cli("anomalies", "list", "--status", "bogus"), "--status", "'bogus' is not one of"),
    arg("anomalies-limit-zero", cli("anomalies", "list", "--limit", "0"), "--limit", "0"),
    arg("anomalies-show-unknown", cli("anomalies", "show", "999"), "999"),
    arg("anomalies-show-words", cli("anomalies", "show", "latest"), "INCIDENT_ID", "'latest'"),
    arg("anomalies-ack-unknown", cli("anomalies", "ack", "999"), "999"),
    arg("anomalies-expected-unknown", cli("anomalies", "expected", "4242"), "4242"),
    arg("detect-unknown-monitor", cli("detect", "--monitor", "nope"), "nope", store="totals"),
    arg("digest-date", cli("digest", "--date", "2026-02-30"), "--date", "'2026-02-30'"),
    arg("actions-show-unknown", cli("actions", "show", "999"), "999"),
    arg("demo-days", cli("demo", "--days", "5", "-o", "{root}/demo"), "--days", "5"),
    arg("config-validate-no-file", cli("config", "validate"), "Missing argument 'FILE'"),
    arg("backtest-no-output", cli("backtest", "{root}/series.csv"), "Missing option", "--output"),
    arg(
        "store-restore-unknown-snapshot", cli("store", "restore", "--force", "--snapshot", "nope.duckdb"), "nope.duckdb"
    ),
    arg("store-restore-healthy", cli("store", "restore", "--force"), "no snapshots in"),
    arg("store-restore-nothing-wrong", cli("store", "restore"), "reads cleanly", "nothing to restore"),
]


# -- the store file and its folder --------------------------------------------------------------------


def store_at(path: str, *argv: str, before: Callable[[Workspace], None] | None = None) -> Build:
    """A config whose store is ``path`` (relative to the workspace), then ``argv``."""

    def build(workspace: Workspace) -> list[str]:
        if before is not None:
            before(workspace)
        workspace.write("spendwatch.yaml", BASE_CONFIG.replace("path: store.duckdb", f"path: {path}"))
        return ["-c", str(workspace.config), *argv]

    return build


def damage(edit: Callable[[bytes], bytes]) -> Callable[[Workspace], None]:
    def before(workspace: Workspace) -> None:
        workspace.store.write_bytes(edit(workspace.store.read_bytes()))

    return before


BLOCK, HEADERS = 262144, 3 * 4096


def _corrupt_middle(data: bytes) -> bytes:
    """Flip bytes inside every block that holds something: metadata and table data alike."""
    out = bytearray(data)
    for start in range(HEADERS, len(data), BLOCK):
        if any(out[start : start + BLOCK]):
            for offset in range(start + 64, min(start + BLOCK, len(out)), 4096):
                out[offset] ^= 0xFF
    return bytes(out)


def _newer_schema(workspace: Workspace) -> None:
    con = duckdb.connect(str(workspace.store))
    con.execute("INSERT INTO schema_version VALUES (?, now())", [SCHEMA_VERSION + 1])
    con.close()


def _lock_folder(name: str) -> Callable[[Workspace], None]:
    def before(workspace: Workspace) -> None:
        (workspace.root / name).unlink(missing_ok=True)
        (workspace.root / name).mkdir()

    return before


def _damaged_with_bad_snapshot(workspace: Workspace) -> None:
    folder = workspace.root / "store.duckdb.snapshots"
    folder.mkdir()
    shutil.copy(workspace.store, folder / "snapshot-20261101T000000Z.duckdb")
    damage(lambda b: b[:4096])(workspace)
    snapshot = folder / "snapshot-20261101T000000Z.duckdb"
    snapshot.write_bytes(snapshot.read_bytes()[:8192])


def store_case(id: str, build: Build, *expect: str, mode: str = "bytes") -> Case:
    return case("store", id, build, *expect, store=mode)


STORE_CASES: list[Case] = [
    store_case(
        "parent-is-a-file",
        store_at("file/s.duckdb", "collect", before=_file_named_file),
        "file/s.duckdb",
        "a file is in the way",
    ),
    store_case(
        "lock-is-a-folder",
        store_at("store.duckdb", "anomalies", "list", before=_lock_folder("store.duckdb.lock")),
        "store.duckdb.lock is a folder",
    ),
    store_case(
        "turnstile-is-a-folder",
        store_at("store.duckdb", "collect", before=_lock_folder("store.duckdb.lock.turnstile")),
        "store.duckdb.lock.turnstile is a folder",
    ),
    store_case(
        "store-is-a-folder",
        store_at("a-folder", "anomalies", "list", before=_lock_folder("a-folder")),
        "a-folder is a folder",
    ),
    store_case(
        "daemon-lock-is-a-folder",
        store_at("store.duckdb", "run", before=_lock_folder("store.duckdb.daemon.lock")),
        "store.duckdb.daemon.lock is a folder",
    ),
    store_case(
        "text-file",
        cli("anomalies", "list", before=damage(lambda _: b"hello, I am not a database\n")),
        "store.duckdb is damaged",
        "store restore",
    ),
    store_case("truncated-4k", cli("collect", before=damage(lambda b: b[:4096])), "store.duckdb is damaged"),
    store_case("headers-only", cli("detect", before=damage(lambda b: b[:HEADERS])), "store.duckdb is damaged"),
    store_case(
        "corrupt-block-check",
        cli("store", "check", before=damage(_corrupt_middle)),
        "store.duckdb is damaged",
        "no snapshot",
    ),
    store_case(
        "corrupt-block-export",
        cli("costs", "export", "-o", "{root}/x.csv", before=damage(_corrupt_middle)),
        "store.duckdb is damaged",
    ),
    store_case("newer-schema", cli("anomalies", "list", before=_newer_schema), "newer than this spendwatch"),
    store_case(
        "restore-without-snapshots",
        cli("store", "restore", before=damage(lambda b: b[:4096])),
        "no snapshots in",
        "store.duckdb.snapshots",
    ),
    store_case(
        "restore-from-a-bad-snapshot",
        cli("store", "restore", before=_damaged_with_bad_snapshot),
        "none of the 1 snapshot(s)",
    ),
    store_case(
        "snapshot-of-a-damaged-store",
        cli("store", "snapshot", before=damage(_corrupt_middle)),
        "is damaged",
        "no snapshot taken",
    ),
]


@contextmanager
def _held(path: Path, singleton: bool) -> Iterator[None]:
    if singleton:
        lock = SingletonLock(path)
        lock.acquire()
        try:
            yield
        finally:
            lock.release()
    else:
        with RWFileLock(path).hold(exclusive=True, timeout=5):
            yield


def while_held(lock_name: str, argv: list[str], *, singleton: bool, config: str) -> Build:
    """Run ``argv`` while this process holds a lock another spendwatch would (a second file description)."""

    def build(workspace: Workspace) -> list[str]:
        workspace.write("spendwatch.yaml", config)
        holder = _held(workspace.root / lock_name, singleton)
        holder.__enter__()
        workspace.cleanups.append(lambda: holder.__exit__(None, None, None))
        return ["-c", str(workspace.config), *argv]

    return build


def port_taken(workspace: Workspace) -> list[str]:
    """``run`` while another program listens on the health port (the socket is closed afterwards)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    workspace.cleanups.append(listener.close)
    port = listener.getsockname()[1]
    workspace.write("spendwatch.yaml", BASE_CONFIG + f"daemon: {{health: {{port: {port}}}}}\n")
    return ["-c", str(workspace.config), "run"]


STORE_CASES += [
    case("store", "health-port-taken", port_taken, "daemon.health", "the port is in use", store="totals"),
    case(
        "store",
        "busy",
        while_held(
            "store.duckdb.lock",
            ["anomalies", "list"],
            singleton=False,
            config=BASE_CONFIG.replace("path: store.duckdb", "path: store.duckdb\n  lock_timeout: 0.2s"),
        ),
        "store.duckdb is busy",
        "lock_timeout",
        store="bytes",
    ),
    case(
        "store",
        "second-daemon",
        while_held("store.duckdb.daemon.lock", ["run"], singleton=True, config=BASE_CONFIG),
        "already running on store",
        "store.duckdb",
        store="bytes",
    ),
]

CASES: list[Case] = [*CLI_CASES, *STORE_CASES]

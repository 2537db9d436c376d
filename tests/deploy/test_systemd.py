"""deploy/systemd: the unit verifies, scores "OK" on exposure, and the daemon runs in its sandbox."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from spendwatch.config import load_config
from tests.deploy.units import REPO, SYSTEMD, UNIT, environment, exec_start, last, parse_unit, service
from tests.doubles import sandbox
from tests.doubles.waits import PATIENCE

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
DOCS = REPO / "docs" / "deploy.md"
SPENDWATCH = "/opt/spendwatch/bin/spendwatch"
# The console script of the installed package, as /opt/spendwatch/bin/spendwatch is on a VM.
INSTALLED = str(Path(sys.executable).with_name("spendwatch"))


def _runnable_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with its executable pointed at a real file (verify checks ExecStart= exists)."""
    binary = tmp_path / "bin" / "spendwatch"
    binary.parent.mkdir(parents=True, exist_ok=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    unit = tmp_path / "spendwatch.service"
    unit.write_text((text or UNIT.read_text()).replace(SPENDWATCH, str(binary)))
    return unit


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, "verify", str(unit)], check=False, capture_output=True, text=True, timeout=60)


# -- the unit's declared contract ------------------------------------------------------------------


def test_the_unit_declares_notify_watchdog_identity_secrets_and_restart() -> None:
    settings = service()
    assert last(settings, "Type") == "notify"
    assert last(settings, "NotifyAccess") == "main"
    assert re.fullmatch(r"\d+(s|min)", last(settings, "WatchdogSec"))
    assert last(settings, "DynamicUser") == "yes"
    assert last(settings, "StateDirectory") == "spendwatch"
    assert last(settings, "ConfigurationDirectory") == "spendwatch"
    assert last(settings, "EnvironmentFile").endswith("/etc/spendwatch/spendwatch.env")
    assert last(settings, "Restart") == "on-failure"
    assert last(settings, "RestartPreventExitStatus") == "2"
    command = exec_start(settings)
    assert command[:2] == [SPENDWATCH, "run"]
    assert command[command.index("--config") + 1] == "/etc/spendwatch/spendwatch.yaml"
    # The daemon promises to exit within 10 s of SIGTERM; systemd must wait at least that long.
    assert int(last(settings, "TimeoutStopSec").removesuffix("s")) >= 10


def test_the_unit_is_hardened() -> None:
    settings = service()
    expected = {
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "MemoryDenyWriteExecute": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "SystemCallArchitectures": "native",
        "LockPersonality": "yes",
        "RestrictNamespaces": "yes",
        "RestrictSUIDSGID": "yes",
        "UMask": "0077",
    }
    for key, value in expected.items():
        assert last(settings, key) == value, key
    assert settings["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]


def test_the_unit_parser_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a unit-file line"):
        parse_unit("[Service]\nthis is not a setting\n")


# -- systemd-analyze ---------------------------------------------------------------------------------


@needs_analyze
def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    result = _verify(_runnable_copy(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


@needs_analyze
@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (("Type=notify", "Type=notfy"), "Failed to parse service type"),
        (("RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "RestrictAddressFamilies=AF_BOGUS"), "AF_BOGUS"),
    ],
)
def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path: Path, change: tuple[str, str], complaint: str) -> None:
    # The check above is only worth something if verify actually reads our settings.
    broken = UNIT.read_text().replace(*change)
    result = _verify(_runnable_copy(tmp_path, broken))
    assert complaint in result.stderr


@needs_analyze
def test_exposure_score_is_ok_and_matches_the_docs(tmp_path: Path) -> None:
    assert ANALYZE is not None
    unit = _runnable_copy(tmp_path)
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--threshold=20", str(unit)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("this systemd-analyze has no --offline mode (systemd < 250)")
    match = re.search(r"Overall exposure level for spendwatch\.service: (\d+\.\d) (\w+)", result.stdout)
    assert match, result.stdout[-500:]
    score, verdict = float(match.group(1)), match.group(2)
    assert score <= 2.0
    assert verdict == "OK"
    assert result.returncode == 0  # --threshold=20: above 2.0 it would fail
    documented = re.search(r"exposure score: \*\*(\d+\.\d) OK\*\*", DOCS.read_text())
    assert documented, "docs/deploy.md must record the measured exposure score"
    assert float(documented.group(1)) == score


# -- the files the unit reads -------------------------------------------------------------------------


def _env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def test_sample_config_and_env_file_fit_together(tmp_path: Path) -> None:
    secrets = _env_file(SYSTEMD / "spendwatch.env.example")
    referenced = set(re.findall(r"\$\{([A-Z_]+)\}", (SYSTEMD / "spendwatch.yaml").read_text()))
    assert referenced <= set(secrets), f"${{VAR}}s without an entry in the env example: {referenced - set(secrets)}"
    config = load_config(SYSTEMD / "spendwatch.yaml", environ={**secrets, "STATE_DIRECTORY": str(tmp_path)})
    assert config.store.path == tmp_path / "spendwatch.duckdb"
    assert config.daemon.health.bind == "127.0.0.1"


def test_sample_config_needs_its_secrets() -> None:
    from spendwatch.errors import ConfigError

    with pytest.raises(ConfigError, match="SMTP_PASSWORD is not set"):
        load_config(SYSTEMD / "spendwatch.yaml", environ={})


# -- the daemon inside the unit's sandbox --------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _unit_environment(root: Path) -> dict[str, str]:
    """What systemd would put in the daemon's environment, with /var paths moved under ``root``."""
    remap = {"/var/lib/spendwatch": root / "state", "/var/cache/spendwatch": root / "cache"}
    env = environment(service())
    for name, value in env.items():
        moved = value
        for old, new in remap.items():
            moved = moved.replace(old, str(new))
        env[name] = moved
    for folder in (*remap.values(), root / "logs"):
        folder.mkdir(mode=0o700, exist_ok=True)
    env.update(
        STATE_DIRECTORY=str(root / "state"),
        CACHE_DIRECTORY=str(root / "cache"),
        LOGS_DIRECTORY=str(root / "logs"),
        CONFIGURATION_DIRECTORY=str(root),
        PATH=os.environ["PATH"],
        LANG="C.UTF-8",
    )
    return env


def _daemon_config(root: Path, port: int) -> Path:
    config = root / "spendwatch.yaml"
    config.write_text(
        "store:\n  path: ${STATE_DIRECTORY}/spendwatch.duckdb\n"
        "sources:\n  - {name: estate, type: simulated, days: 30, every: 1h, settle_lag: 1h}\n"
        f"daemon:\n  health: {{bind: 127.0.0.1, port: {port}}}\n"
    )
    return config


def _command(config: Path, *args: str) -> list[str]:
    unit_command = exec_start(service())
    assert unit_command[0] == SPENDWATCH
    rest = [str(config) if a == "/etc/spendwatch/spendwatch.yaml" else a for a in unit_command[1:]]
    if args:
        rest = list(args)
    return [*_proc_subset(), sys.executable, str(Path(sandbox.__file__)), "--", INSTALLED, *rest]


def _proc_subset() -> list[str]:
    """ProcSubset=pid + ProtectProc=invisible: a private /proc without /proc/meminfo, /proc/cpuinfo …

    Needs root (a mount namespace); elsewhere the commands run with the host's /proc.
    """
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        return []
    mount = 'mount -t proc -o subset=pid,hidepid=invisible proc /proc && test ! -e /proc/meminfo && exec "$@"'
    return [unshare, "--mount", "sh", "-c", mount, "sh"]


def _timeout_stop_seconds() -> float:
    """The unit's TimeoutStopSec: after it, systemd SIGKILLs the daemon."""
    value = last(service(), "TimeoutStopSec")
    assert value.endswith("s") and value[:-1].isdigit(), value
    return float(value[:-1])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=PATIENCE) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class NotifyListener:
    """The ``$NOTIFY_SOCKET`` systemd would listen on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def wait_for(self, state: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(state in m.split("\n") for m in self.messages):
            left = deadline - time.monotonic()
            assert left > 0, f"no {state} within {timeout}s (got {self.messages})"
            self.sock.settimeout(left)
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def close(self) -> None:
        self.sock.close()


@pytest.mark.skipif(sandbox.supported() is not None, reason=str(sandbox.supported()))
def test_the_daemon_runs_ready_pings_and_stops_in_the_unit_sandbox(tmp_path: Path) -> None:
    """Start ``spendwatch run`` as the unit does: its environment, the syscall allow-list, MDWE, umask."""
    port = _free_port()
    config = _daemon_config(tmp_path, port)
    env = _unit_environment(tmp_path)
    validate = subprocess.run(
        _command(config, "config", "validate", str(config)),
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert validate.returncode == 0, validate.stderr  # ExecStartPre=
    listener = NotifyListener(tmp_path / "notify.sock")
    env.update(NOTIFY_SOCKET=str(listener.path), WATCHDOG_USEC="2000000")
    stderr = (tmp_path / "daemon.log").open("w+")
    daemon = subprocess.Popen(_command(config), env=env, stdout=stderr, stderr=stderr)
    try:
        listener.wait_for("READY=1", timeout=PATIENCE)
        listener.wait_for("WATCHDOG=1", timeout=PATIENCE)
        assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        deadline = time.monotonic() + PATIENCE
        while (ready := _get(f"http://127.0.0.1:{port}/readyz"))[0] != 200:
            assert daemon.poll() is None, "the daemon died"
            assert time.monotonic() < deadline, ready[1].decode()
            time.sleep(0.5)
        assert json.loads(ready[1])["sources"] == {"estate": "ok"}
        status, metrics = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert b"spendwatch_" in metrics
        began = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=PATIENCE)
        assert code == 0
        # What matters is exiting before systemd gives up and SIGKILLs (the unit's TimeoutStopSec);
        # the quiet-machine figure is measured in benchmarks/bench_daemon.py.
        assert time.monotonic() - began < _timeout_stop_seconds()
        listener.wait_for("STOPPING=1", timeout=PATIENCE)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        listener.close()
    stderr.seek(0)
    log = stderr.read()
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert not [e for e in events if e.get("event") == "job-failed"], log[-2000:]
    assert "Operation not permitted" not in log
    store = tmp_path / "state" / "spendwatch.duckdb"
    assert store.stat().st_mode & 0o077 == 0  # UMask=0077: the store is the daemon's alone


@pytest.mark.skipif(sandbox.supported() is not None, reason=str(sandbox.supported()))
def test_the_digest_charts_render_under_memory_deny_write_execute(tmp_path: Path) -> None:
    """collect → detect → digest with charts: DuckDB, statsmodels, matplotlib and jinja2 under the same filters."""
    config = tmp_path / "spendwatch.yaml"
    config.write_text(
        "store:\n  path: ${STATE_DIRECTORY}/spendwatch.duckdb\n"
        "sources:\n  - {name: estate, type: simulated, days: 60, every: 1h, settle_lag: 1h}\n"
    )
    env = _unit_environment(tmp_path)
    out = tmp_path / "digest"
    for step in (["collect"], ["detect"], ["digest", "--to-dir", str(out)]):
        result = subprocess.run(
            _command(config, "--config", str(config), *step),
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, f"{step[0]}: {result.stderr[-2000:]}"
    [html] = out.glob("*.html")
    assert "data:image/png;base64," in html.read_text()  # matplotlib drew the incident charts


@pytest.mark.skipif(sandbox.supported() is not None, reason=str(sandbox.supported()))
def test_the_sandbox_really_refuses_write_execute_memory_and_privileged_calls(tmp_path: Path) -> None:
    probe = (
        "import mmap, os\n"
        "for name, call in [('wx', lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_WRITE | mmap.PROT_EXEC)),\n"
        "                   ('chroot', lambda: os.chroot('/')), ('affinity', lambda: os.sched_setaffinity(0, {0}))]:\n"
        "    try:\n        call(); print(name, 'allowed')\n"
        "    except OSError as exc:\n        print(name, exc.errno)\n"
    )
    launcher = [sys.executable, str(Path(sandbox.__file__)), "--", sys.executable, "-c", probe]
    result = subprocess.run(launcher, check=False, capture_output=True, text=True, timeout=60)
    assert result.stdout.split("\n")[:3] == ["wx 1", "chroot 1", "affinity 1"]  # EPERM, as SystemCallErrorNumber=


def test_a_config_error_exits_2_so_systemd_does_not_restart(tmp_path: Path) -> None:
    bad = tmp_path / "spendwatch.yaml"
    bad.write_text("sources: []\n")
    result = subprocess.run(
        [INSTALLED, "run", "--config", str(bad)], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == int(last(service(), "RestartPreventExitStatus"))
    assert "sources" in result.stderr

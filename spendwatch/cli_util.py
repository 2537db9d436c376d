"""What every CLI command shares: the environment (config, store, clock) and error handling.

Kept apart from ``cli.py`` so subsystem command modules can import it without a cycle.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from spendwatch.clock import SystemClock
from spendwatch.errors import InputError, SpendwatchError, UserError

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_CONFIG = "spendwatch.yaml"


class Env:
    """What every command gets: the config path, the clock, and lazily the config and the store."""

    def __init__(self, config_path: str | None, debug: bool) -> None:
        self.config_path = config_path
        self.debug = debug
        self.clock = SystemClock()
        self._config: Any = None
        self._store: Any = None

    @property
    def config(self) -> Any:
        if self._config is None:
            from spendwatch.config import load_config

            path = self.config_path or os.environ.get("SPENDWATCH_CONFIG") or DEFAULT_CONFIG
            if not Path(path).exists() and self.config_path is None:
                raise UserError(f"no config file: pass --config FILE (or set SPENDWATCH_CONFIG); {path} not found")
            self._config = load_config(path)
        return self._config

    @property
    def store(self) -> Any:
        if self._store is None:
            from spendwatch.store import Store

            store_config = self.config.store
            self._store = Store(
                store_config.path,
                lock_timeout=store_config.lock_timeout.total_seconds(),
                clock=self.clock,
                memory_limit=store_config.memory_limit,
            )
        return self._store


pass_env = click.make_pass_decorator(Env)


class OneLineErrors(click.Group):
    """A group whose usage mistakes (bad option value, unknown option …) are one line and exit 2.

    Click prints the usage, a hint and a blank line before the error; a script or a log reading
    stderr wants the one line that names the argument, as every other spendwatch error is.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            click.echo(f"spendwatch: error: {usage_line(exc)}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


def usage_line(exc: click.UsageError) -> str:
    command = exc.ctx.command_path if exc.ctx is not None else "spendwatch"
    message = " ".join(exc.format_message().split())
    return f"{command}: {message} (see '{command} --help')"


class FiniteFloat(click.ParamType):  # type: ignore[type-arg]
    """A finite float, optionally strictly above a minimum (``nan`` and ``inf`` are refused)."""

    name = "number"

    def __init__(self, above: float | None = None) -> None:
        self.above = above

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.above is not None and number <= self.above:
            self.fail(f"{value!r} must be greater than {self.above:g}", param, ctx)
        return number


def handle_errors(func: F) -> F:
    """Turn spendwatch errors into one line and the documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SpendwatchError as exc:
            if _debugging():
                raise
            click.echo(f"spendwatch: error: {exc}", err=True)
            sys.exit(2 if isinstance(exc, UserError) else 1)

    return wrapper  # type: ignore[return-value]


def _debugging() -> bool:
    ctx = click.get_current_context(silent=True)
    env = ctx.find_object(Env) if ctx else None
    return env is not None and env.debug


def progress(message: str) -> None:
    click.echo(f"  {message}", err=True)


def check_output_file(path: Path, option: str) -> None:
    """Refuse, before any work, an output file that cannot be written (``InputError`` naming the option)."""
    folder = path.parent
    if path.is_dir():
        raise InputError(f"{option} {path}: is a folder; name a file")
    if not folder.exists():
        raise InputError(f"{option} {path}: the folder {folder} does not exist")
    if not folder.is_dir():
        raise InputError(f"{option} {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: cannot write in the folder {folder} (permission denied)")

"""``spendwatch plugins list``: the built-in and installed third-party sources, channels and actions."""

from __future__ import annotations

import json

import click

from spendwatch.cli_util import handle_errors


@click.group("plugins")
def plugins_group() -> None:
    """Sources, channels and actions, built in or added by other packages (entry points)."""


@plugins_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON records instead of a table")
@handle_errors
def plugins_list(as_json: bool) -> None:
    """Every plugin, where it comes from and whether it loads (a broken one is listed, not fatal)."""
    import spendwatch.collectors
    import spendwatch.killswitch.config
    import spendwatch.notify.plugins  # noqa: F401  (the built-ins register on import)
    from spendwatch.collectors.base import SOURCES
    from spendwatch.killswitch.base import ACTIONS
    from spendwatch.notify.channels import CHANNELS
    from spendwatch.terminal import clean

    infos = []
    for registry in (SOURCES, CHANNELS, ACTIONS):
        registry.load_plugins(keep_going=True)
        infos += registry.plugin_infos()
    if as_json:
        click.echo(json.dumps([info.as_dict() for info in infos], indent=2))
        return
    width = max((len(i.name) for i in infos), default=4)
    for info in infos:
        where = info.origin + (f" ({info.entry_point})" if info.entry_point else "")
        # A package's metadata and its import error are not ours: each field is cleaned for the terminal.
        line = f"{info.kind:<12} {clean(info.name):<{width}}  {clean(info.status):<10}  {clean(where)}"
        click.echo(line)

"""``spendwatch store check|snapshot|restore``: is the store file sound, copy it, bring a copy back."""

from __future__ import annotations

from pathlib import Path

import click

from spendwatch.cli_util import Env, echo_json, handle_errors, json_option, pass_env


@click.group("store")
def store_group() -> None:
    """Check the store file end to end, snapshot it, or restore a damaged one from a snapshot."""


def _where(env: Env) -> tuple[Path, Path, float]:
    from spendwatch.store.snapshots import snapshot_folder

    store = env.config.store
    return store.path, snapshot_folder(store.path, store.snapshots.folder), store.lock_timeout.total_seconds()


@store_group.command("check")
@click.option("--snapshots", "check_snapshots", is_flag=True, help="read every snapshot end to end as well")
@json_option()
@pass_env
@handle_errors
def store_check(env: Env, check_snapshots: bool, as_json: bool) -> None:
    """Read every column of every table (each block's checksum is verified); exit 2 if the store is damaged."""
    from spendwatch.errors import StoreAccessError, StoreDamagedError
    from spendwatch.store.snapshots import check_file, check_store, damage_message

    path, folder, timeout = _where(env)
    if not path.exists():
        raise StoreAccessError(f"store {path} does not exist yet (nothing was collected into it)")
    result, snapshots = check_store(path, folder, lock_timeout=timeout)
    if as_json:  # the record first, damaged or not; a damaged store still exits 2 below
        copies = [
            {"path": s.path, "taken_at": s.taken_at, "bytes": s.path.stat().st_size,
             "ok": check_file(s.path).ok if check_snapshots else None}
            for s in snapshots
        ]  # fmt: skip
        echo_json(
            {"store": path, "ok": result.ok, "problem": result.problem, "schema_version": result.schema_version,
             "rows": result.rows, "snapshots": copies}
        )  # fmt: skip
    if not result.ok:
        raise StoreDamagedError(damage_message(result, snapshots))
    if as_json:
        return
    click.echo(result.summary())
    for table, rows in sorted(result.rows.items()):
        click.echo(f"  {table:<24} {rows:>14,} rows")
    if not snapshots:
        click.echo(f"no snapshots in {folder} yet (the daemon takes one a day; `spendwatch store snapshot` now)")
    for snapshot in snapshots:
        state = check_file(snapshot.path).summary().split(": ", 1)[1] if check_snapshots else "not checked"
        size = snapshot.path.stat().st_size / 1e6
        click.echo(f"snapshot {snapshot.taken_at:%Y-%m-%d %H:%M} UTC  {snapshot.path}  {size:,.1f} MB  {state}")


@store_group.command("snapshot")
@json_option()
@pass_env
@handle_errors
def store_snapshot(env: Env, as_json: bool) -> None:
    """Take a snapshot now (the daemon takes one a day); keeps the store.snapshots.keep newest."""
    from spendwatch.store.snapshots import take_snapshot

    path, folder, timeout = _where(env)
    keep = max(env.config.store.snapshots.keep, 1)
    snapshot = take_snapshot(path, folder, env.clock.now(), keep=keep, lock_timeout=timeout)
    if as_json:
        echo_json({"path": snapshot.path, "taken_at": snapshot.taken_at, "bytes": snapshot.path.stat().st_size})
        return
    click.echo(f"snapshot {snapshot.path} taken and checked")


@store_group.command("restore")
@click.option("--snapshot", "name", help="a snapshot name from `store check`, or a path (default: the newest good one)")
@click.option("--force", is_flag=True, help="roll back even though the store reads cleanly")
@json_option()
@pass_env
@handle_errors
def store_restore(env: Env, name: str | None, force: bool, as_json: bool) -> None:
    """Put the newest good snapshot in place of a damaged store, carrying over every table that still reads.

    The damaged file is moved aside, never deleted. Refuses while a daemon runs on the store.
    """
    from spendwatch.store.snapshots import restore

    path, folder, timeout = _where(env)
    result = restore(
        path, folder, env.clock.now(), snapshot=Path(name) if name else None, force=force, lock_timeout=timeout
    )
    if as_json:
        echo_json(
            {"snapshot": result.snapshot.path, "taken_at": result.snapshot.taken_at,
             "damaged_copy": result.damaged_copy, "salvaged": result.salvaged, "lost": result.lost}
        )  # fmt: skip
        return
    for line in result.lines():
        click.echo(line)

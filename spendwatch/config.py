"""The config file: YAML, ``${ENV}`` interpolation, validated by pydantic before anything runs.

Every error is one line that names the file, the line and the key path, e.g.::

    config/prod.yaml:14: sources[1].bucket: field required

Secrets never live in the file: values may say ``${SMTP_PASSWORD}`` (or ``${VAR:-default}``), and
cloud credentials come from each cloud's default chain (profiles, roles, workload identity).
Relative paths are resolved against the folder of the config file, so a daemon and a person running
the CLI from elsewhere see the same store.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

import spendwatch.collectors  # noqa: F401  (registers the source types)
from spendwatch.collectors.base import SOURCES, SourceConfig
from spendwatch.config_types import ConfigPath, Duration, encoding_problem
from spendwatch.daemon.config import DaemonConfig
from spendwatch.detect.monitors import MonitorConfig, default_monitors
from spendwatch.errors import ConfigError
from spendwatch.guard.config import GuardConfig
from spendwatch.killswitch.config import KillSwitchConfig
from spendwatch.notify.budgets import BudgetConfig
from spendwatch.notify.channels import CHANNELS
from spendwatch.notify.config import NotifyConfig
from spendwatch.plugins import PluginUnion, Registry, StrictModel, config_models
from spendwatch.secrets import MIN_SECRET, remember
from spendwatch.store import check_memory_limit

# ``$${`` is a literal ``${``; ``${NAME}`` / ``${NAME:-default}`` are references; any other ``${`` is a
# mistake (an unclosed brace would otherwise become part of a password).
_ENV = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")
# A YAML alias can repeat a subtree: a handful of lines may expand to billions of values ("billion laughs").
MAX_CONFIG_VALUES = 100_000

# Any registered source's config, chosen by ``type`` (plugins' too: see ``prepare_plugins``).
SourceSpec = Annotated[SourceConfig, PluginUnion(SOURCES)]


class SnapshotConfig(StrictModel):
    """Daily copies of the store, checked end to end, that ``spendwatch store restore`` brings back."""

    keep: int = Field(default=2, ge=0, le=366, description="snapshots kept, one a day (0: the daemon takes none)")
    folder: ConfigPath | None = Field(default=None, description="where they go (default: <store path>.snapshots/)")
    check_every: Duration = Field(
        default=timedelta(minutes=15), description="how often the daemon looks whether a day has passed since the last"
    )

    @field_validator("check_every")
    @classmethod
    def _check_every(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError("must be at least 1s")
        return value


class StoreConfig(StrictModel):
    path: ConfigPath = Field(default=Path("spendwatch.duckdb"), description="the store file (DuckDB)")
    lock_timeout: Duration = Field(
        default=timedelta(seconds=60), description="how long to wait for another process to finish its write"
    )
    retention: Duration = Field(
        default=timedelta(days=730), description="cost lines and runs older than this are deleted"
    )
    memory_limit: str | None = Field(
        default=None, description="DuckDB memory limit: a size (512MB, 2GB, 1.5GiB) or a share of RAM (50%)"
    )
    snapshots: SnapshotConfig = Field(default_factory=SnapshotConfig)

    @field_validator("memory_limit", mode="before")
    @classmethod
    def _memory_limit(cls, value: Any) -> str | None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)  # "12" gets the same message as "lots"
        return None if value is None else check_memory_limit(value)

    @field_validator("retention")
    @classmethod
    def _retention(cls, value: timedelta) -> timedelta:
        # Housekeeping deletes everything older: a retention of minutes would empty the store daily.
        if value < timedelta(days=1):
            raise ValueError("must be at least 1d (older data is deleted)")
        return value


class SeverityConfig(StrictModel):
    """Impact (in the series' currency) from which an incident is medium, high or critical."""

    medium: float = Field(default=200.0, ge=0)
    high: float = Field(default=1_000.0, ge=0)
    critical: float = Field(default=10_000.0, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> SeverityConfig:
        if not self.medium <= self.high <= self.critical:
            raise ValueError("severity thresholds must satisfy medium <= high <= critical")
        return self


class DetectionConfig(StrictModel):
    history: Duration = Field(default=timedelta(days=200), description="history each daily series is scored against")
    hourly_history: Duration = Field(default=timedelta(days=56), description="history for hourly series")
    rescore_daily: int = Field(
        default=35, ge=1, le=400, description="newest daily steps re-decided every run (restated bills)"
    )
    rescore_hourly: int = Field(default=72, ge=1, le=2000, description="newest hourly steps re-decided every run")
    incident_gap: int = Field(
        default=1, ge=0, le=10, description="normal steps allowed inside one incident before it splits in two"
    )
    cost_column: Literal["effective_cost", "billed_cost", "list_cost"] = Field(
        default="effective_cost", description="which FOCUS cost is scored (effective = amortised, after discounts)"
    )
    severity: SeverityConfig = Field(default_factory=SeverityConfig)
    workers: int | None = Field(
        default=None,
        ge=1,
        le=512,
        description="processes a monitor's series are sharded over (default: the CPUs this process may use, "
        "cgroup quota included); results are the same for any number",
    )


class Config(StrictModel):
    """The whole spendwatch configuration."""

    store: StoreConfig = Field(default_factory=StoreConfig)
    sources: list[SourceSpec] = Field(min_length=1, description="where cost and job data come from")
    monitors: list[MonitorConfig] = Field(default_factory=default_monitors)
    detection: DetectionConfig = Field(default_factory=DetectionConfig)
    notify: NotifyConfig = Field(default_factory=NotifyConfig, description="digest, alerts, channels, team routes")
    daemon: DaemonConfig = Field(default_factory=DaemonConfig, description="schedules of `spendwatch run`")
    killswitch: KillSwitchConfig = Field(default_factory=KillSwitchConfig)
    guard: GuardConfig = Field(default_factory=GuardConfig, description="the runaway-job guard (docs/guard.md)")
    budgets: list[BudgetConfig] = Field(
        default_factory=list, description="monthly budgets with a month-end forecast (docs/digest.md)"
    )

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        for label, names in (
            ("sources", [s.name for s in self.sources]),
            ("monitors", [m.name for m in self.monitors]),
            ("budgets", [b.name for b in self.budgets]),
        ):
            seen: set[str] = set()
            for name in names:
                if name in seen:
                    raise ValueError(f"{label}: the name {name!r} is used twice")
                seen.add(name)
        return self

    @model_validator(mode="after")
    def _guard_watches_job_sources(self) -> Config:
        kinds = ("aws-jobs", "gcp-jobs", "kubernetes-jobs")
        job_sources = {s.name: s.type for s in self.sources if s.type in kinds}
        for name in self.guard.sources:
            if name not in job_sources:
                known = ", ".join(sorted(job_sources)) or "none configured"
                raise ValueError(
                    f"guard.sources: {name!r} is not an aws-jobs, gcp-jobs or kubernetes-jobs source "
                    f"(those are: {known})"
                )
        return self

    @model_validator(mode="after")
    def _clusters_agree(self) -> Config:
        """A cluster the kill switch acts in runs where the source that records its workloads says it does.

        Its place (provider, account) is the scope its workloads are acted on in; two answers would let
        the records of one account reach the cluster of another.
        """
        acting = self.killswitch.kubernetes.clusters
        for source in self.sources:
            for cluster, connection in (getattr(source, "clusters", None) or {}).items():
                other = acting.get(cluster)
                if other is None or not hasattr(connection, "host"):
                    continue
                if other.host(cluster)[:2] != connection.host(cluster)[:2]:
                    raise ValueError(
                        f"killswitch.kubernetes.clusters.{cluster}: provider/account "
                        f"{'/'.join(map(str, other.host(cluster)[:2]))} differ from source {source.name}'s "
                        f"{'/'.join(map(str, connection.host(cluster)[:2]))}"
                    )
        return self

    def source(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        raise ConfigError(f"no source named {name!r} (configured: {', '.join(s.name for s in self.sources)})")


# -- loading -------------------------------------------------------------------------------------


def load_config(path: Path | str, *, environ: dict[str, str] | None = None) -> Config:
    """Read, interpolate and validate a config file, or raise ``ConfigError`` (one line)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    text = decode_text(data, path, what="config file")
    return parse_config(text, path, environ=os.environ.copy() if environ is None else environ)


def decode_text(data: bytes, path: Path, *, what: str) -> str:
    """UTF-8 text (a UTF-8 byte-order mark is dropped), or a ``ConfigError`` saying what the bytes are."""
    problem = encoding_problem(data)
    if problem is not None:
        raise ConfigError(f"{path}: {problem}; save the {what} as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the {what} as UTF-8"
        ) from None


def parse_config(text: str, path: Path, *, environ: dict[str, str]) -> Config:
    try:
        root_node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        raise ConfigError(f"{path}:{line}: YAML syntax error: {exc.reason} (character #x{exc.character:04x})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    _check_nodes(root_node, path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (store:, sources: …)")
    hidden = Interpolated()  # values from the environment: never echoed in an error
    data = _interpolate(data, (), path, root_node, environ, hidden)
    try:
        prepare_plugins(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        config = Config.model_validate(data, context={"base_dir": path.resolve().parent})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, data, root_node, hidden)) from None
    remember(config)  # every log line of this process is scrubbed of the config's secrets
    return config


# -- third-party plugins --------------------------------------------------------------------------

_PLUGINS_LOCK = threading.Lock()
# The registry generations the config models were last built from.
_BUILT_WITH = {"sources": SOURCES.generation, "channels": CHANNELS.generation}


def prepare_plugins(data: Any = None) -> None:
    """Load the plugins a config (as parsed YAML) names that are not registered yet, then rebuild the
    config models if any registry changed; ``None`` loads every installed plugin (the JSON Schema).

    Only the ``type`` values the config uses are looked up, so a config of built-in types reads no
    entry-point metadata at all. Action plugins are loaded when the config has kill-switch rules: a
    rule names a verb, and any action may answer it.
    """
    from spendwatch.killswitch.base import ACTIONS

    with _PLUGINS_LOCK:
        if data is None:
            for registry in (SOURCES, CHANNELS, ACTIONS):
                registry.load_plugins()
        elif isinstance(data, dict):
            SOURCES.load_plugins(_types(data.get("sources")))
            notify = data.get("notify")
            CHANNELS.load_plugins(_types(notify.get("channels") if isinstance(notify, dict) else None))
            killswitch = data.get("killswitch")
            if isinstance(killswitch, dict) and killswitch.get("rules"):
                ACTIONS.load_plugins()
        _rebuild_models()


def _types(items: Any) -> list[str]:
    if not isinstance(items, list):
        return []
    return [item["type"] for item in items if isinstance(item, dict) and isinstance(item.get("type"), str)]


def _rebuild_models() -> None:
    """Rebuild the models holding a ``PluginUnion`` (innermost first) when a registry gained a plugin."""
    current = {"sources": SOURCES.generation, "channels": CHANNELS.generation}
    if current == _BUILT_WITH:
        return
    NotifyConfig.model_rebuild(force=True)
    Config.model_rebuild(force=True)
    _BUILT_WITH.update(current)


def _interpolate(
    value: Any,
    loc: tuple[str | int, ...],
    path: Path,
    root: yaml.Node | None,
    environ: dict[str, str],
    hidden: Interpolated,
) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, (*loc, k), path, root, environ, hidden) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*loc, i), path, root, environ, hidden) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if match.group(0) == "$${":
            return "${"
        if name is None:
            where = _where(path, root, loc)
            raise ConfigError(
                # The value is not echoed: it may be a secret with a typo in it.
                f"{where}: {format_loc(loc)}: a '${{' that is not a complete ${{NAME}} or ${{NAME:-default}} "
                "reference (a closing brace missing?); write $${ for a literal '${'"
            )
        if name in environ:
            hidden.add(loc, name, environ[name])
            return environ[name]
        if default is not None:
            return default
        where = _where(path, root, loc)
        raise ConfigError(f"{where}: {format_loc(loc)}: environment variable {name} is not set")

    return _ENV.sub(substitute, value)


def _check_nodes(root: yaml.Node | None, path: Path) -> None:
    """Refuse a key written twice in one mapping (YAML keeps the last silently) and alias bombs."""
    budget = [MAX_CONFIG_VALUES]
    stack: list[tuple[yaml.Node, tuple[str | int, ...]]] = [(root, ())] if root is not None else []
    while stack:
        node, loc = stack.pop()
        budget[0] -= 1
        if budget[0] < 0:
            raise ConfigError(
                f"{path}: expands to more than {MAX_CONFIG_VALUES:,} values (YAML aliases repeating aliases)"
            )
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, (*loc, i)) for i, child in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], yaml.Node] = {}
            for key, value in node.value:
                name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    first = seen.get((key.tag, name))
                    if first is not None:
                        raise ConfigError(
                            f"{path}:{key.start_mark.line + 1}: {format_loc((*loc, name))}: the key is written "
                            f"twice (first on line {first.start_mark.line + 1}); YAML would silently keep the last"
                        )
                    seen[(key.tag, name)] = key
                stack.append((value, (*loc, name)))


def format_loc(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _node_at(root: yaml.Node | None, loc: tuple[str | int, ...]) -> yaml.Node | None:
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return node
        if node is None:
            return None
    return node


def _key_node_at(root: yaml.Node | None, loc: tuple[str | int, ...]) -> yaml.Node | None:
    parent = _node_at(root, loc[:-1])
    if isinstance(parent, yaml.MappingNode):
        return next((k for k, _ in parent.value if k.value == loc[-1]), None)
    return None


def _where(path: Path, root: yaml.Node | None, loc: tuple[str | int, ...]) -> str:
    node = (_key_node_at(root, loc) if loc else None) or _node_at(root, loc)
    if node is None:
        for cut in range(len(loc) - 1, -1, -1):
            node = _node_at(root, loc[:cut])
            if node is not None:
                break
    return f"{path}:{node.start_mark.line + 1}" if node is not None else str(path)


def _data_loc(loc: tuple[str | int, ...], data: Any) -> tuple[str | int, ...]:
    """Drop the union tags pydantic inserts (``sources.0.focus.path`` → ``sources[0].path``)."""
    out: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str) and part not in node and part == node.get("type"):
            continue  # the tag of a discriminated union (source, channel …), not a key the user wrote
        out.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(out)


@dataclass
class Interpolated:
    """What ``${NAME}`` interpolation put where, so an error can name the variable instead of its value."""

    values: dict[str, str] = dataclasses.field(default_factory=dict)  # value -> "${NAME}"
    at: dict[tuple[str | int, ...], list[str]] = dataclasses.field(default_factory=dict)  # key path -> "${NAME}"s

    def add(self, loc: tuple[str | int, ...], name: str, value: str) -> None:
        if value:
            self.values.setdefault(value, f"${{{name}}}")
        self.at.setdefault(loc, []).append(f"${{{name}}}")


def _describe(
    exc: ValidationError, path: Path, data: Any, root: yaml.Node | None, hidden: Interpolated | None = None
) -> str:
    # An unknown key usually explains a "missing" one (a typo), so it is the one worth naming.
    errors = sorted(exc.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    loc = _data_loc(tuple(first["loc"]), data)
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        loc = (*loc, "type")
    hidden = hidden or Interpolated()
    message = _hide(_message(first, loc, hidden), hidden)
    named = _KEY_PATH.match(message)
    if named:  # a whole-model check naming its own key path ("guard.sources: …") points at that key
        path_named = _parse_loc(named.group(1))
        # The path may be absolute ("killswitch.rules" from the killswitch section) or relative.
        loc = path_named if loc and path_named[:1] == loc[:1] else (*loc, *path_named)
        message = named.group(2)
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{_where(path, root, loc)}: {format_loc(loc)}: {message}{more}"


_KEY_PATH = re.compile(r"^([a-z_]+(?:\[\d+\]|\.[a-z_]+)*): (.+)$", re.S)


def _parse_loc(text: str) -> tuple[str | int, ...]:
    """``sources[1].path`` → ``("sources", 1, "path")``."""
    parts: list[str | int] = []
    for name, index in re.findall(r"([a-z_]+)|\[(\d+)\]", text):
        parts.append(int(index) if index else name)
    return tuple(parts)


def _hide(message: str, hidden: Interpolated) -> str:
    """``message`` with every value that came from the environment shown as its ``${NAME}``."""
    for value in sorted(hidden.values, key=len, reverse=True):
        if len(value) >= MIN_SECRET and value in message:
            message = message.replace(value, hidden.values[value])
    return message


def _message(error: ErrorDetails, loc: tuple[str | int, ...], hidden: Interpolated) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else ""
        close = difflib.get_close_matches(key, [k for k in _known_keys() if k != key], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown key{hint}"
    if kind == "missing":
        return "required key is missing"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        context = error.get("ctx") or {}
        known = _known_tags(str(context.get("expected_tags", ""))) or _registry_names(loc)
        names = [part for part in loc if isinstance(part, str) and part != "type"]
        what = f"{names[-1].removesuffix('s')} type" if names else "type"  # sources[0] -> "source type"
        if kind == "union_tag_not_found":
            return f"'type' is required (one of: {known})"
        # A type from a plugin package that is not installed here looks just like a typo.
        return f"unknown {what} {context.get('tag')!r} (known: {known}; plugins: `spendwatch plugins list`)"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if kind == "value_error":
        return message
    given = error.get("input")
    names = hidden.at.get(loc) or [n for v, n in hidden.values.items() if isinstance(given, str) and v in given]
    if names:  # an interpolated value is never echoed, however short
        return f"{message} (got the value of {', '.join(dict.fromkeys(names))})"
    return f"{message} (got {_short(given)})"


def _registry_names(loc: tuple[str | int, ...]) -> str:
    registries: dict[str, Registry[Any]] = {"sources": SOURCES, "channels": CHANNELS}
    for part in reversed(loc):
        if isinstance(part, str) and part in registries:
            return ", ".join(registries[part].names())
    return "see `spendwatch config schema`"


def _known_tags(expected: str) -> str:
    """pydantic lists the tags as "'a', 'b'"; people read "a, b"."""
    return ", ".join(tag.strip().strip("'") for tag in expected.split(",") if tag.strip())


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _known_keys() -> list[str]:
    keys: set[str] = set()
    models: list[Any] = [Config, *config_models(SOURCES)]
    seen: set[Any] = set()
    while models:
        model = models.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            keys.add(name)
            for candidate in _models_in(field.annotation):
                models.append(candidate)
    return sorted(keys)


def _models_in(annotation: Any) -> list[Any]:
    found: list[Any] = []
    if isinstance(annotation, type) and issubclass(annotation, StrictModel):
        found.append(annotation)
    for meta in getattr(annotation, "__metadata__", ()):
        if isinstance(meta, PluginUnion):
            found.extend(meta.models())
    for arg in getattr(annotation, "__args__", ()) or ():
        found.extend(_models_in(arg))
    return found


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema of a config file, with every installed plugin's config model."""
    prepare_plugins(None)
    schema = Config.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "spendwatch configuration"
    _add_action_options(schema)
    return schema


def _add_action_options(schema: dict[str, Any]) -> None:
    """A rule's ``options`` are checked against its actions' models at load; the schema lists them too."""
    from spendwatch.killswitch.base import ACTIONS

    defs: dict[str, Any] = schema.setdefault("$defs", {})
    options = defs.get("Rule", {}).get("properties", {}).get("options")
    if options is None:
        return
    choices: list[dict[str, Any]] = [{"type": "object", "maxProperties": 0}]
    for name, action in ACTIONS.items():
        model = action.config_model
        if not model.model_fields:
            continue
        part = model.model_json_schema(mode="validation", ref_template="#/$defs/{model}")
        defs.update(part.pop("$defs", {}))
        defs.setdefault(model.__name__, part)
        choices.append({"$ref": f"#/$defs/{model.__name__}", "description": f"options of the {name} action"})
    options.pop("additionalProperties", None)
    options["anyOf"] = choices

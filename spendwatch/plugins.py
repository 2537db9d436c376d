"""Plugin registries: sources, actions and channels register by kebab-case name.

As in cloud-custodian, a plugin is a class registered under a name; it carries its own pydantic
config model, so the whole config file can be validated before anything runs. Built-in plugins are
imported explicitly by their package ``__init__``.

Other packages add plugins through Python entry points, one per plugin, named as the plugin is
registered::

    [project.entry-points."spendwatch.sources"]
    databricks-usage = "spendwatch_databricks.source"      # a module whose import registers the name

Groups: ``spendwatch.sources``, ``spendwatch.channels``, ``spendwatch.actions``. Nothing scans entry
points at import time (the slow start-up c7n warns about): a registry looks a name up in its group
only when asked for a name it does not know — when a config names an unknown ``type``, when an
action rule is loaded, or when every plugin is wanted (``config schema``, ``plugins list``) — and
imports only the entry points it needs. A config field that holds "any source" / "any channel" is
annotated ``PluginUnion(registry)``: its validator and JSON Schema are built from the registry, and
``spendwatch.config`` rebuilds the config models after plugins load, so a plugin's config model is
validated like a built-in's and appears in the JSON Schema.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Annotated, Any, ClassVar, Generic, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler
from pydantic_core import core_schema

from spendwatch.errors import ConfigError

log = logging.getLogger("spendwatch.plugins")
_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
BUILT_IN = "built-in"
_LOADING: list[str] = []  # the distributions whose entry points are being imported (innermost last)


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are errors, values are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, validate_default=True)


class Plugin:
    """A registered plugin: its registry name and the pydantic model of its config."""

    plugin_name: ClassVar[str] = ""
    config_model: ClassVar[type[BaseModel]]


P = TypeVar("P", bound=type[Plugin])


@dataclass(frozen=True)
class PluginInfo:
    """One plugin as ``spendwatch plugins list`` shows it."""

    kind: str
    name: str
    origin: str  # "built-in", or "<distribution> <version>"
    entry_point: str  # "module:attr" ("" for built-ins)
    status: str  # "loaded", "not loaded", "shadowed by <origin>"

    def as_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "name": self.name,
            "origin": self.origin,
            "entry_point": self.entry_point,
            "status": self.status,
        }


@functools.cache
def discovered(group: str) -> tuple[metadata.EntryPoint, ...]:
    """The installed entry points of ``group`` (read once per process, never imported here)."""
    return tuple(sorted(metadata.entry_points(group=group), key=lambda ep: ep.name))


def forget_discovered() -> None:
    """Read the installed entry points again on next use (after installing a plugin in-process)."""
    discovered.cache_clear()


def _origin(entry_point: metadata.EntryPoint) -> str:
    dist = entry_point.dist
    return f"{dist.name} {dist.version}" if dist is not None else entry_point.value.partition(":")[0]


class Registry(Generic[P]):
    """Name → plugin class, for one kind of plugin ("source type", "action", "channel type").

    ``group`` is the entry-point group third-party packages add plugins to (``None``: built-ins only).
    """

    def __init__(self, kind: str, *, group: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self._plugins: dict[str, P] = {}
        self._origins: dict[str, str] = {}
        self._tried: set[str] = set()  # entry-point names already looked at (loaded, shadowed or broken)
        self._failed: dict[str, str] = {}  # entry-point name -> why it could not be loaded
        self.generation = 0  # bumped whenever a plugin registers: models built from the registry are stale

    def register(self, name: str) -> Callable[[P], P]:
        if not _NAME.match(name):
            raise ValueError(f"{self.kind} name {name!r} must be kebab-case")

        def decorate(cls: P) -> P:
            if name in self._plugins:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            cls.plugin_name = name
            self._plugins[name] = cls
            # A plugin module may register in several registries: all get the distribution being loaded.
            self._origins[name] = _LOADING[-1] if _LOADING else BUILT_IN
            self.generation += 1
            return cls

        return decorate

    def get(self, name: str) -> P:
        if name not in self._plugins:
            self.load_plugins([name])
        try:
            return self._plugins[name]
        except KeyError:
            known = ", ".join(sorted(self._plugins)) or "none"
            raise ConfigError(f"unknown {self.kind} {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        return sorted(self._plugins)

    def items(self) -> Iterator[tuple[str, P]]:
        yield from sorted(self._plugins.items())

    def origin(self, name: str) -> str:
        return self._origins.get(name, BUILT_IN)

    def __contains__(self, name: object) -> bool:
        return name in self._plugins

    def __len__(self) -> int:
        return len(self._plugins)

    # -- entry points ------------------------------------------------------------------------------

    def load_plugins(self, names: Iterable[str] | None = None, *, keep_going: bool = False) -> list[str]:
        """Import the entry points of ``names`` this registry does not know yet (``None``: every one).

        Returns the names newly registered. Asking only for known names reads no metadata at all. A
        plugin that cannot be imported, or whose import does not register its name, is a
        ``ConfigError`` naming the entry point and its distribution (with ``keep_going``, it is
        recorded for ``plugin_infos`` and the others still load).
        """
        if self.group is None:
            return []
        wanted = None if names is None else {n for n in names if n not in self._plugins} - self._tried
        if wanted is not None and not wanted:
            return []
        loaded: list[str] = []
        for entry_point in discovered(self.group):
            name = entry_point.name
            if name in self._tried or (wanted is not None and name not in wanted):
                continue
            self._tried.add(name)
            origin = _origin(entry_point)
            if name in self._plugins:
                if self._origins.get(name) != origin:
                    log.warning(
                        "%s plugin %r from %s is ignored: %s already provides that name",
                        self.kind, name, origin, self._origins.get(name),
                    )  # fmt: skip
                continue
            try:
                self._import(entry_point, origin)
            except ConfigError as exc:
                self._failed[name] = str(exc)
                if not keep_going:
                    raise
                continue
            loaded.append(name)
        return loaded

    def _import(self, entry_point: metadata.EntryPoint, origin: str) -> None:
        name = entry_point.name
        where = f"{self.kind} plugin {name!r} (entry point {entry_point.value} from {origin})"
        _LOADING.append(origin)
        try:
            entry_point.load()
        except ValueError as exc:  # e.g. "registered twice", "must be kebab-case"
            raise ConfigError(f"{where}: {exc}") from None
        except Exception as exc:  # an import error, or any failure inside the plugin's module
            raise ConfigError(f"{where} cannot be loaded: {type(exc).__name__}: {exc}") from None
        finally:
            _LOADING.pop()
        if name not in self._plugins:
            raise ConfigError(
                f"{where} registered no {self.kind} named {name!r}: the module must register its class "
                f"under the entry point's name"
            )

    def plugin_infos(self) -> list[PluginInfo]:
        """Every plugin this registry has or could load, with where it comes from."""
        infos = [PluginInfo(self.kind, name, self.origin(name), "", "loaded") for name in self._plugins]
        infos = [i for i in infos if i.origin == BUILT_IN]
        for entry_point in discovered(self.group) if self.group else ():
            origin = _origin(entry_point)
            owner = self._origins.get(entry_point.name)
            if entry_point.name in self._failed:
                status = f"broken: {self._failed[entry_point.name]}"
            elif owner is None:
                status = "not loaded"
            elif owner == origin:
                status = "loaded"
            else:
                status = f"shadowed by {owner}"
            infos.append(PluginInfo(self.kind, entry_point.name, origin, entry_point.value, status))
        return sorted(infos, key=lambda i: (i.name, i.origin != BUILT_IN))


def config_models(registry: Registry[Any]) -> tuple[type[BaseModel], ...]:
    """The config models of every plugin in a registry, in name order."""
    return tuple(cls.config_model for _, cls in registry.items())


class PluginUnion:
    """Annotation for a config field that holds one plugin's config, chosen by its ``type`` key.

    ``Annotated[SourceConfig, PluginUnion(SOURCES)]`` validates as the discriminated union of every
    registered source's config model at the time the model is (re)built; ``spendwatch.config``
    rebuilds the models after plugins load.
    """

    def __init__(self, registry: Registry[Any]) -> None:
        self.registry = registry

    def models(self) -> tuple[type[BaseModel], ...]:
        return config_models(self.registry)

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        models = self.models()
        union: Any = models[0] if len(models) == 1 else Union[models]  # noqa: UP007  (a runtime tuple)
        return handler.generate_schema(Annotated[union, Field(discriminator="type")])

    def __repr__(self) -> str:
        return f"PluginUnion({self.registry.kind})"

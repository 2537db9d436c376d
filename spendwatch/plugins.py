"""Plugin registries: collectors, actions and notifiers register by kebab-case name.

As in cloud-custodian, a plugin is a class registered under a name; it carries its own pydantic
config model, so the whole config file can be validated before anything runs. Plugins are imported
explicitly by their package ``__init__`` (no entry-point scan at start-up).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from spendwatch.errors import ConfigError

_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are errors, values are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, validate_default=True)


class Plugin:
    """A registered plugin: its registry name and the pydantic model of its config."""

    plugin_name: ClassVar[str] = ""
    config_model: ClassVar[type[BaseModel]]


P = TypeVar("P", bound=type[Plugin])


class Registry(Generic[P]):
    """Name → plugin class, for one kind of plugin ("source", "action", "notifier")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._plugins: dict[str, P] = {}

    def register(self, name: str) -> Callable[[P], P]:
        if not _NAME.match(name):
            raise ValueError(f"{self.kind} name {name!r} must be kebab-case")

        def decorate(cls: P) -> P:
            if name in self._plugins:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            cls.plugin_name = name
            self._plugins[name] = cls
            return cls

        return decorate

    def get(self, name: str) -> P:
        try:
            return self._plugins[name]
        except KeyError:
            known = ", ".join(sorted(self._plugins)) or "none"
            raise ConfigError(f"unknown {self.kind} {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        return sorted(self._plugins)

    def items(self) -> Iterator[tuple[str, P]]:
        yield from sorted(self._plugins.items())

    def __contains__(self, name: object) -> bool:
        return name in self._plugins

    def __len__(self) -> int:
        return len(self._plugins)


def config_models(registry: Registry[Any]) -> tuple[type[BaseModel], ...]:
    """The config models of every plugin in a registry, in name order."""
    return tuple(cls.config_model for _, cls in registry.items())

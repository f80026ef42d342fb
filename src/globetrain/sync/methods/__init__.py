"""Registry of sync methods: named presets of the one sync loop.

Every method, ours and the baselines, runs through the same ``SyncLoop`` and the same
codec; a method only fixes settings (how many local steps, what is sent, how the
average is applied). A new method is a new module in this package that calls
``register``; nothing in the loop changes.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable

from globetrain.errors import ConfigError
from globetrain.sync.config import SyncConfig


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    description: str
    configure: Callable[[SyncConfig], SyncConfig]
    """Turns the user's base settings into this method's settings."""
    adaptive: bool = False
    """Whether the QoS scheduler adapts H, density and bits per round."""

    def sync_config(self, base: SyncConfig | None = None) -> SyncConfig:
        return self.configure(base or SyncConfig())


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in _REGISTRY:
        raise ValueError(f"sync method {method.name!r} is registered twice")
    _REGISTRY[method.name] = method
    return method


def _load_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def method_names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get_method(name: str) -> Method:
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown sync method {name!r}; valid methods are {sorted(_REGISTRY)}") from None

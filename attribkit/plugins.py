"""Plugin loading and the registry of everything plugins register.

Built-ins go through exactly the code path of third-party entry points.
A plugin that fails (import error, unknown hook, exception inside a hook,
duplicate name, object without the protocol) is recorded with its name and
skipped; everything else keeps working.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import AttribkitError, UnknownNameError
from .specs import SPEC_TYPES

ENTRY_POINT_GROUP = "attribkit"
DISABLE_AUTOLOAD_ENV = "ATTRIBKIT_DISABLE_PLUGIN_AUTOLOAD"
LOAD_ONLY_ENV = "ATTRIBKIT_LOAD_PLUGINS"  # comma-separated entry-point names

DEFAULT_PLUGINS = (
    "attribkit.builtins.datasets",
    "attribkit.builtins.victims",
    "attribkit.builtins.attacks",
    "attribkit.builtins.backbones",
    "attribkit.builtins.heads",
)

KINDS = tuple(SPEC_TYPES)

pm = pluggy.PluginManager("attribkit")
pm.add_hookspecs(hookspecs)


@dataclass
class PluginInfo:
    name: str
    source: str  # "builtin" | "entry point" | "registered"
    version: str = ""
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass
class Registration:
    spec: Any
    plugin: str


class Registry:
    """Name → spec tables, one per plugin kind, with where each came from."""

    def __init__(self):
        self.tables: dict[str, dict[str, Registration]] = {k: {} for k in KINDS}
        self.plugins: dict[str, PluginInfo] = {}
        self.commands: dict[str, Registration] | None = None  # filled by add_commands, when the CLI needs them

    def get(self, kind: str, name: str):
        table = self.tables[kind]
        if name not in table:
            raise UnknownNameError(kind.rstrip("s"), name, table)
        return table[name].spec

    def names(self, kind: str) -> list[str]:
        return sorted(self.tables[kind])

    def errors(self) -> list[str]:
        return [f"plugin {p.name!r}: {e}" for p in self.plugins.values() for e in p.errors]


_loaded = False
_registry: Registry | None = None
_sources: dict[str, tuple[str, str]] = {}  # plugin name -> (source, version)
_load_errors: list[PluginInfo] = []  # plugins that never got registered


def _register_plugin(name: str, obj: Any, source: str, version: str = "") -> None:
    try:
        pm.register(obj, name=name)
        pm.check_pending()  # a misspelled hook is an error now, not a silent no-op
    except Exception as exc:
        if pm.is_registered(obj):
            pm.unregister(obj)
        _load_errors.append(PluginInfo(name, source, version, errors=[_describe(exc)]))
        return
    _sources[name] = (source, version)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip().splitlines()[0]


def load_plugins() -> None:
    """Register the built-ins and the installed entry points, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module_name in DEFAULT_PLUGINS:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            _load_errors.append(PluginInfo(module_name, "builtin", errors=[_describe(exc)]))
            continue
        _register_plugin(module_name, module, "builtin", _own_version())
    if os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip() not in ("", "0"):
        return
    only = {n.strip() for n in os.environ.get(LOAD_ONLY_ENV, "").split(",") if n.strip()}
    installed = {ep.name for ep in md.entry_points(group=ENTRY_POINT_GROUP)}
    for name in sorted(only - installed):  # a typo must not pass for "loaded nothing"
        _load_errors.append(PluginInfo(name, "entry point", errors=[
            f"named in {LOAD_ONLY_ENV} but no installed plugin has this name "
            f"(installed: {', '.join(sorted(installed)) or 'none'})"]))
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        if only and ep.name not in only:
            continue
        version = ep.dist.version if ep.dist else ""
        if pm.has_plugin(ep.name):
            _load_errors.append(PluginInfo(ep.name, "entry point", version,
                                           errors=["another plugin already uses this name"]))
            continue
        try:
            obj = ep.load()
        except Exception as exc:  # one broken plugin must not take the CLI down
            _load_errors.append(PluginInfo(ep.name, "entry point", version, errors=[_describe(exc)]))
            continue
        _register_plugin(ep.name, obj, "entry point", version)


def _collect() -> Registry:
    reg = Registry()
    for info in _load_errors:
        reg.plugins[info.name] = info
    for plugin_name, plugin in pm.list_name_plugin():
        source, version = _sources.get(plugin_name, ("registered", ""))
        reg.plugins[plugin_name] = PluginInfo(plugin_name, source, version)
    for kind in KINDS:
        caller = getattr(pm.hook, f"register_{kind}")
        # call each implementation alone so an exception names its plugin
        for impl in caller.get_hookimpls():  # registration order: built-ins win a clash
            info = reg.plugins[impl.plugin_name]
            info.hooks.append(f"register_{kind}")
            _call_one(reg, kind, impl, info)
    for impl in pm.hook.register_commands.get_hookimpls():  # called later, by add_commands
        reg.plugins[impl.plugin_name].hooks.append("register_commands")
    return reg


def _call_one(reg: Registry, kind: str, impl, info: PluginInfo) -> None:
    expected = SPEC_TYPES[kind]
    table = reg.tables[kind]

    def register(spec):
        if not isinstance(spec, expected):
            raise AttribkitError(f"register_{kind} got {type(spec).__name__}, expected {expected.__name__}")
        if spec.name in table:
            other = table[spec.name].plugin
            info.errors.append(f"{kind.rstrip('s')} {spec.name!r} is already registered by plugin {other!r}; "
                               f"plugin {info.name!r} tried to register it again (kept {other!r}'s)")
            return
        table[spec.name] = Registration(spec, info.name)
        info.registered.setdefault(kind, []).append(spec.name)

    try:
        impl.function(**{arg: register for arg in impl.argnames})
    except Exception as exc:
        info.errors.append(f"register_{kind}: {_describe(exc)}")


def add_commands(group) -> dict[str, Any]:
    """The plugins' commands for the root click ``group``: name → command.

    Each ``register_commands`` hook runs once per registry, alone, so that
    an exception, or a name that is built in or already taken, is recorded
    as that plugin's error and nothing else changes. ``group`` itself is left
    with only its own commands: the registry holds the plugins', so
    refresh() and reset() forget them with the plugins that made them.
    """
    reg = registry()
    if reg.commands is None:
        reg.commands = {}
        for impl in pm.hook.register_commands.get_hookimpls():  # registration order: the first plugin keeps a name
            _add_one(reg, group, impl, reg.plugins[impl.plugin_name])
    return {name: r.spec for name, r in reg.commands.items()}


def _add_one(reg: Registry, group, impl, info: PluginInfo) -> None:
    import click  # here: only the CLI asks for commands

    own = dict(group.commands)
    try:
        impl.function(**{arg: group for arg in impl.argnames})
    except Exception as exc:
        info.errors.append(f"register_commands: {_describe(exc)}")
        return  # what it added before failing is dropped too: half a plugin is worse than none
    finally:
        added = {n: c for n, c in group.commands.items() if own.get(n) is not c}
        group.commands.clear()
        group.commands.update(own)
    for name, command in added.items():
        if not isinstance(command, click.Command):
            info.errors.append(f"register_commands: {name!r} is a {type(command).__name__}, not a click command")
        elif name in own:
            info.errors.append(f"command {name!r} is built in; plugin {info.name!r} cannot replace it (kept the "
                               f"built-in)")
        elif name in reg.commands:
            other = reg.commands[name].plugin
            info.errors.append(f"command {name!r} is already registered by plugin {other!r}; plugin {info.name!r} "
                               f"tried to register it again (kept {other!r}'s)")
        else:
            reg.commands[name] = Registration(command, info.name)
            info.registered.setdefault("commands", []).append(name)


def registry() -> Registry:
    """The registry of everything installed (loaded on first use)."""
    global _registry
    load_plugins()
    if _registry is None:
        _registry = _collect()
    return _registry


def refresh() -> Registry:
    """Rebuild the registry after registering or unregistering a plugin object."""
    global _registry
    _registry = None
    return registry()


def reset() -> None:
    """Forget every loaded plugin (tests, and hosts that change what is installed)."""
    global _loaded, _registry
    for plugin in list(pm.get_plugins()):
        pm.unregister(plugin)
    _loaded, _registry = False, None
    _sources.clear()
    _load_errors.clear()


def get(kind: str, name: str):
    return registry().get(kind, name)


def _own_version() -> str:
    from . import __version__

    return __version__

"""Plugin discovery: built-in defaults plus every ``mtlbench`` entry point, filled into registries.

``MTLBENCH_LOAD_PLUGINS`` (a comma list of entry-point or distribution names; empty = none)
limits which entry points load, so an installed third-party plugin cannot change test results.
The library is strict (a broken plugin raises); the CLI passes ``strict=False``, warns, names
the plugin and carries on.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from mtlbench import hookspecs
from mtlbench.balancing import BalancingCard
from mtlbench.cards import DatasetCard, MethodCard
from mtlbench.executors import ExecutorCard
from mtlbench.registry import Registry

ENTRY_POINT_GROUP = "mtlbench"
LOAD_ENV = "MTLBENCH_LOAD_PLUGINS"
# Parts of the core that register through the same hooks as any plugin.
DEFAULT_PLUGINS = ("mtlbench.data.builtin", "mtlbench.executors.builtin",
                   "mtlbench.balancing.builtin")


class PluginError(RuntimeError):
    """A plugin could not be imported or failed while registering; the message names it."""

    def __init__(self, plugin: str, reason: BaseException | str) -> None:
        self.plugin = plugin
        self.reason = reason
        super().__init__(f"plugin {plugin!r} failed: {reason}")


@dataclass
class PluginInfo:
    """One loaded plugin: its name, where it came from and what it registered."""

    name: str
    module: str
    distribution: str = ""
    version: str = ""
    builtin: bool = False
    methods: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    executors: list[str] = field(default_factory=list)
    balancings: list[str] = field(default_factory=list)


#: The group of methods that are options (variants) of another method.
OPTIONS_GROUP = "options"


@dataclass
class Plugins:
    """The plugin manager and the registries it filled."""

    manager: pluggy.PluginManager
    methods: Registry[MethodCard]
    datasets: Registry[DatasetCard]
    info: dict[str, PluginInfo]
    errors: list[PluginError]
    executors: Registry[ExecutorCard] = field(default_factory=lambda: Registry("executor"))
    balancings: Registry[BalancingCard] = field(default_factory=lambda: Registry("balancing"))

    def method_groups(self, group: str) -> list[str]:
        """Names of the methods whose card lists ``group``; ``options``: the methods that are
        an option of another (``MethodCard.option_of``)."""
        if group == OPTIONS_GROUP:
            return [n for n, card in self.methods.items() if card.option_of]
        return [n for n, card in self.methods.items() if group in card.groups]

    def main_methods(self) -> list[str]:
        """Every method that is not an option of another: what ``--methods all`` means."""
        return [n for n, card in self.methods.items() if not card.option_of]

    def select_methods(self, spec: str) -> list[str]:
        """Resolve ``--methods``: names, wildcards, groups, ``all`` (options left out) and
        ``options``; UnknownNameError names the valid choices."""
        return self.methods.select(spec, self.method_groups, all_names=self.main_methods())

    def select_balancings(self, spec: str) -> list[str]:
        """Resolve ``--balancing``: names, wildcards, ``all`` and the groups ``loss`` (loss
        weightings) and ``gradient`` (aggregators); UnknownNameError names the valid choices."""
        def kind(group: str) -> list[str]:
            return [n for n, card in self.balancings.items() if card.kind == group]
        return self.balancings.select(spec, kind)


def _wanted_entry_points() -> list[metadata.EntryPoint]:
    eps = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    allowed = os.environ.get(LOAD_ENV)
    if allowed is None:
        return eps
    names = {n.strip() for n in allowed.split(",") if n.strip()}
    return [ep for ep in eps if ep.name in names or (ep.dist and ep.dist.name in names)]


def load_plugins(strict: bool = True) -> Plugins:
    """Import every plugin, register it with pluggy and collect what its hooks register.

    With ``strict`` a failing plugin raises PluginError; otherwise it is recorded in
    ``Plugins.errors`` and the others still load.
    """
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    info: dict[str, PluginInfo] = {}
    errors: list[PluginError] = []

    def fail(name: str, exc: BaseException) -> None:
        err = PluginError(name, f"{type(exc).__name__}: {exc}")
        if strict:
            raise err from exc
        errors.append(err)

    for module_name in DEFAULT_PLUGINS:
        module = importlib.import_module(module_name)
        pm.register(module, name=module_name)
        info[module_name] = PluginInfo(module_name, module_name, "mtlbench", _version("mtlbench"),
                                       builtin=True)

    seen: set[str] = set()
    for ep in _wanted_entry_points():
        if ep.name in seen:  # the same distribution visible twice on sys.path
            continue
        seen.add(ep.name)
        dist = ep.dist.name if ep.dist else ""
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
        except Exception as exc:  # noqa: BLE001 - any import failure is reported the same way
            fail(ep.name, exc)
            continue
        info[ep.name] = PluginInfo(ep.name, ep.value, dist, ep.dist.version if ep.dist else "",
                                   builtin=dist == "mtlbench")
    pm.check_pending()

    methods: Registry[MethodCard] = Registry("method")
    datasets: Registry[DatasetCard] = Registry("dataset")
    _collect(pm, "mtlbench_register_methods", methods, MethodCard, info, "methods", fail)
    _collect(pm, "mtlbench_register_datasets", datasets, DatasetCard, info, "datasets", fail)
    executors: Registry[ExecutorCard] = Registry("executor")
    _collect(pm, "mtlbench_register_executors", executors, ExecutorCard, info, "executors", fail)
    balancings: Registry[BalancingCard] = Registry("balancing")
    _collect(pm, "mtlbench_register_balancings", balancings, BalancingCard, info, "balancings",
             fail)
    return Plugins(pm, methods, datasets, info, errors, executors, balancings)


def _collect(pm, hook_name, registry, card_type, info, attr, fail) -> None:
    """Call one hook plugin by plugin, so every registration is credited to its plugin."""
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        plugin = impl.plugin_name

        def register(card, _plugin=plugin):
            if not isinstance(card, card_type):
                raise TypeError(f"expected a {card_type.__name__}, got {type(card).__name__}")
            registry.register(card.name, card, owner=_plugin)
            getattr(info[_plugin], attr).append(card.name)

        try:
            impl.function(register=register)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not hide the others
            fail(plugin, exc)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""

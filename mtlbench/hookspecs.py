"""The hooks a plugin may implement; each receives a ``register`` callback (llm style)."""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("mtlbench")
hookimpl = pluggy.HookimplMarker("mtlbench")


@hookspec
def mtlbench_register_methods(register):
    """Call ``register(card: MethodCard)`` once per method the plugin provides."""


@hookspec
def mtlbench_register_datasets(register):
    """Call ``register(card: DatasetCard)`` once per dataset the plugin provides."""


@hookspec
def mtlbench_register_executors(register):
    """Call ``register(card: ExecutorCard)`` once per executor the plugin provides."""


@hookspec
def mtlbench_register_balancings(register):
    """Call ``register(card: BalancingCard)`` once per task balancing the plugin provides."""

"""Balancings' knobs for a run: ``--set BALANCING.KNOB=VALUE``, parsed and checked.

A balancing's knob is named with its balancing (``--set dwa.temperature=3``): a run crosses
several balancings whose knobs may share a name (``lr``, ``max_norm``), and the dot keeps them
apart from the protocol's settings and the methods' knobs, which have plain names. A key with
a dot is refused, before anything is read, when it names no registered balancing, a balancing
the run does not use, or a knob the balancing lacks, and a value when it is not of the knob's
type or fails its check. What a trial's id holds of them are the values away from the
defaults (``TrialKey.balancing_knobs``): a run at the defaults keeps the ids it had before
balancings had knobs.
"""

from __future__ import annotations

import difflib
from typing import Any

from mtlbench.balancing import BalancingCard
from mtlbench.identity import Knobs, knobs_tuple
from mtlbench.protocol import ProtocolError, parse_value


def split_balancing_sets(overrides: dict[str, str]
                         ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """(the other ``--set`` pairs, balancing -> knob -> value text) of ``--set``'s pairs: a key
    with a dot, ``BALANCING.KNOB``, is a balancing's knob."""
    rest: dict[str, str] = {}
    balancing: dict[str, dict[str, str]] = {}
    for key, value in overrides.items():
        name, dot, knob = key.strip().partition(".")
        if not dot:
            rest[key] = value
            continue
        if not name or not knob:
            raise ProtocolError(f"--set {key}: a balancing's knob is BALANCING.KNOB=VALUE, "
                                "e.g. --set dwa.temperature=3")
        balancing.setdefault(name.strip(), {})[knob.strip().replace("-", "_")] = value
    return rest, balancing


def balancing_knob_values(card: BalancingCard, overrides: dict[str, Any] | None = None,
                          owner: str = "") -> dict[str, Any]:
    """Every knob of ``card``: its default, replaced by ``overrides`` (strings parsed to the
    knob's type). ProtocolError names the balancing, its plugin, the knob and the value, and
    names the card's knobs when ``overrides`` has one it lacks."""
    where = f"balancing {card.name!r}" + (f" (plugin {owner!r})" if owner else "")
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - {k.name for k in card.knobs})
    if unknown:
        close = difflib.get_close_matches(unknown[0], [k.name for k in card.knobs], n=1)
        hint = f" Did you mean {card.name}.{close[0]}?" if close else ""
        have = ", ".join(f"{card.name}.{k.name}" for k in card.knobs) or "none"
        raise ProtocolError(f"--set {card.name}.{unknown[0]}: {where} has no knob "
                            f"{unknown[0]!r}.{hint} Its knobs: {have} (`mtlbench list "
                            "balancings` shows every balancing's knobs)")
    values: dict[str, Any] = {}
    for knob in card.knobs:
        value = knob.default
        if knob.name in overrides:
            raw = overrides[knob.name]
            try:
                value = parse_value(knob.name, raw, knob.type, knob.default)
            except ProtocolError:
                raise ProtocolError(
                    f"--set {card.name}.{knob.name}={raw}: {where} knob {knob.name} expects "
                    f"{knob.type.__name__} (e.g. {card.name}.{knob.name}={knob.default})"
                ) from None
            if knob.type is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
        problem = knob.problem(value)
        if problem:
            raise ProtocolError(f"--set {card.name}.{knob.name}={value!r}: {where} knob "
                                f"{knob.name}: {problem}")
        values[knob.name] = value
    return values


def away_from_defaults(card: BalancingCard, values: dict[str, Any]) -> Knobs:
    """The knob values of ``values`` that differ from ``card``'s defaults, as a trial key
    holds them (sorted (name, value) pairs; empty at the defaults)."""
    defaults = {k.name: k.default for k in card.knobs}
    return knobs_tuple({k: v for k, v in values.items() if defaults.get(k) != v})


def resolve_balancing_knobs(registry, balancings: list[str],
                            sets: dict[str, dict[str, str]] | None) -> dict[str, Knobs]:
    """Balancing -> its knob values away from the defaults (the trial key's
    ``balancing_knobs``) for each of the run's ``balancings``, from ``sets`` (balancing ->
    knob -> value text, ``split_balancing_sets``). ProtocolError for a key naming no
    registered balancing, a balancing not in ``balancings``, a knob the balancing lacks, or a
    bad value. ``registry``: the registered balancings (``Plugins.balancings``)."""
    sets = dict(sets or {})
    registered = registry.names()
    for name in sets:
        if name not in registered:
            close = difflib.get_close_matches(name, registered, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ProtocolError(f"--set {name}.{next(iter(sets[name]))}: no balancing "
                                f"{name!r} is registered.{hint} `mtlbench list balancings` "
                                "names them with their knobs")
        if name not in balancings:
            raise ProtocolError(f"--set {name}.{next(iter(sets[name]))}: a knob of balancing "
                                f"{name!r}, which this run does not use (--balancing "
                                f"{','.join(balancings)}); add {name} to --balancing or drop "
                                "the setting")
    out = {}
    for name in balancings:
        card = registry.get(name)
        out[name] = away_from_defaults(card, balancing_knob_values(card, sets.get(name),
                                                                   registry.owner(name)))
    return out

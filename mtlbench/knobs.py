"""Methods' own settings (``MethodCard.knobs``): their values for a run, from the protocol
preset and ``--set``.

``--set KEY=VALUE`` names either a protocol setting (shared by every method) or a knob of the
run's methods; ``split_settings`` tells them apart, and a key that is neither is refused with
both lists. A knob's value comes from its default under the protocol preset, then from
``--set``; it is checked against the knob's type, choices and check before any training.
"""

from __future__ import annotations

import difflib
from typing import Any

from mtlbench.cards import MethodCard
from mtlbench.identity import Knobs, knobs_tuple, variant_text
from mtlbench.protocol import ProtocolError, parse_value, setting_names


def split_settings(overrides: dict[str, str], cards: list[MethodCard],
                   registered: list[MethodCard] = ()) -> tuple[dict[str, str], dict[str, str]]:
    """(protocol settings, method knobs) of ``--set``'s key=value pairs; ``cards`` are the
    run's methods, ``registered`` all methods (to say which have a knob the run's lack)."""
    protocol_keys = set(setting_names())
    knob_keys = {k.name for card in cards for k in card.knobs}
    protocol, knobs = {}, {}
    for raw_key, value in overrides.items():
        key = raw_key.strip().replace("-", "_")
        if key in protocol_keys:
            protocol[key] = value
        elif key in knob_keys:
            knobs[key] = value
        else:
            elsewhere = [c.name for c in registered if c.knob(key) is not None]
            if elsewhere:
                raise ProtocolError(
                    f"--set {key}: a knob of {', '.join(elsewhere)}, but of none of this run's "
                    f"methods ({', '.join(c.name for c in cards)})")
            everything = sorted(protocol_keys | knob_keys)
            close = difflib.get_close_matches(key, everything, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            owned = ", ".join(f"{k.name} ({card.name})" for card in cards for k in card.knobs)
            raise ProtocolError(
                f"unknown setting {key!r}.{hint} Protocol settings: "
                f"{', '.join(sorted(protocol_keys))}. Knobs of the methods of this run: "
                f"{owned or 'none'} (`mtlbench list methods` shows every method's knobs)")
    return protocol, knobs


def knob_values(card: MethodCard, preset: str, overrides: dict[str, Any] | None = None,
                owner: str = "") -> dict[str, Any]:
    """Every knob of ``card``: its default under ``preset``, replaced by ``overrides`` (strings
    parsed to the knob's type; keys the card has no knob for are ignored, they belong to other
    methods). ProtocolError names the method, its plugin, the knob and the value."""
    where = f"method {card.name!r}" + (f" (plugin {owner!r})" if owner else "")
    values: dict[str, Any] = {}
    for knob in card.knobs:
        default = knob.default_for(preset)
        value = default
        if overrides and knob.name in overrides:
            value = parse_value(knob.name, overrides[knob.name], knob.type, default)
            if knob.type is float and isinstance(value, int):
                value = float(value)
        problem = knob.problem(value)
        if problem:
            raise ProtocolError(f"{where}: knob {knob.name}={value!r}: {problem}")
        values[knob.name] = value
    return values


def defaults(card: MethodCard, preset: str) -> dict[str, Any]:
    """The card's knob values under ``preset`` with nothing overridden."""
    return {k.name: k.default_for(preset) for k in card.knobs}


def resolved(card: MethodCard, preset: str, overrides: dict[str, Any] | None = None,
             owner: str = "") -> tuple[Knobs, str]:
    """(knob values as a trial key holds them, variant text) for a trial of ``card``."""
    values = knob_values(card, preset, overrides, owner)
    return knobs_tuple(values), variant_text(values, defaults(card, preset))

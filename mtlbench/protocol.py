"""The training and evaluation protocol: every setting all methods share, with named presets.

A Protocol is a frozen dataclass; ``protocol.hash`` is stable across runs and machines (it
covers the settings, not the preset name or how they were set) and goes into every trial id.
What only one method has (a loss weight of its own, say) is that method's knob
(``mtlbench.cards.Knob``), not a protocol setting.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

SPLITS = ("stratified-group", "paper", "official")  # official: the dataset's own partition
CHECKPOINTS = ("last", "paper")
PRETRAINED = ("none", "imagenet")
SCHEDULES = ("cosine", "constant")
ROTATIONS = ("uniform", "paper-text")
PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 where the device has it natively
LOSS_MODES = ("paper", "code")
# Knobs that describe the run, not the result: left out of the hash. Precision is one: it
# changes how fast a trial runs and its numbers only by rounding, and is chosen by the hardware
# (mtlbench.precision), so a run on an AMX CPU and one on an AVX2 CPU give comparable rows;
# each result records the precision that produced it.
_NOT_HASHED = ("name", "overrides", "eval_batch_size", "precision")
# The training seed is a replicate, not a setting (``mtlbench run --seeds``): trials of one
# protocol under several seeds share its hash and differ in their trial keys' seed field. It is
# hashed at its default value rather than dropped, so that every hash (and trial id) computed
# when the seed was hashed (mtlbench <= 0.2) stays the same for the default seed.
_HASHED_AT_DEFAULT = ("seed",)


@dataclass(frozen=True)
class Protocol:
    """Every setting of one training + evaluation protocol (spec §1, §4)."""

    name: str
    image_size: int
    batch_size: int
    epochs: int
    lr: float
    weight_decay: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.99
    schedule: str = "cosine"  # cosine: lr factor 1 -> lr_final_factor over the epochs (spec §4)
    lr_final_factor: float = 0.1
    hflip_p: float = 0.6
    vflip_p: float = 0.6
    rotate_deg: float = 30.0
    rotate_mode: str = "uniform"  # uniform in ±deg (the code); paper-text: |θ| in [10, deg]
    norm_mean: float = 0.330
    norm_std: float = 0.204
    folds: int = 5
    split: str = "stratified-group"
    split_seed: int = 42
    cls_weight: float = 0.3  # λ in L = λ·CE + (1−λ)·L_seg
    dice_smooth: float = 1.0
    # paper: L_seg = Dice + the method's own terms; code: the reference paper's released
    # training script's loss (uncertainty-weighted code-form Dice and CE, no extra terms)
    loss_mode: str = "paper"
    checkpoint: str = "last"  # last epoch (clean) or the paper's best-on-test-fold (leaky)
    pretrained: str = "none"
    precision: str = "auto"  # auto | fp32 | bf16 (autocast of the forward pass); not hashed
    seed: int = 2  # the first training seed; a replicate (--seeds), the same hash for every seed
    eval_batch_size: int = 32
    overrides: tuple[tuple[str, Any], ...] = field(default=())

    def __post_init__(self) -> None:
        problems = []
        # NaN passes every comparison below (nan <= 0 is False), so finiteness comes first.
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                problems.append(f"{f.name}={value} must be a finite number")
        if self.image_size < 32 or self.image_size % 32:
            problems.append(f"image_size={self.image_size} must be a multiple of 32 (>= 32)")
        for key in ("batch_size", "epochs", "eval_batch_size"):
            if getattr(self, key) < 1:
                problems.append(f"{key}={getattr(self, key)} must be >= 1")
        if self.folds < 2:
            problems.append(f"folds={self.folds} must be >= 2")
        if self.lr <= 0:
            problems.append(f"lr={self.lr} must be > 0")
        if self.weight_decay < 0:
            problems.append(f"weight_decay={self.weight_decay} must be >= 0")
        for key in ("hflip_p", "vflip_p", "cls_weight", "beta1", "beta2", "lr_final_factor"):
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                problems.append(f"{key}={value} must be within [0, 1]")
        if not 0 <= self.rotate_deg <= 180:
            problems.append(f"rotate_deg={self.rotate_deg} must be within [0, 180]")
        if self.norm_std <= 0 or self.dice_smooth < 0:
            problems.append("norm_std must be > 0 and dice_smooth >= 0")
        for key, allowed in (("split", SPLITS), ("checkpoint", CHECKPOINTS),
                             ("pretrained", PRETRAINED), ("schedule", SCHEDULES),
                             ("rotate_mode", ROTATIONS), ("precision", PRECISIONS),
                             ("loss_mode", LOSS_MODES)):
            if getattr(self, key) not in allowed:
                problems.append(f"{key}={getattr(self, key)!r} must be one of {', '.join(allowed)}")
        if problems:
            raise ProtocolError(f"protocol {self.name!r}: " + "; ".join(problems))

    def knobs(self) -> dict[str, Any]:
        """The settings that change a result, as plain data."""
        data = dataclasses.asdict(self)
        for key in _NOT_HASHED:
            data.pop(key)
        return data

    @property
    def hash(self) -> str:
        """A short stable hash of the knobs; the same for every training seed."""
        hashed = self.knobs()
        for f in fields(self):
            if f.name in _HASHED_AT_DEFAULT:
                hashed[f.name] = f.default
        text = json.dumps(hashed, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["overrides"] = [list(kv) for kv in self.overrides]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Protocol:
        """The protocol of a stored result. Keys that are no protocol setting are dropped:
        mtlbench 0.1 kept some methods' loss weights in the protocol (they are the methods'
        knobs now)."""
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["overrides"] = tuple(tuple(kv) for kv in data.get("overrides", ())
                                  if kv and kv[0] in known)
        return cls(**data)


def setting_names() -> list[str]:
    """The settings ``--set`` may change."""
    return [f.name for f in fields(Protocol) if f.name not in ("name", "overrides")]


class ProtocolError(ValueError):
    """A protocol name, override or value a user gave that cannot be used."""


# Preset name -> (description, base knobs, per-dataset knobs)
_PRESETS: dict[str, tuple[str, dict[str, Any], dict[str, dict[str, Any]]]] = {
    # The benchmark's own protocol: the reference paper's (the protocol every method of the
    # benchmark is compared under, not a method's). Methods' own loss terms and their weights
    # are their knobs, with the paper's values as defaults.
    "paper": (
        "The reference paper's protocol (spec §1, §3, §4): 256², Adam 1e-4, cosine to 0.1, "
        "flips p=0.6, rotation ±30°, ImageNet encoder, loss λ·CE + (1−λ)·(Dice + the method's "
        "own terms at their default weights); BUSI 16×100, BUS 4×90. Forward pass under "
        "bfloat16 "
        "autocast where the device has native bf16 (AMP, which the spec allows when "
        "reported), float32 elsewhere (precision=auto; --set precision=fp32 forces float32).",
        dict(image_size=256, batch_size=16, epochs=100, lr=1e-4, beta2=0.99,
             pretrained="imagenet", precision="auto", eval_batch_size=64),
        {"busi": dict(batch_size=16, epochs=100), "bus": dict(batch_size=4, epochs=90),
         # the synthetic set has BUS's size, so it gets BUS's schedule
         "synthetic": dict(batch_size=4, epochs=90)},
    ),
    "smoke": (
        "Small and fast, for CPUs and CI: 64², batch 8, 4 epochs, lr 1e-3, random init, "
        "horizontal flips and ±10° rotation (no vertical flips: they move the posterior cue), "
        "methods' costly loss terms off where their knobs say so for smoke (terms that need "
        "pretrained networks of their own and make a CPU epoch up to 2.4× longer), "
        "bfloat16 autocast for the forward pass where the CPU or GPU has native bf16, float32 "
        "elsewhere (precision=auto; weights and losses in float32).",
        dict(image_size=64, batch_size=8, epochs=4, lr=1e-3, beta2=0.999, schedule="cosine",
             lr_final_factor=0.1, hflip_p=0.5, vflip_p=0.0, rotate_deg=10.0, eval_batch_size=64,
             precision="auto"),
        {},
    ),
}


def protocol_names() -> list[str]:
    return list(_PRESETS)


def describe_protocols() -> list[tuple[str, str, dict[str, dict[str, Any]]]]:
    """(name, description, per-dataset knobs) of every preset."""
    return [(name, desc, per) for name, (desc, _, per) in _PRESETS.items()]


def get_protocol(name: str, dataset: str = "", overrides: dict[str, str] | None = None) -> Protocol:
    """The preset ``name`` resolved for ``dataset``, with command-line ``overrides`` applied."""
    if name not in _PRESETS:
        close = difflib.get_close_matches(name, list(_PRESETS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ProtocolError(f"unknown protocol {name!r}.{hint} Valid protocols: "
                            + ", ".join(_PRESETS))
    _, base, per_dataset = _PRESETS[name]
    knobs = {**base, **per_dataset.get(dataset, {})}
    protocol = Protocol(name=name, **knobs)
    return apply_overrides(protocol, overrides or {})


def apply_overrides(protocol: Protocol, overrides: dict[str, str]) -> Protocol:
    """A copy of ``protocol`` with ``key=value`` strings parsed to each knob's type and recorded."""
    if not overrides:
        return protocol
    types = setting_names()
    changes: dict[str, Any] = {}
    for key, raw in overrides.items():
        key = key.strip().replace("-", "_")
        if key not in types:
            close = difflib.get_close_matches(key, list(types), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ProtocolError(f"unknown protocol setting {key!r}.{hint} Settings: "
                                + ", ".join(types))
        current = getattr(protocol, key)
        changes[key] = parse_value(key, raw, type(current), current)
    recorded = dict(protocol.overrides)
    recorded.update(changes)
    return dataclasses.replace(protocol, **changes, overrides=tuple(sorted(recorded.items())))


def parse_value(key: str, raw: Any, kind: type, example: Any) -> Any:
    """``raw`` (a command-line string) as a ``kind`` (bool, int, float or str); ProtocolError
    names the key and shows ``example``. Values that are not strings pass unchanged."""
    if not isinstance(raw, str):
        return raw
    current = example
    try:
        if kind is bool:
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return raw.lower() in ("true", "1", "yes")
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
    except ValueError:
        raise ProtocolError(
            f"protocol setting {key}={raw!r}: expected {kind.__name__} (e.g. {key}={current})"
        ) from None
    return raw

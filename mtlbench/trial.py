"""What a trial is (one dataset × method with its knobs × fold × protocol × seed) and what it
returns; its identity is ``mtlbench.identity.TrialKey``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtlbench.identity import DEFAULT_BALANCING, KEY_VERSION, Knobs, TrialKey, balancing_label
from mtlbench.protocol import Protocol

DEFAULT_CHECKPOINT_EVERY_S = 0.0
"""`mtlbench run`'s checkpoint interval: a checkpoint after every epoch, written in the
background (an epoch that ends while the previous one is still being written skips its own)."""


@dataclass(frozen=True)
class SpeedOptions:
    """How fast a trial runs, not what it computes: none of these enters the trial id.

    ``channels_last``: NHWC memory format for the model and its inputs (None: on CUDA, where
    bf16 tensor-core convolutions want it, off on the CPU, where it sped one built-in model up
    by 16% and slowed another by 6%: benchmarks/results). ``compile``: run the model through
    ``torch.compile``. ``checkpoint_every_s``: start a checkpoint after an epoch only when
    this many seconds passed since the last one started (0: after every epoch). Checkpoints are
    written in the background, one at a time (``mtlbench.checkpointing``): on a GPU a BUS epoch
    takes less time than writing a 32 M-parameter model's 0.5 GB checkpoint, and training does
    not wait for it.
    """

    channels_last: bool | None = None
    compile: bool = False
    checkpoint_every_s: float = 0.0

    def channels_last_on(self, device: str) -> bool:
        return self.channels_last if self.channels_last is not None else \
            device.startswith("cuda")


@dataclass(frozen=True)
class TrialSpec:
    """Everything a worker needs to run one trial on its own."""

    dataset: str
    method: str
    fold: int
    protocol: Protocol
    run_dir: str
    data_root: str | None = None
    cache_dir: str | None = None
    device: str = "cpu"
    speed: SpeedOptions = field(default_factory=SpeedOptions)
    knobs: Knobs = ()  # the method's knob values (mtlbench.knobs), sorted (name, value) pairs
    variant: str = ""  # the knobs that differ from the method's defaults, in words
    # The dataset spec to load, as given (an absolute path in it too); ``dataset`` is its
    # identity (mtlbench.data.prepare.dataset_identity). Empty: load ``dataset``.
    data_spec: str = ""
    # How the task losses become the update (mtlbench.balancing); ``fixed``: the protocol's loss.
    balancing: str = DEFAULT_BALANCING
    # The balancing's knob values that differ from its defaults (mtlbench.balancing.knobs),
    # sorted (name, value) pairs as the trial key holds them; empty at the defaults.
    balancing_knobs: Knobs = ()
    # Keep the selected model when the trial finishes (mtlbench.fold_models): "fp16" or
    # "fp32", the precision its weights are kept in; "": not kept. Not part of the trial id.
    keep_model: str = ""

    @property
    def seed(self) -> int:
        """The training seed: a replicate of the (method, fold) under one protocol hash."""
        return self.protocol.seed

    @property
    def key(self) -> TrialKey:
        return TrialKey(self.dataset, self.method, self.fold, self.seed, self.protocol.hash,
                        self.knobs, self.balancing, self.balancing_knobs)

    @property
    def trial_id(self) -> str:
        """The hash of the trial's key (``mtlbench.identity``): its id everywhere."""
        return self.key.trial_id

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.run_dir) / "checkpoints" / f"{self.trial_id}.pt"

    @property
    def label(self) -> str:
        method = f"{self.method} [{self.variant}]" if self.variant else self.method
        if self.balancing != DEFAULT_BALANCING:
            method = f"{method} · {balancing_label(self.balancing, self.balancing_knobs)}"
        seed = "" if self.seed == Protocol.seed else f" · seed {self.seed}"
        return f"{method} · {self.dataset} · fold {self.fold}{seed}"


@dataclass
class TrialResult:
    """A finished (or failed) trial: everything the store records about it."""

    trial_id: str
    dataset: str
    method: str
    fold: int
    seed: int
    protocol: dict[str, Any]
    protocol_hash: str
    status: str  # "finished" or "failed"
    error: str = ""
    image_rows: list[dict[str, Any]] = field(default_factory=list)
    fold_metrics: dict[str, float] = field(default_factory=dict)
    curve: list[dict[str, Any]] = field(default_factory=list)
    profile: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    selected_epoch: int = -1
    resumed_from_epoch: int = -1
    # For the report's qualitative grid (see mtlbench.predictions): case id -> base64 PNG of the
    # binary predicted mask of every test case, and the input and ground truth of a few gallery
    # cases (case id -> {"image", "mask", "label"}). Plain str/int data: JSON-serialisable.
    predictions: dict[str, str] = field(default_factory=dict)
    gallery: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The trial key's version and the method's knob values (mtlbench.identity); results
    # written before knobs existed read as version 1 with none.
    key_version: int = KEY_VERSION
    knobs: dict[str, Any] = field(default_factory=dict)
    variant: str = ""
    balancing: str = DEFAULT_BALANCING
    # The balancing's knob values away from its defaults, as the trial key holds them (every
    # knob's value is in ``env["balancing_knobs"]``); results written before have none.
    balancing_knobs: dict[str, Any] = field(default_factory=dict)
    # An evaluation of kept models on another dataset (mtlbench.external_eval): that
    # dataset's identity; "": the trial's own test fold.
    test_dataset: str = ""

    @classmethod
    def failed(cls, spec: TrialSpec, error: str, **extra: Any) -> TrialResult:
        return cls(spec.trial_id, spec.dataset, spec.method, spec.fold, spec.seed,
                   spec.protocol.to_dict(), spec.protocol.hash, "failed", error=error,
                   knobs=dict(spec.knobs), variant=spec.variant, balancing=spec.balancing,
                   balancing_knobs=dict(spec.balancing_knobs), **extra)


class TrialFailed(RuntimeError):
    """A trial that cannot finish (non-finite loss, broken model contract, ...)."""


class ModelContractError(TrialFailed):
    """A method's model returned outputs that break the contract; names the method and plugin."""

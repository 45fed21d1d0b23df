"""The method contract, proved from outside: a plugin package (tests/outside_plugin), installed
through its entry point, registers a method with its own knobs, loss term, weights file,
input features, FLOP and MAC rules and an extra output; it trains, resumes and reports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mtlbench.knobs import knob_values
from mtlbench.plugins import load_plugins
from mtlbench.profile import count_flops
from mtlbench.protocol import get_protocol
from mtlbench.runner import execute, plan_run
from mtlbench.store import Store
from mtlbench.thop_rules import thop_count
from mtlbench.weights import WeightsUnavailableError

PACKAGE = Path(__file__).parent / "outside_plugin"


def install(site: Path) -> Path:
    """What `pip install tests/outside_plugin` leaves: a dist-info with the entry point (the
    package itself is found on the path)."""
    info = site / "mtlbench_outside-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mtlbench-outside\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mtlbench]\noutside = mtlbench_outside\n")
    return site


@pytest.fixture
def outside(tmp_path, monkeypatch):
    """The plugin on the path and allowed to load; an empty folder for its weights file."""
    site = install(tmp_path / "site")
    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.syspath_prepend(str(PACKAGE))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("MTLBENCH_LOAD_PLUGINS", "mtlbench,outside")
    monkeypatch.setenv("MTLBENCH_OUTSIDE_WEIGHTS", str(weights))
    monkeypatch.setenv("MTLBENCH_OFFLINE", "1")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(PACKAGE)])}
    return {"site": site, "weights": weights, "env": env}


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtlbench", *args], env=env,
                          capture_output=True, text=True, timeout=300)


class StopAfterFirstEpoch:
    """Run events that interrupt the run after the first epoch (a Ctrl-C mid-trial)."""

    def trial_started(self, spec):
        pass

    def epoch_finished(self, spec, record):
        raise KeyboardInterrupt


def test_a_plugin_from_outside_uses_every_extension_point(outside, tmp_path):
    env = outside["env"]
    run_dir = tmp_path / "run"

    # Its knobs are listed with their types and defaults.
    listed = cli(env, "list", "methods", "--json")
    assert listed.returncode == 0, listed.stderr
    card_record = next(r for r in json.loads(listed.stdout) if r["name"] == "edgenet")
    assert card_record["plugin"] == "outside" and card_record["loss_terms"] == ["edge"]
    assert [(k["name"], k["type"], k["default"]) for k in card_record["knobs"]] == [
        ("edge_weight", "float", 0.5), ("width", "int", 8)]

    # A bad knob value and a missing weights file stop the run before any training.
    bad = cli(env, "run", "--methods", "edgenet", "--set", "width=12", "--out", str(run_dir))
    assert bad.returncode == 2 and "knob width=12: must be one of 8, 16" in bad.stderr
    missing = cli(env, "run", "--methods", "edgenet", "--folds", "0", "--out", str(run_dir))
    text = " ".join(missing.stderr.split())
    assert missing.returncode == 2, missing.stderr
    assert str(outside["weights"] / "sobel.weights") in text
    assert "--set edge_weight=0" in text
    assert not (run_dir / "checkpoints").exists()

    # With the file where the plugin keeps it, the method trains; interrupted after its first
    # epoch, the same run resumes from the checkpoint.
    shutil.copy(PACKAGE / "mtlbench_outside" / "sobel.weights", outside["weights"])
    plugins = load_plugins()
    card = plugins.methods.get("edgenet")
    assert plugins.methods.owner("edgenet") == "outside"
    protocol = get_protocol("smoke", "synthetic", {"epochs": "3"})
    plan = plan_run(plugins, ["edgenet"], "synthetic", protocol, run_dir, folds=[0],
                    knob_overrides={"width": "16"})
    (spec,) = plan.specs
    assert dict(spec.knobs) == {"edge_weight": 0.5, "width": 16}
    assert spec.variant == "width=16"
    with pytest.raises(KeyboardInterrupt):
        execute(plan, run_dir, StopAfterFirstEpoch(), plugins=plugins)
    assert spec.checkpoint_path.exists()
    plan = plan_run(plugins, ["edgenet"], "synthetic", protocol, run_dir, folds=[0],
                    knob_overrides={"width": "16"})
    assert [s.trial_id for s in plan.resumable] == [spec.trial_id]
    summary = execute(plan, run_dir, StopAfterNothing(), plugins=plugins)
    (result,) = summary.finished
    assert result.resumed_from_epoch == 0 and [r["epoch"] for r in result.curve] == [0, 1, 2]
    assert all(r["loss_edge"] > 0 for r in result.curve)  # its own term trained with it
    assert result.knobs == {"edge_weight": 0.5, "width": 16}
    assert result.env["weights"] == ["outside/sobel"]
    assert "Sobel edge MSE" in result.env["loss"]

    # Its counting rules entered the profile: FLOPs of its own operator, MACs of its module.
    model = card.build(_config(card, protocol, 16))
    size = protocol.image_size
    assert result.profile["flops"] == count_flops(model, size, 4, card.flop_formulas)
    assert result.profile["flops"] > count_flops(model, size, 4)
    assert result.profile["macs"] == thop_count(model, size, 4, (), card.mac_rules).macs
    assert result.profile["macs"] > thop_count(model, size, 4).macs

    # Another knob value is another trial (and another leaderboard row).
    other = plan_run(plugins, ["edgenet"], "synthetic", protocol, run_dir, folds=[0])
    assert other.specs and other.specs[0].trial_id != spec.trial_id

    # Its output check runs on the first step: a model without 'edge' is refused by name.
    assert "'edge' must be (B, 1, H, W)" in card.check_outputs({"seg": None}, 2, 64)

    # The CLI sees the stored trial and reports it.
    again = cli(env, "run", "--methods", "edgenet", "--folds", "0", "--set", "epochs=3",
                "--set", "width=16", "--out", str(run_dir))
    assert again.returncode == 0, again.stderr
    assert "1 already finished" in " ".join(again.stdout.split())
    assert "| edgenet [width=16] |" in (run_dir / "leaderboard.md").read_text()
    report = cli(env, "report", str(run_dir), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "report" / "report.html").read_text()
    assert "edgenet [width=16]" in page
    with Store.in_run_dir(run_dir) as store:
        (stored,) = store.trials()
    assert stored["knobs"] == {"edge_weight": 0.5, "width": 16} and stored["key_version"] == 2


class StopAfterNothing:
    def trial_started(self, spec):
        pass

    def epoch_finished(self, spec, record):
        pass


def _config(card, protocol, width):
    from mtlbench.cards import ModelConfig

    return ModelConfig(in_channels=card.in_channels, image_size=protocol.image_size,
                       options=knob_values(card, protocol.name, {"width": width}))


def test_a_weights_file_the_plugin_declares_is_checked_before_training(outside, tmp_path):
    from mtlbench.weights import ensure_weights, required_weights

    plugins = load_plugins()
    card = plugins.methods.get("edgenet")
    protocol = get_protocol("smoke", "synthetic")
    knobs = knob_values(card, "smoke")
    (source,) = required_weights(card, protocol, knobs)
    with pytest.raises(WeightsUnavailableError, match="sobel.weights"):
        ensure_weights([source])
    # with downloads allowed, the file comes from the plugin's own (file://) address
    os.environ.pop("MTLBENCH_OFFLINE")
    os.environ.pop("HF_HUB_OFFLINE", None)
    ensure_weights([source])
    assert (outside["weights"] / "sobel.weights").is_file()
    # a weight of 0 needs no file
    assert required_weights(card, protocol, {**knobs, "edge_weight": 0.0}) == []

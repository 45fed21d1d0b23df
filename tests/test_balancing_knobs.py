"""Balancings' knobs: set as ``--set BALANCING.KNOB=VALUE``, refused when wrong, part of the
trial id only away from their defaults, and what the balancing's update uses."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from click.testing import CliRunner
from test_balancing import G_CLS, G_SEG, step
from test_balancing_trials import spec_for

from mtlbench.balancing import BalancingConfig
from mtlbench.balancing.knobs import (
    balancing_knob_values,
    resolve_balancing_knobs,
    split_balancing_sets,
)
from mtlbench.cli import main
from mtlbench.identity import TrialKey
from mtlbench.plugins import load_plugins
from mtlbench.protocol import ProtocolError, get_protocol
from mtlbench.runner import plan_run
from mtlbench.train import run_trial

CONFIG = BalancingConfig(tasks=("cls", "seg"), cls_weight=0.3, seed=7)


@pytest.fixture(scope="module")
def cards():
    return load_plugins().balancings


def built(cards, name, **knobs):
    return cards.get(name).build(dataclasses.replace(CONFIG, knobs=knobs))


def test_split_and_resolve_keep_only_the_values_away_from_the_defaults(cards):
    rest, sets = split_balancing_sets({"epochs": "2", "dwa.temperature": "3",
                                       "nashmtl.update-weights-every": "5",
                                       "cagrad.c": "0.4"})
    assert rest == {"epochs": "2"}
    assert sets == {"dwa": {"temperature": "3"}, "nashmtl": {"update_weights_every": "5"},
                    "cagrad": {"c": "0.4"}}
    resolved = resolve_balancing_knobs(cards, ["fixed", "dwa", "cagrad", "nashmtl"], sets)
    assert resolved == {"fixed": (), "dwa": (("temperature", 3.0),), "cagrad": (),
                        "nashmtl": (("update_weights_every", 5),)}  # c = 0.4 is the default
    assert balancing_knob_values(cards.get("nashmtl"), {"max_norm": "0"}) == {
        "max_norm": 0.0, "update_weights_every": 1, "optim_niter": 20}


def test_ids_from_before_balancing_knobs_are_kept(cards):
    # Ids computed by mtlbench at c3c4c30 (before balancings had knobs) for CUNet, fold 0,
    # the smoke protocol; a run at the balancing's default knobs carries none in its key.
    pinned = {"fixed": "edba4e99041b5b7e", "dwa": "43df0da7318a71ad",
              "nashmtl": "c6f753d3fbb3a646"}
    at_defaults = resolve_balancing_knobs(cards, list(pinned), {
        "dwa": {"temperature": "2"}, "nashmtl": {"max_norm": "1", "optim_niter": "20"}})
    for name, trial_id in pinned.items():
        key = TrialKey("synthetic", "cunet", 0, 2, "c73b3948854e", (), name, at_defaults[name])
        assert key.trial_id == trial_id, name


def test_ids_stay_at_the_defaults_and_change_with_a_knob(tmp_path):
    spec = spec_for(tmp_path, balancing="dwa")
    before = TrialKey(spec.dataset, spec.method, spec.fold, spec.seed, spec.protocol.hash,
                      spec.knobs, "dwa")  # a key written before balancings had knobs
    assert spec.trial_id == before.trial_id and "balancing_knobs" not in spec.key.fields()
    tuned = dataclasses.replace(spec, balancing_knobs=(("temperature", 3.0),))
    assert tuned.key.fields()["balancing_knobs"] == {"temperature": 3.0}
    assert tuned.trial_id != spec.trial_id
    assert tuned.key.row().text != spec.key.row().text == before.row().text
    assert tuned.label.startswith("tiny · dwa [temperature=3.0] · small")


def test_a_plan_gives_each_trial_its_balancings_knobs(tmp_path, plugins):
    # tinyseg has one task loss: it runs fixed although --balancing names dwa alone.
    protocol = get_protocol("smoke", "small", {"epochs": "1", "image_size": "32"})
    plan = plan_run(plugins, ["tiny", "tinyseg"], "small", protocol, tmp_path / "run", [0],
                    balancings=["dwa"], balancing_sets={"dwa": {"temperature": "3"}})
    assert [(s.method, s.balancing, s.balancing_knobs) for s in plan.specs] == [
        ("tiny", "dwa", (("temperature", 3.0),)), ("tinyseg", "fixed", ())]


def test_a_knob_reaches_the_update(cards):
    # DWA with T = 3 after two epochs: w = 2·softmax(r/3).
    balancing = built(cards, "dwa", temperature=3.0)
    balancing.end_epoch({"cls": 2.0, "seg": 1.0})
    balancing.end_epoch({"cls": 1.0, "seg": 0.9})
    e_cls, e_seg = math.exp(0.5 / 3), math.exp(0.9 / 3)
    w_cls, w_seg = 2 * e_cls / (e_cls + e_seg), 2 * e_seg / (e_cls + e_seg)
    assert torch.allclose(step(balancing)[0], w_cls * G_CLS + w_seg * G_SEG)
    # CAGrad with c = 0: the mean gradient, where c = 0.4 moves away from it.
    mean = (G_CLS + G_SEG) / 2
    assert torch.allclose(step(built(cards, "cagrad", c=0.0))[0], mean, atol=1e-5)
    assert not torch.allclose(step(built(cards, "cagrad", c=0.4))[0], mean, atol=1e-2)
    # Nash-MTL's update norm is clipped to max_norm.
    for max_norm in (1.0, 0.25):
        norm = float(step(built(cards, "nashmtl", max_norm=max_norm, update_weights_every=1,
                                optim_niter=20))[0].norm())
        assert norm == pytest.approx(max_norm, rel=1e-4)
    # GradNorm's α sets the targets its weights' gradient steers to: at w = (2/3, 4/3) and
    # θ = (0.6, 0.7) (test_balancing's second step), G = (1.91, 2.15), r = (0.52, 1.48);
    # α = 1.5 puts the targets at (0.76, 3.66), α = 0 at mean G = 2.03: the signs flip.
    norms = (math.hypot(1.2, 2.6), math.hypot(0.8, 1.4))
    for alpha, signs in ((1.5, (1, -1)), (0.0, (-1, 1))):
        balancing = built(cards, "gradnorm", alpha=alpha)
        theta = torch.nn.Parameter(torch.tensor([0.5, 0.5]))
        step(balancing, theta)
        with torch.no_grad():  # the same parameter: the shared one GradNorm found
            balancing.task_weights.copy_(torch.tensor([0.5, 1.0]))
            theta.copy_(torch.tensor([0.6, 0.7]))
        step(balancing, theta)
        expected = [sign * norm for sign, norm in zip(signs, norms, strict=True)]
        assert balancing.task_weights.grad.tolist() == pytest.approx(expected, rel=1e-5)
    # FAMO's β scales its logits' first update.
    logits = []
    for lr in (0.025, 0.5):
        balancing = built(cards, "famo", lr=lr, decay=0.001)
        step(balancing)
        step(balancing, torch.nn.Parameter(torch.tensor([0.6, 0.7])))
        logits.append(balancing.logits.clone())
    assert torch.allclose(logits[1], logits[0] * 20, rtol=1e-6)  # ξ ∝ β after one update


def test_a_trial_records_its_knobs_and_builds_with_them(tmp_path, plugins):
    torch.set_num_threads(1)
    spec = dataclasses.replace(spec_for(tmp_path, balancing="famo", epochs=1),
                               balancing_knobs=(("lr", 0.5),))
    result = run_trial(spec, plugins)
    assert result.status == "finished" and result.balancing_knobs == {"lr": 0.5}
    assert result.env["balancing_knobs"] == {"lr": 0.5, "decay": 0.001}
    plain = run_trial(spec_for(tmp_path / "plain", balancing="famo", epochs=1), plugins)
    assert plain.balancing_knobs == {} and plain.env["balancing_knobs"]["lr"] == 0.025
    assert result.curve[0]["weight_cls"] != plain.curve[0]["weight_cls"]


@pytest.mark.parametrize(("balancing", "setting", "message"), [
    ("fixed,dwa", "dwb.temperature=3", "no balancing 'dwb' is registered. Did you mean 'dwa'?"),
    ("fixed,dwa", "cagrad.c=0.1", "a knob of balancing 'cagrad', which this run does not use "
                                  "(--balancing fixed,dwa)"),
    ("dwa", "dwa.temprature=3", "has no knob 'temprature'. Did you mean dwa.temperature? Its "
                                "knobs: dwa.temperature"),
    ("dwa", "dwa.temperature=hot", "knob temperature expects float (e.g. "
                                   "dwa.temperature=2.0)"),
    ("dwa", "dwa.temperature=-1", "knob temperature: must be > 0, got -1.0"),
    ("dwa", "dwa.=3", "a balancing's knob is BALANCING.KNOB=VALUE"),
    ("fixed", "fixed.anything=1", "has no knob 'anything'. Its knobs: none"),
])
def test_bad_balancing_knobs_are_refused_before_anything_runs(tmp_path, balancing, setting,
                                                              message):
    result = CliRunner().invoke(main, ["run", "--methods", "clsnet", "--balancing", balancing,
                                       "--set", setting, "--out", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_cards_refuse_repeated_or_preset_knobs():
    from mtlbench.balancing import LOSS, BalancingCard
    from mtlbench.cards import Knob

    with pytest.raises(ValueError, match="knob names repeat"):
        BalancingCard("x", None, LOSS, knobs=(Knob("a", 1.0), Knob("a", 2.0)))
    with pytest.raises(ValueError, match="protocol presets"):
        BalancingCard("x", None, LOSS, knobs=(Knob("a", 1.0, presets={"smoke": 2.0}),))


def test_unknown_knob_through_the_api_names_the_plugin(cards):
    with pytest.raises(ProtocolError, match=r"balancing 'dwa' \(plugin 'mtlbench'\)"):
        balancing_knob_values(cards.get("dwa"), {"tau": "1"}, "mtlbench")

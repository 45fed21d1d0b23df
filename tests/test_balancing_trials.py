"""Balancings in real trials: every built-in one trains the tiny method, resumes exactly,
and the default ``fixed`` leaves every trial id and number as it was."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from mtlbench.identity import TrialKey
from mtlbench.protocol import get_protocol
from mtlbench.train import TrialFailed, run_trial
from mtlbench.trial import TrialSpec

BUILTIN = ("fixed", "uncertainty", "dwa", "rlw", "famo", "gradnorm", "pcgrad", "mgda",
           "upgrad", "imtlg", "alignedmtl", "cagrad", "nashmtl")


def spec_for(tmp_path, method="tiny", balancing="fixed", epochs=2, **overrides):
    settings = {"epochs": str(epochs), "image_size": "32", "precision": "fp32", **overrides}
    protocol = get_protocol("smoke", "small", settings)
    return TrialSpec("small", method, 0, protocol, str(tmp_path / "run"), balancing=balancing)


def test_fixed_keeps_the_trial_id_of_a_key_without_balancing(tmp_path):
    spec = spec_for(tmp_path)
    key = TrialKey(spec.dataset, spec.method, spec.fold, spec.seed, spec.protocol.hash)
    assert spec.trial_id == key.trial_id
    assert "balancing" not in spec.key.fields()
    other = dataclasses.replace(spec, balancing="dwa")
    assert other.key.fields()["balancing"] == "dwa" and other.trial_id != spec.trial_id
    assert spec.key.row().text == key.row().text != other.key.row().text


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_balancing_trains(tmp_path, plugins, name):
    torch.set_num_threads(1)
    result = run_trial(spec_for(tmp_path, balancing=name, epochs=3), plugins)
    assert result.status == "finished" and result.balancing == name
    assert result.env["balancing"] == name
    losses = [r["loss_total"] for r in result.curve]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses  # it learns: the fixed loss went down
    if name in ("uncertainty", "dwa", "rlw", "famo", "gradnorm"):
        assert {"weight_cls", "weight_seg"} <= set(result.curve[-1])
    if name == "fixed":
        assert not any(k.startswith("weight_") for k in result.curve[-1])


def test_fixed_steps_exactly_as_backpropagating_the_total(plugins):
    """``fixed`` through train_epoch gives bit-identical parameters and curve to the loop
    without a balancing (which backpropagates the loss's total, as before balancings)."""
    from mtlbench.balancing import BalancingConfig
    from mtlbench.cards import ModelConfig
    from mtlbench.data.fold import load_arrays, to_tensors
    from mtlbench.train import build_loss, build_optimizer, train_epoch

    p = get_protocol("smoke", "small", {"image_size": "32", "precision": "fp32"})
    method = plugins.methods.get("tiny")
    arrays = load_arrays(plugins.datasets.get("small"), None, 32, None)
    data = to_tensors(arrays, list(range(12)), torch.device("cpu"))
    runs = []
    for balancing in (None, plugins.balancings.get("fixed").build(BalancingConfig(("cls", "seg")))):
        torch.manual_seed(0)
        model = method.build(ModelConfig(num_classes=2, image_size=32))
        loss = build_loss(method, p)
        optimizer = build_optimizer(model, loss, p, torch.device("cpu"))
        records = [train_epoch(model, loss, method, "tests", data, optimizer,
                               torch.Generator().manual_seed(epoch), p, epoch,
                               precision="fp32", balancing=balancing) for epoch in range(2)]
        runs.append((records, [q.detach().clone() for q in model.parameters()]))
    (first, params_a), (second, params_b) = runs
    strip = [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in first]
    assert strip == [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")}
                     for r in second]
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b, strict=True))


@pytest.mark.parametrize("name", ["dwa", "rlw", "uncertainty", "famo", "gradnorm", "upgrad",
                                  "nashmtl"])
def test_interrupted_balanced_trial_resumes_with_its_state(tmp_path, plugins, name):
    torch.set_num_threads(1)
    reference = run_trial(spec_for(tmp_path / "a", balancing=name, epochs=4), plugins)
    spec = spec_for(tmp_path / "b", balancing=name, epochs=4)

    def stop_after_epoch_2(_spec, record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_trial(spec, plugins, on_epoch=stop_after_epoch_2)
    saved = torch.load(spec.checkpoint_path, weights_only=True)
    assert "balancing" in saved
    # Epoch 2's checkpoint is skipped when epoch 1's is still being written (a loaded
    # machine; mtlbench.checkpointing): the trial then resumes from epoch 1 or 0, and must
    # still end where the uninterrupted one did.
    assert 0 <= saved["epoch"] <= 2
    resumed = run_trial(spec, plugins)
    assert resumed.resumed_from_epoch == saved["epoch"]
    last, before = resumed.curve[3], reference.curve[3]
    assert last["loss_total"] == pytest.approx(before["loss_total"], rel=1e-5)
    for key in before:
        if key.startswith("weight_"):
            assert last[key] == pytest.approx(before[key], rel=1e-5), key


def test_a_single_task_method_refuses_another_balancing(tmp_path, plugins):
    with pytest.raises(TrialFailed, match="one task loss.*--balancing fixed"):
        run_trial(spec_for(tmp_path, "tinyseg", balancing="dwa", epochs=1), plugins)


def test_code_loss_mode_refuses_another_balancing(tmp_path, plugins):
    with pytest.raises(TrialFailed, match="needs loss_mode=paper"):
        run_trial(spec_for(tmp_path, balancing="dwa", epochs=1, loss_mode="code"), plugins)


def test_every_builtin_balancing_is_in_these_tests(plugins):
    builtin = plugins.info["mtlbench.balancing.builtin"].balancings
    assert sorted(builtin) == sorted(BUILTIN)


def test_rows_results_and_compare_are_per_method_and_balancing(tmp_path):
    from mtlbench.compare import row_key
    from mtlbench.report import leaderboard, to_records
    from mtlbench.results import open_results
    from mtlbench.store import Store
    from mtlbench.trial import TrialResult

    def result(balancing, fold, dice):
        return TrialResult(
            trial_id=f"{balancing}-{fold}", dataset="ds", method="m", fold=fold, seed=2,
            protocol={"name": "smoke"}, protocol_hash="abc", status="finished",
            fold_metrics={"strict.dice": dice}, env={"tasks": ["cls", "seg"]},
            balancing=balancing)

    with Store(tmp_path / "mtlbench.sqlite") as store:
        for fold in (0, 1):
            store.record(result("fixed", fold, 0.5))
            store.record(result("dwa", fold, 0.7))
        rows = leaderboard(store)
    assert [(r.entry, r.metrics["Dice"][0]) for r in rows] == [("m", 50.0), ("m · dwa", 70.0)]
    records = to_records(rows)
    assert [r["balancing"] for r in records] == ["fixed", "dwa"]
    # compare: a baseline record from before balancings matches the fixed row only.
    before = {k: v for k, v in records[0].items() if k != "balancing"}
    assert row_key(before) == row_key(records[0]) != row_key(records[1])
    with open_results(tmp_path) as run:
        board = run.leaderboard()
        assert list(board["entry"]) == ["m", "m · dwa"]
        assert sorted(run.trials()["balancing"]) == ["dwa", "dwa", "fixed", "fixed"]


def test_the_report_draws_the_learned_task_weights(tmp_path):
    from mtlbench.reporting.collect import collect
    from mtlbench.reporting.figures import curve_panels, training_curves
    from mtlbench.store import Store
    from mtlbench.trial import TrialResult

    def result(balancing, weights):
        curve = [{"epoch": e, "loss_total": 1.0 / (e + 1), **{f"weight_{t}": w * (e + 1)
                                                               for t, w in weights.items()}}
                 for e in range(3)]
        return TrialResult(
            trial_id=balancing, dataset="ds", method="m", fold=0, seed=2,
            protocol={"name": "smoke", "image_size": 32}, protocol_hash="abc",
            status="finished", fold_metrics={"strict.dice": 0.5}, curve=curve,
            balancing=balancing)

    with Store(tmp_path / "mtlbench.sqlite") as store:
        store.record(result("fixed", {}))
        store.record(result("dwa", {"cls": 0.9, "seg": 1.1}))
        (setting,) = collect(store)
    assert setting.methods == ["m", "m · dwa"]
    keys = [key for key, _ in curve_panels(setting)]
    assert keys == ["loss_total", "weight_cls", "weight_seg"]
    assert setting.curves["m · dwa"][0][2]["weight_seg"] == pytest.approx(3.3)
    assert training_curves(setting).startswith(b"\x89PNG")

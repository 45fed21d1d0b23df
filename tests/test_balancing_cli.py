"""`mtlbench run --balancing`: a third-party balancing through an entry point, crossed with a
method, survives `kill -9` with its state and reports one row per (method, balancing)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

from click.testing import CliRunner
from test_kill import KILLER, TESTS, checkpoints_load, stored

from conftest import install_plugin
from mtlbench.cli import main
from mtlbench.report import leaderboard
from mtlbench.store import Store

PLUGIN = textwrap.dedent('''
    """A method (conftest's tiny model) and a stateful balancing, from outside mtlbench."""
    import torch

    from conftest import TinyNet
    from mtlbench.balancing import LOSS, BalancingCard
    from mtlbench.balancing.base import LossWeighting
    from mtlbench.cards import Knob, MethodCard
    from mtlbench.hookspecs import hookimpl


    class InverseAverage(LossWeighting):
        """Weights ∝ 1 / (a running average of each task's loss, knob momentum), summing to 1."""

        def __init__(self, config):
            super().__init__()
            self.tasks = config.tasks
            self.momentum = config.knobs["momentum"]
            self.register_buffer("average", torch.ones(len(self.tasks)))

        def combine(self, losses, total):
            stacked = torch.stack([losses[t] for t in self.tasks])
            self.average.mul_(self.momentum).add_((1 - self.momentum) * stacked.detach())
            w = 1 / self.average
            return (w / w.sum() * stacked).sum()

        def weights(self):
            w = 1 / self.average
            return {t: float(w[i] / w.sum()) for i, t in enumerate(self.tasks)}


    @hookimpl
    def mtlbench_register_methods(register):
        register(MethodCard(name="balnet", build=lambda c: TinyNet(c.num_classes),
                            tasks=frozenset({"seg", "cls"}), family="multi-task",
                            description="test method"))
        register(MethodCard(name="balseg", build=lambda c: TinyNet(c.num_classes, ("seg",)),
                            tasks=frozenset({"seg"}), family="single-task",
                            description="test method"))


    @hookimpl
    def mtlbench_register_balancings(register):
        register(BalancingCard("inverse", InverseAverage, LOSS, "inverse running averages",
                               knobs=(Knob("momentum", 0.9, "the running average's momentum",
                                           check=lambda v: None if 0 <= v < 1 else "in [0, 1)"),
                                      )))
''')

RUN = ["run", "--methods", "balnet,balseg", "--balancing", "inverse,dwa,upgrad", "--folds", "0",
       "--set", "epochs=4", "--set", "image_size=32", "--set", "precision=fp32"]


def run(site, run_dir, kill=""):
    env = {k: v for k, v in os.environ.items() if k != "MTLBENCH_TEST_KILL"}
    env.update(PYTHONPATH=os.pathsep.join([str(site), str(TESTS)]),
               MTLBENCH_LOAD_PLUGINS="mtlbench,balext", OMP_NUM_THREADS="1",
               MTLBENCH_TEST_KILL=kill)
    return subprocess.run([sys.executable, "-m", "mtlbench", *RUN, "--out", str(run_dir)],
                          env=env, capture_output=True, text=True, timeout=600)


def test_a_plugin_balancing_crossed_with_methods_resumes_after_kill_9(tmp_path):
    site = install_plugin(tmp_path / "site", "balext", PLUGIN)
    (site / "sitecustomize.py").write_text(KILLER)
    reference = run(site, tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr
    expected = stored(tmp_path / "reference")
    # balnet × 3 balancings, and balseg once: one task loss, nothing to balance.
    assert len(expected) == 4
    out = reference.stdout
    for row in ("balnet · inverse", "balnet · dwa", "balnet · upgrad"):
        assert row in out, out
    assert not any(f"balseg · {b}" in out for b in ("inverse", "dwa", "upgrad"))

    run_dir = tmp_path / "run"
    seen = round(_images_per_epoch(tmp_path / "reference"))
    steps = -(-seen // 8)  # batch 8: optimizer steps per epoch
    # Trials run in the registry's order: balnet · dwa, · upgrad, · inverse (the plugin's),
    # then balseg. Killed half-way through the first trial's third epoch (the checkpoint of
    # epoch 1, written in the background, has landed by then), then, counted from each
    # resumed run's start, after the resumed trial's two remaining epochs, half-way through
    # the next trial's third epoch.
    middle = 2 * steps + steps // 2 + 1
    for kill in (f"step:{middle}", f"step:{2 * steps + middle}", f"step:{2 * steps + middle}"):
        killed = run(site, run_dir, kill)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        checkpoints_load(run_dir)
    final = run(site, run_dir)
    assert final.returncode == 0, final.stderr
    got = stored(run_dir)
    assert set(got) == set(expected)
    for trial_id, trial in expected.items():
        assert got[trial_id]["metrics"] == trial["metrics"], trial_id
        assert got[trial_id]["curve"] == trial["curve"], trial_id  # weights included
    weights = {k for t in got.values() for (_, k) in t["curve"] if k.startswith("weight_")}
    assert weights == {"weight_cls", "weight_seg"}
    with sqlite3.connect(run_dir / "mtlbench.sqlite") as db:
        resumed = db.execute("SELECT balancing, resumed_from_epoch FROM trials "
                             "WHERE resumed_from_epoch >= 0").fetchall()
        balancings = sorted(r[0] for r in db.execute("SELECT balancing FROM trials"))
    assert sorted(resumed) == [("dwa", 1), ("inverse", 1), ("upgrad", 1)]  # all killed ones
    assert balancings == ["dwa", "fixed", "inverse", "upgrad"]


def _images_per_epoch(run_dir) -> float:
    """Training images per epoch of the first stored trial (its images/s × seconds)."""
    with sqlite3.connect(run_dir / "mtlbench.sqlite") as db:
        (trial,) = db.execute("SELECT trial_id FROM trials LIMIT 1").fetchone()
        rows = dict(db.execute("SELECT metric, value FROM curves WHERE trial_id=? AND epoch=0 "
                               "AND metric IN ('images_per_s', 'seconds')", (trial,)).fetchall())
    return rows["images_per_s"] * rows["seconds"]


def test_unknown_balancing_and_code_loss_mode_are_usage_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["run", "--methods", "clsnet", "--balancing", "pcgard",
                                  "--out", str(tmp_path / "a")])
    assert result.exit_code != 0
    assert "unknown balancing 'pcgard'" in result.output and "pcgrad" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(main, ["run", "--methods", "clsnet", "--balancing", "dwa", "--set",
                                  "loss_mode=code", "--out", str(tmp_path / "b")])
    assert result.exit_code != 0
    assert "needs loss_mode=paper" in result.output and "Traceback" not in result.output


def test_list_balancings_and_plugins_name_them():
    runner = CliRunner()
    listed = runner.invoke(main, ["list", "balancings", "--json"])
    assert listed.exit_code == 0, listed.output
    records = {r["name"]: r for r in json.loads(listed.output)}
    assert records["dwa"]["kind"] == "loss" and records["upgrad"]["kind"] == "gradient"
    assert all(r["citation"] for r in records.values())
    plugins = json.loads(runner.invoke(main, ["plugins", "--json"]).output)
    builtin = next(r for r in plugins if r["name"] == "mtlbench.balancing.builtin")
    assert "fixed" in builtin["balancings"]


def test_a_plugin_balancings_knob_is_listed_set_and_stored(tmp_path, monkeypatch):
    # In this process (CliRunner), the plugin found through its entry point on sys.path.
    site = install_plugin(tmp_path / "site", "balext", PLUGIN)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("MTLBENCH_LOAD_PLUGINS", "mtlbench,balext")
    monkeypatch.delitem(sys.modules, "mtlbench_balext", raising=False)
    runner = CliRunner()
    listed = runner.invoke(main, ["list", "balancings", "--json"])
    assert listed.exit_code == 0, listed.output
    inverse = next(r for r in json.loads(listed.output) if r["name"] == "inverse")
    assert [(k["name"], k["default"]) for k in inverse["knobs"]] == [("momentum", 0.9)]
    args = ["run", "--methods", "balnet", "--balancing", "inverse", "--folds", "0", "--set",
            "epochs=1", "--set", "image_size=32", "--set", "precision=fp32", "--out",
            str(tmp_path / "run")]
    refused = runner.invoke(main, [*args, "--set", "inverse.momentum=1"])
    assert refused.exit_code != 0 and "Traceback" not in refused.output
    assert "balancing 'inverse' (plugin 'balext') knob momentum: in [0, 1)" in " ".join(
        refused.output.split())
    for momentum in ("0.9", "0.5"):  # 0.9: the default, the same trial as without --set
        done = runner.invoke(main, [*args, "--set", f"inverse.momentum={momentum}"])
        assert done.exit_code == 0, done.output
    assert "balnet · inverse [momentum=0.5]" in done.output
    with Store.read(tmp_path / "run") as store:
        assert [r.entry for r in leaderboard(store)] == ["balnet · inverse",
                                                          "balnet · inverse [momentum=0.5]"]
    with sqlite3.connect(tmp_path / "run" / "mtlbench.sqlite") as db:
        rows = db.execute("SELECT balancing_knobs_json, env_json FROM trials "
                          "ORDER BY recorded_at").fetchall()
    assert [json.loads(k) for k, _ in rows] == [{}, {"momentum": 0.5}]
    assert [json.loads(e)["balancing_knobs"] for _, e in rows] == [{"momentum": 0.9},
                                                                  {"momentum": 0.5}]

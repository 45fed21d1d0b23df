"""PoolExecutor: trials in spawned worker processes, events and results back in the driver.

Workers are fresh processes that load plugins through entry points, so these tests use built-in
methods, or methods of a plugin installed the way a third-party one is (``plugin_site``). Every
protocol here says precision=fp32, so the tests compute alike on every CPU (auto would pick bf16
where the CPU has it natively).
"""

import json
import multiprocessing
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from conftest import install_plugin, processes_with
from mtlbench.cli import main
from mtlbench.executors.local import LocalExecutor
from mtlbench.executors.pool import PoolExecutor
from mtlbench.plugins import load_plugins
from mtlbench.protocol import get_protocol
from mtlbench.runner import plan_run

PLUGIN = textwrap.dedent('''
    """A third-party plugin with a tiny method and one whose process dies mid-trial."""
    import json
    import os
    import time

    from torch import nn

    from mtlbench.cards import MethodCard
    from mtlbench.executors import ExecutorCard, ExecutorOption, OutstandingJob
    from mtlbench.executors.local import LocalExecutor
    from mtlbench.hookspecs import hookimpl


    class TinyNet(nn.Module):
        def __init__(self, num_classes, crash=False):
            super().__init__()
            self.crash = crash
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.seg = nn.Conv2d(8, 1, 1)
            self.cls = nn.Linear(8, num_classes)

        def forward(self, x):
            if self.crash:
                os._exit(3)  # as a segfault or the OOM killer would: no exception, no cleanup
            time.sleep(float(os.environ.get("POOLTEST_SLEEP", "0")))
            h = self.body(x)
            return {"seg": self.seg(h), "cls": self.cls(h.mean((2, 3)))}


    @hookimpl
    def mtlbench_register_methods(register):
        for name, crash in (("tinynet", False), ("crashnet", True)):
            register(MethodCard(name=name, build=lambda c, crash=crash: TinyNet(c.num_classes,
                                                                               crash),
                                tasks=frozenset({"seg", "cls"}), family="multi-task",
                                description="test method"))


    class TaggingExecutor:
        """A third-party executor: the trials last to first, each result tagged."""

        def __init__(self, context, tag):
            self.context, self.device, self.tag = context, context.device, tag

        def run(self, specs, events):
            local = LocalExecutor(self.context.plugins, self.device)
            for result in local.run(list(reversed(specs)), events):
                result.env["executor"] = self.tag
                yield result


    class HandingOverExecutor:
        """A third-party executor whose runs detach: it hands the trials to a queue (a file)
        and returns; what it says and what `mtlbench collect` shows are its own."""

        def __init__(self, context):
            self.context, self.device, self.detached = context, context.device, False

        def announce(self, n_trials):
            return f"handing {n_trials} trial(s) to the test queue"

        def run(self, specs, events):
            queue = self.context.run_dir / "testqueue.json"
            queue.write_text(json.dumps({s.trial_id: s.label for s in specs}))
            self.detached = True
            return iter(())

        def detached_note(self, n_trials):
            return f"{n_trials} trial(s) wait in the test queue"


    def queued_jobs(run_dir, statuses):
        queue = json.loads((run_dir / "testqueue.json").read_text())
        return [OutstandingJob(t, f"q{i}", "LOST", label, ended=True, hint="ask the queue")
                for i, (t, label) in enumerate(sorted(queue.items()))
                if statuses.get(t) != "finished"]


    @hookimpl
    def mtlbench_register_executors(register):
        register(ExecutorCard(
            "tagging", lambda context, options: TaggingExecutor(context, options["tag"]),
            "test executor", {"tag": ExecutorOption("plain", "written into each result")}))
        register(ExecutorCard("handover", lambda context, options: HandingOverExecutor(context),
                              "test executor that detaches", outstanding=queued_jobs))
''')


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    """The plugin above, installed in a folder on sys.path and enabled for this process and
    the workers it spawns.

    A spawned worker gets the driver's os.environ (so MTLBENCH_LOAD_PLUGINS) and sys.path
    (multiprocessing's spawn hands the parent's sys.path to the child before anything runs
    there), so the worker finds the entry point as any fresh mtlbench process would; no test
    hook in the production code is needed. PYTHONPATH is set for `mtlbench` subprocesses.
    """
    site = install_plugin(tmp_path / "site", "pooltest", PLUGIN)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("MTLBENCH_LOAD_PLUGINS", "mtlbench,pooltest")
    return site


class Recorder:
    """RunEvents that remember what arrived."""

    def __init__(self, interrupt_at_first_epoch: bool = False) -> None:
        self.started: list[str] = []
        self.epochs: list[tuple[str, int]] = []
        self.interrupt = interrupt_at_first_epoch

    def trial_started(self, spec) -> None:
        self.started.append(spec.trial_id)

    def epoch_finished(self, spec, record) -> None:
        self.epochs.append((spec.trial_id, record["epoch"]))
        if self.interrupt:
            raise KeyboardInterrupt


def planned(tmp_path, methods, folds, epochs=1):
    """The specs of a run, planned as `mtlbench run` does (data cached, split saved)."""
    protocol = get_protocol("smoke", "synthetic", {"image_size": "32", "epochs": str(epochs),
                                                   "precision": "fp32"})
    return plan_run(load_plugins(), methods, "synthetic", protocol, tmp_path / "run",
                    folds).specs


def test_two_trials_at_once_on_the_cpu_match_a_local_run(tmp_path):
    specs = planned(tmp_path, ["clsnet"], [0, 1, 2], epochs=2)
    events = Recorder()
    results = list(PoolExecutor(["cpu"], trials_per_device=2).run(specs, events))

    assert sorted(r.trial_id for r in results) == sorted(s.trial_id for s in specs)
    assert all(r.status == "finished" for r in results), [r.error for r in results]
    workers = [r.env["worker"] for r in results]
    assert {w["device"] for w in workers} == {"cpu"} and {r.env["device"] for r in results} == {
        "cpu"}
    pids = {w["pid"] for w in workers}
    assert len(pids) == 2 and os.getpid() not in pids
    # the two CPU workers share the cores
    assert {r.env["threads"] for r in results} == {max(1, os.cpu_count() // 2)}
    # events reached this process: each trial started once, then its epochs in order
    assert Counter(events.started) == Counter(s.trial_id for s in specs)
    for spec in specs:
        assert [e for t, e in events.epochs if t == spec.trial_id] == [0, 1]

    # The same trial in this process, at the worker's thread count, gives the same numbers
    # (they are equal here). At another thread count they may not: floating-point sums run in
    # another order (UNet's Dice moved in the 4th decimal); the tolerance only absorbs the last
    # bits.
    pooled = next(r for r in results if r.trial_id == specs[0].trial_id)
    torch.set_num_threads(pooled.env["threads"])
    reference_spec = replace(specs[0], run_dir=str(tmp_path / "reference"))
    (reference,) = LocalExecutor().run([reference_spec], Recorder())
    assert reference.fold_metrics.keys() == pooled.fold_metrics.keys()
    for key, value in reference.fold_metrics.items():
        assert pooled.fold_metrics[key] == pytest.approx(value, abs=1e-6), key
    losses = [[e["loss_total"] for e in r.curve] for r in (pooled, reference)]
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)


def test_a_worker_that_dies_fails_its_trial_and_a_new_worker_runs_the_rest(tmp_path,
                                                                           plugin_site):
    """crashnet's forward ends its process with os._exit(3), as a segfault or the OOM killer
    would; one slot, so the trials after it can only run in a replacement worker."""
    crash, _, tiny0, tiny1 = planned(tmp_path, ["crashnet", "tinynet"], [0, 1])
    events = Recorder()
    started = time.monotonic()
    results = list(PoolExecutor(["cpu"]).run([crash, tiny0, tiny1], events))
    assert time.monotonic() - started < 120

    assert [r.trial_id for r in results] == [crash.trial_id, tiny0.trial_id, tiny1.trial_id]
    died, *others = results
    assert died.status == "failed"
    assert died.error.startswith("worker process for cpu died (exit code 3) while running "
                                 "this trial")
    assert "run the same command again to resume" in died.error
    assert [r.status for r in others] == ["finished", "finished"]
    replacement = {r.env["worker"]["pid"] for r in others}
    assert len(replacement) == 1 and died.env["worker"]["pid"] not in replacement
    assert events.started == [crash.trial_id, tiny0.trial_id, tiny1.trial_id]


def test_ctrl_c_in_the_driver_ends_every_worker_and_keeps_the_checkpoint(tmp_path):
    specs = planned(tmp_path, ["unet"], [0, 1], epochs=20)
    results = PoolExecutor(["cpu"], trials_per_device=2).run(specs, Recorder(True))
    with pytest.raises(KeyboardInterrupt):
        next(results)
    interrupted = time.monotonic()
    assert multiprocessing.active_children() == []  # terminated and joined: no zombies
    # the workers were terminated, not left to finish their 20-epoch trials
    assert time.monotonic() - interrupted < 5
    checkpoints = Path(tmp_path / "run" / "checkpoints")
    assert list(checkpoints.glob("*.pt")), "the finished epoch stays on disk to resume from"
    assert not list(checkpoints.glob("*.tmp")), "an interrupted write leaves no temporary file"


def test_a_worker_whose_driver_is_gone_exits():
    """A worker watches its driver: when the driver is gone (kill -9) it exits within a second
    or so instead of training on. Here the driver pid it watches is not its parent's."""
    from mtlbench.executors.pool import _worker_main

    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    worker = context.Process(target=_worker_main, args=(theirs, "cpu", 1, -1))
    worker.start()
    theirs.close()
    worker.join(30)  # without the watch it would wait for a spec forever: our pipe is open
    alive = worker.is_alive()
    if alive:
        worker.kill()
        worker.join()
    assert not alive and worker.exitcode == 1
    ours.close()


@pytest.mark.parametrize("args, message", [
    (["--trials-per-device", "0"], "--trials-per-device 0: must be ≥ 1"),
    (["--devices", "cpu,cpu"], "--devices cpu,cpu: cpu is listed twice; to run several "
                               "trials at once on one device, use --trials-per-device N"),
    (["--devices", "gpu0"], "--devices gpu0: 'gpu0' is not a device"),
    (["--devices", "cpu,0"], "use either CUDA devices or cpu, not both"),
])
def test_bad_pool_options_get_a_clear_error(tmp_path, args, message):
    result = CliRunner().invoke(main, ["run", *args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()


def test_cuda_devices_that_are_not_here_are_named(tmp_path):
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    result = CliRunner().invoke(main, ["run", "--devices", str(count), "--out",
                                       str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    if count == 0:
        assert f"--devices {count}: no CUDA device is available here; use --devices cpu" in text
    else:
        assert f"--devices {count}: this machine has {count} CUDA device" in text


def cli_env(site: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MTLBENCH_LOAD_PLUGINS"}
    env.update(PYTHONPATH=str(site), COLUMNS="200", MTLBENCH_LOAD_PLUGINS="mtlbench,pooltest",
               **extra)
    return env


RUN = ["run", "--methods", "tinynet", "--folds", "0,1", "--set", "image_size=32",
       "--set", "precision=fp32", "--devices", "cpu", "--trials-per-device", "2",
       "--checkpoint-every", "0", "--out", "run"]


def test_run_with_two_trials_at_once_stores_both(plugin_site, tmp_path):
    done = subprocess.run([sys.executable, "-m", "mtlbench", *RUN, "--set", "epochs=2"],
                          env=cli_env(plugin_site), cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 worker process(es), up to 2 trial(s) at once on each of cpu" in done.stdout
    assert "Leaderboard" in done.stdout and "tinynet" in done.stdout
    assert "Traceback" not in done.stderr
    db = sqlite3.connect(tmp_path / "run" / "mtlbench.sqlite")
    rows = db.execute("SELECT fold, status, env_json FROM trials ORDER BY fold").fetchall()
    assert [(fold, status) for fold, status, _ in rows] == [(0, "finished"), (1, "finished")]
    assert len({row[2] for row in rows}) == 2  # two workers, each named in its result's env
    assert "tinynet" in (tmp_path / "run" / "leaderboard.md").read_text()


def _workers_of(marker: str) -> list[int]:
    """Pids of live worker processes whose environment holds ``marker``."""
    return processes_with(marker, b"spawn_main")


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_ctrl_c_stops_the_pool_quietly_and_the_same_command_resumes(plugin_site, tmp_path):
    """Ctrl-C in a terminal reaches the whole process group: the workers ignore it, the driver
    terminates them and says how to resume; no traceback, no worker left running."""
    marker = f"MTLBENCH_POOL_TEST={os.getpid()}-{time.time_ns()}"
    env = cli_env(plugin_site, POOLTEST_SLEEP="0.03", MTLBENCH_POOL_TEST=marker.split("=")[1])
    args = [*RUN, "--set", "epochs=6"]
    proc = subprocess.Popen([sys.executable, "-m", "mtlbench", *args], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not list((tmp_path / "run" / "checkpoints").glob("*.pt")):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "in progress keep" in err and "Run the same command again to resume" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    deadline = time.monotonic() + 10
    while _workers_of(marker):
        assert time.monotonic() < deadline, f"workers left running: {_workers_of(marker)}"
        time.sleep(0.1)

    resumed = subprocess.run([sys.executable, "-m", "mtlbench", *args],
                             env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming from a checkpoint" in resumed.stdout
    db = sqlite3.connect(tmp_path / "run" / "mtlbench.sqlite")
    rows = db.execute("SELECT fold, resumed_from_epoch FROM trials ORDER BY fold").fetchall()
    assert [r[0] for r in rows] == [0, 1] and any(r[1] >= 0 for r in rows)


def test_an_executor_plugin_runs_trials_through_its_entry_point(plugin_site, tmp_path):
    listed = CliRunner().invoke(main, ["list", "executors", "--json"])
    records = {r["name"]: r for r in json.loads(listed.output)}
    assert set(records) >= {"local", "pool", "slurm", "tagging"}
    assert records["tagging"]["plugin"] == "pooltest"
    assert records["tagging"]["options"]["tag"]["default"] == "plain"

    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "run", "--methods", "tinynet", "--folds", "0,1", "--set", "epochs=1", "--set",
        "image_size=32", "--set", "precision=fp32", "--device", "cpu", "--executor", "tagging",
        "--executor-set", "tag=from-the-plugin", "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    db = sqlite3.connect(run_dir / "mtlbench.sqlite")
    rows = db.execute("SELECT fold, env_json FROM trials ORDER BY recorded_at").fetchall()
    assert [fold for fold, _ in rows] == [1, 0]  # the plugin's order
    assert {json.loads(env)["executor"] for _, env in rows} == {"from-the-plugin"}


def test_what_an_executor_says_and_leaves_out_is_its_own(plugin_site, tmp_path):
    """A plugin's executor announces the run, says what detaching left, and tells `mtlbench
    collect` about its jobs, through the executor interface; the CLI names none of it."""
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "run", "--methods", "tinynet", "--folds", "0,1", "--set", "epochs=1", "--device", "cpu",
        "--executor", "handover", "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "handing 2 trial(s) to the test queue" in text
    assert "2 trial(s) wait in the test queue" in text
    collected = CliRunner().invoke(main, ["collect", "--out", str(run_dir)])
    assert collected.exit_code == 1, collected.output  # jobs ended without a result
    text = " ".join(collected.output.split())
    # the queue numbers its jobs in trial-id order, which is not fold order
    for fold in (0, 1):
        assert re.search(rf"job q[01] ended \(LOST\) without a result: tinynet · synthetic · "
                         rf"fold {fold}; ask the queue", text), text
    assert "job q0 ended (LOST)" in text and "job q1 ended (LOST)" in text


def test_the_cli_imports_no_executor_and_probes_none():
    """Executors are behind their interface (mtlbench.executors): the CLI imports none of
    their modules and asks no executor what it is."""
    import ast

    import mtlbench.cli

    source = Path(mtlbench.cli.__file__).read_text()
    imported = {node.module for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.ImportFrom) and node.module}
    assert not {m for m in imported if m.startswith("mtlbench.executors.")}, imported
    assert "hasattr(executor" not in source and "getattr(executor" not in source


@pytest.mark.parametrize("args, message", [
    (["--executor", "slurmm"], "unknown executor 'slurmm'. Did you mean 'slurm'?"),
    (["--executor", "local", "--executor-set", "tag=x"],
     "--executor-set tag: executor 'local' has no such option"),
    (["--executor", "slurm", "--devices", "0"],
     "--devices/--trials-per-device are options of 'pool', not of 'slurm'"),
    (["--executor", "slurm", "--device", "cuda"], "--device cuda does not apply to --executor "
                                                  "slurm"),
    (["--executor-set", "novalue"], "--executor-set 'novalue': expected KEY=VALUE"),
])
def test_bad_executor_options_get_a_clear_error(tmp_path, args, message):
    result = CliRunner().invoke(main, ["run", *args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())

"""`kill -9` of `mtlbench run` at many points: the next run resumes and nothing is lost.

One run folder is driven through a chain of `mtlbench run` processes, each SIGKILLed at one
point: in the middle of a training step, half-way through writing a checkpoint, after a
checkpoint's temporary file is complete but before its rename, inside the store's transaction
before COMMIT, right after COMMIT (before the finished trial's checkpoint is removed), before the
leaderboard's rename, and at random moments. After every kill the store passes SQLite's
integrity check, every checkpoint on disk loads, and no finished trial is stored again; after
the chain, the results equal those of an uninterrupted run of the same trials, value for value.

The kills are placed by a `sitecustomize` module on the killed process's PYTHONPATH (Python
imports it at start-up): it wraps a few functions of that process (torch.save, os.replace, the
store's transaction, the optimizer step) and sends SIGKILL to its own process at the chosen
call. The code under test is the installed mtlbench, unchanged.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import torch

from conftest import install_plugin, processes_with

KILLER = textwrap.dedent('''
    """Kill this process (SIGKILL) at the call given by MTLBENCH_TEST_KILL=POINT:N."""
    import os
    import signal

    POINT, _, N = os.environ.get("MTLBENCH_TEST_KILL", "").partition(":")
    N = int(N or 0)
    calls = {}

    def reached(point):
        if point != POINT:
            return False
        calls[point] = calls.get(point, 0) + 1
        return calls[point] == N

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if POINT:
        import contextlib
        import io

        import torch

        real_save, real_replace = torch.save, os.replace

        def save(obj, f, *args, **kwargs):
            if reached("checkpoint_partial"):
                buffer = io.BytesIO()
                real_save(obj, buffer, *args, **kwargs)
                data = buffer.getvalue()
                f.write(data[:len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
                die()
            return real_save(obj, f, *args, **kwargs)

        def replace(src, dst, *args, **kwargs):
            name = os.fspath(dst)
            if (name.endswith(".pt") and reached("checkpoint_before_rename")) or (
                    os.path.basename(name).startswith("leaderboard.")
                    and reached("leaderboard_before_rename")):
                die()
            return real_replace(src, dst, *args, **kwargs)

        torch.save, os.replace = save, replace

        def step_hook(optimizer, args, kwargs):
            if reached("step"):
                die()
            if POINT == "time" and not calls.get("time"):
                # "time:N": N microseconds after this process's first training step
                calls["time"] = 1
                import threading
                import time

                def later():
                    time.sleep(N / 1e6)
                    die()

                threading.Thread(target=later, daemon=True).start()

        from torch.optim.optimizer import register_optimizer_step_post_hook

        register_optimizer_step_post_hook(step_hook)

        from mtlbench import store as store_module

        real_record = store_module.Store.record

        def record(self, result):
            if reached("store_before_commit"):
                real_transaction = self._transaction

                @contextlib.contextmanager
                def dying_transaction():
                    self._db.execute("BEGIN IMMEDIATE")
                    yield
                    die()  # every row of the trial is written, COMMIT is not

                self._transaction = dying_transaction
                real_record(self, result)
                self._transaction = real_transaction
                return
            real_record(self, result)
            if reached("store_after_commit"):
                die()

        store_module.Store.record = record
''')

PLUGIN = textwrap.dedent('''
    """conftest's tiny multi-task model as a method, so that the chain trains in seconds."""
    from conftest import TinyNet

    from mtlbench.cards import MethodCard
    from mtlbench.hookspecs import hookimpl


    @hookimpl
    def mtlbench_register_methods(register):
        register(MethodCard(name="killnet", build=lambda c: TinyNet(c.num_classes),
                            tasks=frozenset({"seg", "cls"}), family="multi-task",
                            description="test method"))
''')

RUN = ["run", "--methods", "killnet", "--folds", "0,1,2,3,4", "--set", "epochs=3",
       "--set", "image_size=32", "--set", "precision=fp32", "--checkpoint-every", "0"]

# The chain: each a kill point and the call of that point at which the process dies (steps
# are optimizer steps of this process: 16 per epoch here). "time" kills at a random moment:
# up to 1.5 trials' time (measured on the reference run) after the run's first step, so it
# lands in training, evaluation, checkpointing or storing on a CPU of any speed (a fixed
# 2-6 s from the start once let a fast CPU finish all five trials, and the chain's later
# kinds were never reached). Every kind of point is reached before the first "time" kill,
# which still has three trials to cut into; the last point, the leaderboard's rename, is
# reached even by a run with nothing left to train.
CHAIN = [("step", 5), ("checkpoint_partial", 1), ("checkpoint_before_rename", 1), ("step", 20),
         ("store_before_commit", 1), ("checkpoint_partial", 2), ("store_after_commit", 1),
         ("time", 0), ("step", 40), ("checkpoint_before_rename", 2), ("time", 0),
         ("store_before_commit", 1), ("time", 0), ("checkpoint_partial", 1), ("step", 10),
         ("store_after_commit", 1), ("leaderboard_before_rename", 1)]


TESTS = Path(__file__).parent  # conftest, for the plugin's model
TIMING = {"seconds", "images_per_s"}  # per-epoch wall-clock figures: the only values that vary


@pytest.fixture
def site(tmp_path):
    """The test plugin (through a real entry point) and the killer (as sitecustomize)."""
    site = install_plugin(tmp_path / "site", "killtest", PLUGIN)
    (site / "sitecustomize.py").write_text(KILLER)
    return site


def run(site: Path, run_dir: Path, kill: str = "", extra: tuple[str, ...] = (),
        marker: str = "", kill_when=None):
    """`mtlbench run` on ``run_dir``; killed at ``kill`` (POINT:N) or as soon as
    ``kill_when()`` is true (polled). ``marker`` goes into the environment, so the
    run's processes can be found."""
    env = {k: v for k, v in os.environ.items() if k != "MTLBENCH_TEST_KILL"}
    env.update(PYTHONPATH=os.pathsep.join([str(site), str(TESTS)]),
               MTLBENCH_LOAD_PLUGINS="mtlbench,killtest",
               OMP_NUM_THREADS="1", MTLBENCH_TEST_KILL=kill, KILLTEST_MARKER=marker)
    process = subprocess.Popen(
        [sys.executable, "-m", "mtlbench", *RUN, *extra, "--out", str(run_dir)], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if kill_when is not None:
        deadline = time.monotonic() + 600
        while process.poll() is None and time.monotonic() < deadline:
            if kill_when():
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
    out, err = process.communicate(timeout=600)
    return process.returncode, out, err


def stored(run_dir: Path) -> dict[str, dict]:
    """trial id -> its stored row, fold metrics and curve (empty without a store)."""
    path = run_dir / "mtlbench.sqlite"
    if not path.exists():
        return {}
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        trials = {row[0]: {"status": row[1], "recorded_at": row[2], "fold": row[3]}
                  for row in db.execute(
                      "SELECT trial_id, status, recorded_at, fold FROM trials")}
        for trial_id, metric, value in db.execute("SELECT * FROM fold_metrics"):
            trials[trial_id].setdefault("metrics", {})[metric] = value
        for trial_id, epoch, metric, value in db.execute("SELECT * FROM curves"):
            if metric not in TIMING:
                trials[trial_id].setdefault("curve", {})[(epoch, metric)] = value
        for trial_id, count in db.execute(
                "SELECT trial_id, COUNT(*) FROM image_metrics GROUP BY trial_id"):
            trials[trial_id]["image_values"] = count
    return trials


def trial_s(run_dir: Path) -> float:
    """The mean wall time (training and evaluation) of the trials stored in ``run_dir``."""
    with sqlite3.connect(run_dir / "mtlbench.sqlite") as db:
        walls = [json.loads(t)["wall_s"] for (t,) in db.execute(
            "SELECT timing_json FROM trials")]
    return sum(walls) / len(walls)


def checkpoints_load(run_dir: Path) -> None:
    """Every checkpoint on disk is whole (temporary files aside)."""
    for path in (run_dir / "checkpoints").glob("*.pt"):
        payload = torch.load(path, map_location="cpu", weights_only=True)
        assert payload["trial_id"] == path.stem


def test_kill_9_at_many_points_loses_and_duplicates_nothing(site, tmp_path):
    reference = tmp_path / "reference"
    code, out, err = run(site, reference)
    assert code == 0, err
    one_trial_s = trial_s(reference)
    expected = stored(reference)
    assert len(expected) == 5

    run_dir = tmp_path / "run"
    rng = random.Random(9)
    kills, finished_at = [], {}
    for point, n in CHAIN:
        if point == "time":
            delay_us = int(rng.uniform(0.05, 1.5) * one_trial_s * 1e6)
            code, out, err = run(site, run_dir, kill=f"time:{delay_us}")
        else:
            code, out, err = run(site, run_dir, kill=f"{point}:{n}")
        assert code in (0, -signal.SIGKILL), err
        assert "Error in sitecustomize" not in err, err  # the killer itself must work
        if code == -signal.SIGKILL:
            kills.append(f"{point}:{n}" if point != "time" else "time")
        trials = stored(run_dir)
        for trial_id, trial in trials.items():  # a finished trial is never stored again
            assert trial["status"] == "finished", trial
            assert finished_at.setdefault(trial_id, trial["recorded_at"]) == \
                trial["recorded_at"], "a finished trial was trained and stored again"
        checkpoints_load(run_dir)
    code, out, err = run(site, run_dir)  # whatever the chain left undone
    assert code == 0, err
    assert "0 trial(s) to run, 5 already finished" in run(site, run_dir)[1]

    results = stored(run_dir)
    assert set(results) == set(expected)
    for trial_id, trial in results.items():
        assert trial["metrics"] == expected[trial_id]["metrics"], trial["fold"]
        assert trial["curve"] == expected[trial_id]["curve"], trial["fold"]
        assert trial["image_values"] == expected[trial_id]["image_values"]
    leftovers = [p.name for p in run_dir.rglob("*.tmp")]
    assert leftovers == [], leftovers
    assert not list((run_dir / "checkpoints").glob("*.pt"))  # finished trials' removed
    board = json.loads((run_dir / "leaderboard.json").read_text())
    assert [row["method"] for row in board["strict"]] == ["killnet"]
    # at least one kill at each kind of point (a point past the end would not kill)
    assert {k.split(":")[0] for k in kills} >= {
        "step", "checkpoint_partial", "checkpoint_before_rename", "store_before_commit",
        "store_after_commit", "leaderboard_before_rename", "time"}, kills
    print(f"kill points tried: {len(kills)} ({', '.join(kills)}); results lost: 0")


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_kill_9_of_a_pool_driver_leaves_no_worker_behind_and_loses_nothing(site, tmp_path):
    """The driver of two CPU workers is SIGKILLed three times; its workers end within seconds
    (none trains on as an orphan) and the finished run equals an uninterrupted local one (one
    thread per trial in both)."""
    reference = tmp_path / "reference"
    assert run(site, reference)[0] == 0
    expected = stored(reference)

    run_dir = tmp_path / "run"
    pool = ("--devices", "cpu", "--trials-per-device", "2")
    kills = 0
    for _ in range(3):
        # Killed when a worker of this run has written its first checkpoint: the workers are
        # then training, on any CPU (fixed delays of 6-8 s once let a fast CPU finish).
        started = time.time()

        def a_worker_checkpointed(since=started) -> bool:
            for path in (run_dir / "checkpoints").glob("*.pt"):
                try:
                    if path.stat().st_mtime > since:
                        return True
                except FileNotFoundError:  # a finished trial's, removed meanwhile
                    pass
            return False

        marker = f"killtest-{uuid.uuid4().hex}"
        code, _, err = run(site, run_dir, extra=pool, marker=marker,
                           kill_when=a_worker_checkpointed)
        if code == 0:
            break
        assert code == -signal.SIGKILL, err
        kills += 1
        deadline = time.monotonic() + 10
        while processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert processes_with(marker) == [], "a worker outlived its killed driver"
        stored(run_dir)  # integrity check
        checkpoints_load(run_dir)
    assert kills >= 2
    code, out, err = run(site, run_dir, extra=pool)
    assert code == 0, err
    results = stored(run_dir)
    assert set(results) == set(expected)
    for trial_id, trial in results.items():
        assert trial["metrics"] == expected[trial_id]["metrics"], trial["fold"]
        assert trial["curve"] == expected[trial_id]["curve"], trial["fold"]
    assert [p.name for p in run_dir.rglob("*.tmp")] == []

"""The slurm executor against a real SLURM cluster, and the parts that need none.

The cluster tests need SLURM's commands and a running cluster (CI starts a single-node one with
`.ci/slurm-cluster.sh start`); where there is none they skip with the reason, unless
MTLBENCH_REQUIRE_SLURM=1 (set by `.ci/run`), which turns the skip into a failure.

The jobs are fresh processes on the "cluster": they find the test plugin below through its entry
point, as a third-party plugin installed on the cluster would be found (PYTHONPATH and
MTLBENCH_LOAD_PLUGINS reach them through sbatch's exported environment).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import install_plugin
from mtlbench.executors import ExecutorContext, ExecutorOptionError
from mtlbench.executors.slurm import (
    SlurmError,
    SlurmExecutor,
    _expand_tasks,
    parse_sacct,
    parse_scontrol,
    read_jobs,
)
from mtlbench.plugins import load_plugins

PLUGIN = textwrap.dedent('''
    """A plugin for the SLURM tests: a slow tiny method and one that always fails."""
    import os
    import time

    from torch import nn

    from mtlbench.cards import MethodCard
    from mtlbench.hookspecs import hookimpl


    class TinyNet(nn.Module):
        def __init__(self, num_classes, fail=False):
            super().__init__()
            self.fail = fail
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.seg = nn.Conv2d(8, 1, 1)
            self.cls = nn.Linear(8, num_classes)

        def forward(self, x):
            if self.fail:
                raise RuntimeError("failnet: planted failure")
            if self.training:
                time.sleep(float(os.environ.get("SLURMTEST_SLEEP", "0")))
            h = self.body(x)
            return {"seg": self.seg(h), "cls": self.cls(h.mean((2, 3)))}


    @hookimpl
    def mtlbench_register_methods(register):
        for name, fail in (("tinynet", False), ("failnet", True)):
            register(MethodCard(name=name, build=lambda c, fail=fail: TinyNet(c.num_classes,
                                                                             fail),
                                tasks=frozenset({"seg", "cls"}), family="multi-task",
                                description="test method"))
''')

RUN_OPTIONS = ["--dataset", "synthetic", "--protocol", "smoke", "--set", "image_size=32",
               "--set", "precision=fp32", "--checkpoint-every", "0",
               "--executor", "slurm", "--executor-set", "cpus=1", "--executor-set", "poll=1",
               "--executor-set", "time=30"]


# ---------------------------------------------------------------- no cluster needed


def test_scontrol_lines_give_each_array_task_its_state_and_restarts():
    out = ("JobId=41 ArrayJobId=40 ArrayTaskId=1 JobName=mtlbench JobState=RUNNING "
           "Reason=None Restarts=1 BatchFlag=1\n"
           "JobId=40 ArrayJobId=40 ArrayTaskId=2-4%2 JobName=mtlbench JobState=PENDING "
           "Restarts=0\n"
           "JobId=39 JobName=wrap JobState=COMPLETED Restarts=0\n")
    assert parse_scontrol(out) == {"40_1": ("RUNNING", 1), "40_2": ("PENDING", 0),
                                   "40_3": ("PENDING", 0), "40_4": ("PENDING", 0),
                                   "39": ("COMPLETED", 0)}


def test_sacct_lines_read_cancelled_by_and_array_ranges():
    out = "40_0|COMPLETED\n40_1|CANCELLED by 0\n40_[2-3]|PENDING\n39|FAILED\n"
    assert parse_sacct(out) == {"40_0": ("COMPLETED", 0), "40_1": ("CANCELLED", 0),
                                "40_2": ("PENDING", 0), "40_3": ("PENDING", 0),
                                "39": ("FAILED", 0)}
    assert _expand_tasks("1,4-6%2") == ["1", "4", "5", "6"]


def slurm_options(**values):
    card = load_plugins().executors.get("slurm")
    return {**{k: o.default for k, o in card.options.items()}, **values}


@pytest.mark.parametrize("key,value,message", [
    ("gpus", "two", "gpus=two"), ("cpus", "0", "cpus=0"), ("mem", "lots", "mem=lots"),
    ("wait", "maybe", "wait=maybe"), ("time", "-5", "time=-5")])
def test_bad_slurm_options_are_named(tmp_path, key, value, message):
    with pytest.raises(ExecutorOptionError, match=message):
        SlurmExecutor(tmp_path, slurm_options(**{key: value}))


def test_an_unknown_executor_option_lists_the_valid_ones(tmp_path):
    card = load_plugins().executors.get("slurm")
    with pytest.raises(ExecutorOptionError, match="no such option.*partition, account"):
        card.create(ExecutorContext(tmp_path), {"gpu": "1"})


def test_without_sbatch_the_executor_says_where_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no SLURM commands here
    with pytest.raises(SlurmError, match="sbatch and scontrol on PATH.*login node"):
        SlurmExecutor(tmp_path, slurm_options())


def test_slurm_parameters_follow_the_options(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"  # stand-ins, only so that the executor can be built here
    bin_dir.mkdir()
    for command in ("sbatch", "scontrol"):
        (bin_dir / command).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / command).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    executor = SlurmExecutor(tmp_path, slurm_options(gpus="2", mem="32G", partition="gpu",
                                                     setup="module load cuda; echo hi"))
    params = executor.parameters()
    assert executor.device == "cuda"
    assert params["gpus_per_node"] == 2 and params["mem"] == "32G"
    assert params["partition"] == "gpu" and params["setup"] == ["module load cuda", "echo hi"]
    assert params["time"] == 240 and params["cpus_per_task"] == 4
    assert SlurmExecutor(tmp_path, slurm_options()).device == "cpu"


# ---------------------------------------------------------------- a real cluster


def _cluster_problem() -> str | None:
    """Why no SLURM cluster can be used here, or None."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "SLURM's commands are not on PATH (CI starts a cluster: .ci/slurm-cluster.sh)"
    done = subprocess.run(["sinfo", "-h", "-o", "%a %T"], capture_output=True, text=True,
                          timeout=30)
    if done.returncode != 0 or "up" not in done.stdout:
        return f"no SLURM cluster answers sinfo: {done.stderr.strip() or done.stdout.strip()}"
    return None


@pytest.fixture(scope="module")
def slurm_cluster():
    problem = _cluster_problem()
    if problem:
        if os.environ.get("MTLBENCH_REQUIRE_SLURM") == "1":
            pytest.fail(f"MTLBENCH_REQUIRE_SLURM=1 but {problem}")
        pytest.skip(problem)


@pytest.fixture
def cluster_env(tmp_path, slurm_cluster):
    """Environment for `mtlbench` driver processes: the test plugin on PYTHONPATH."""
    site = install_plugin(tmp_path / "site", "slurmtest", PLUGIN)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    env["MTLBENCH_LOAD_PLUGINS"] = "mtlbench,slurmtest"
    env["SLURMTEST_SLEEP"] = "0.15"  # ~2.5 s an epoch: time to preempt a job mid-trial
    return env


def mtlbench(env, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtlbench", *args], env=env, text=True,
                          capture_output=True, timeout=timeout)


def job_of(run_dir: Path, label: str) -> str:
    return next(job["job_id"] for job in read_jobs(run_dir / "slurm").values()
                if job["label"] == label)


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def epochs_done(run_dir: Path, label_fold: int, method: str = "tinynet") -> int:
    """Epoch lines in the progress file of ``method``'s trial on fold ``label_fold``."""
    jobs = read_jobs(run_dir / "slurm")
    trial = next((t for t, job in jobs.items()
                  if job["label"] == f"{method} · synthetic · fold {label_fold}"), None)
    path = run_dir / "progress" / f"{trial}.jsonl"
    if trial is None or not path.exists():
        return 0
    return sum('"event": "epoch"' in line for line in path.read_text().splitlines())


def started_pid(run_dir: Path, label_fold: int, method: str = "tinynet") -> int:
    """The pid of the latest attempt of ``method``'s trial on fold ``label_fold`` (its
    progress file's last "started" line; the cluster runs on this machine)."""
    jobs = read_jobs(run_dir / "slurm")
    trial = next(t for t, job in jobs.items()
                 if job["label"] == f"{method} · synthetic · fold {label_fold}")
    lines = (run_dir / "progress" / f"{trial}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if '"event": "started"' in line][-1]["pid"]


def stored(run_dir: Path) -> dict[tuple[str, int], dict]:
    with sqlite3.connect(run_dir / "mtlbench.sqlite") as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM trials").fetchall()
    return {(r["method"], r["fold"]): dict(r) for r in rows}


def test_a_job_array_with_a_failing_and_two_preempted_trials_lands_in_the_store(
        tmp_path, cluster_env):
    """tinynet folds 0-2 and failnet folds 0-2 as one array; fold 1 is requeued by SLURM
    (what a preemption with PreemptMode=REQUEUE does) and fold 2 gets submitit's preemption
    signal (USR2) after their first epoch; both resume from their checkpoints."""
    run_dir = tmp_path / "run"
    driver = subprocess.Popen(
        [sys.executable, "-m", "mtlbench", "run", "-m", "tinynet,failnet", "--folds", "0,1,2",
         "--set", "epochs=6", "-o", str(run_dir), *RUN_OPTIONS],
        env=cluster_env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: epochs_done(run_dir, 1) >= 1, 180, "fold 1's first epoch")
        subprocess.run(["scontrol", "requeue", job_of(run_dir, "tinynet · synthetic · fold 1")],
                       check=True)
        wait_for(lambda: epochs_done(run_dir, 2) >= 1, 180, "fold 2's first epoch")
        # USR2 goes to the running attempt's process itself, as SLURM's --signal delivers it,
        # and once: `scancel --signal=USR2` delivers it but may still hear "Job can not be
        # altered now" from slurmctld and retry until the requeued job starts again, whose
        # process it then kills before submitit has installed its handler (seen in CI; the
        # retries are in slurmctld.log).
        os.kill(started_pid(run_dir, 2), signal.SIGUSR2)
        out, err = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 1, err  # failed trials make the run exit 1
    assert "3 trial(s) failed" in err and "planted failure" in err, err

    trials = stored(run_dir)
    assert len(trials) == 6
    jobs = read_jobs(run_dir / "slurm")
    assert len({job["job_id"].split("_")[0] for job in jobs.values()}) == 1  # one array
    for fold in (0, 1, 2):
        assert trials[("tinynet", fold)]["status"] == "finished"
        failed = trials[("failnet", fold)]
        assert failed["status"] == "failed" and "planted failure" in failed["error"]
    plain = json.loads(trials[("tinynet", 0)]["env_json"])["slurm"]
    assert plain["restarts"] == 0 and trials[("tinynet", 0)]["resumed_from_epoch"] == -1
    for fold in (1, 2):  # preempted: ran again and resumed from its checkpoint
        slurm = json.loads(trials[("tinynet", fold)]["env_json"])["slurm"]
        assert slurm["restarts"] >= 1, slurm
        assert trials[("tinynet", fold)]["resumed_from_epoch"] >= 0
    assert "tinynet" in out  # the leaderboard
    # finished trials' checkpoints are removed, as with the local executor
    for fold in (0, 1, 2):
        trial = next(t for t, job in jobs.items() if job["label"].endswith(f"fold {fold}")
                     and job["label"].startswith("tinynet"))
        assert not (run_dir / "checkpoints" / f"{trial}.pt").exists()


def test_a_detached_run_is_collected_later_and_a_lost_job_is_submitted_again(
        tmp_path, cluster_env):
    run_dir = tmp_path / "run"
    # 6 epochs of ~2.5 s: the kill after fold 1's first epoch must land while it still trains;
    # with 3, a loaded machine let the job write its result before the kill arrived.
    args = ["run", "-m", "tinynet", "--folds", "0,1", "--set", "epochs=6", "-o", str(run_dir),
            *RUN_OPTIONS]
    submitted = mtlbench(cluster_env, *args, "--executor-set", "wait=false")
    assert submitted.returncode == 0, submitted.stderr
    assert "Submitted 2 trial(s)" in submitted.stdout and "mtlbench collect" in submitted.stdout
    first = read_jobs(run_dir / "slurm")
    assert len(first) == 2

    # fold 1's job dies before it writes a result, killed outright as the OOM killer would (a
    # plain scancel sends SIGTERM first, which submitit ignores: the trial could finish)
    wait_for(lambda: epochs_done(run_dir, 1) >= 1, 180, "fold 1 to train")
    subprocess.run(["scancel", "--signal=KILL", "--full",
                    job_of(run_dir, "tinynet · synthetic · fold 1")], check=True)

    last = []

    def collected():
        done = mtlbench(cluster_env, "collect", "-o", str(run_dir))
        last[:] = [done.stdout + done.stderr]
        return done if "without a result" in done.stderr and \
            ("tinynet", 0) in stored(run_dir) else None

    try:
        collect = wait_for(collected, 180, "collect to store fold 0 and report fold 1 lost")
    except AssertionError as exc:  # say what collect last saw, and what SLURM says
        states = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True,
                                text=True).stdout
        raise AssertionError(f"{exc}\nlast collect:\n{last[0] if last else ''}\n"
                             f"scontrol:\n{states}") from None
    assert collect.returncode == 1
    text = " ".join(collect.stderr.split())
    assert "ended (" in text and "tinynet · synthetic · fold 1" in text, text
    assert stored(run_dir)[("tinynet", 0)]["status"] == "finished"
    again = mtlbench(cluster_env, "collect", "-o", str(run_dir))
    assert "Collected 0 result(s)" in again.stdout  # nothing is stored twice

    # submitted again (only fold 1), then a waiting driver watches that live job
    resubmitted = mtlbench(cluster_env, *args, "--executor-set", "wait=false")
    assert resubmitted.returncode == 0, resubmitted.stderr
    assert "1 trial(s) to run, 1 already finished" in resubmitted.stdout
    second = read_jobs(run_dir / "slurm")
    fold0 = next(t for t, job in first.items() if job["label"].endswith("fold 0"))
    fold1 = next(t for t, job in first.items() if job["label"].endswith("fold 1"))
    assert second[fold0] == first[fold0] and second[fold1] != first[fold1]
    watched = mtlbench(cluster_env, *args)
    assert watched.returncode == 0, watched.stderr
    assert read_jobs(run_dir / "slurm") == second  # watched, not submitted a third time
    trials = stored(run_dir)
    assert trials[("tinynet", 1)]["status"] == "finished"
    assert trials[("tinynet", 1)]["resumed_from_epoch"] >= 0  # from the killed job's epochs

"""Trials as SLURM jobs, through submitit: one job-array task per trial.

``mtlbench run --executor slurm`` submits the trials as one job array and, unless told not to
wait, watches the run folder for their results and stores them as they come. Each job runs
``run_trial`` on its node and writes, in the run folder (which must be on a file system the
nodes share):

    results/<trial id>.json       the trial's result, finished or failed (mtlbench.result_files)
    progress/<trial id>.jsonl     one line when the job starts and one per finished epoch
    slurm/                        submitit's files: the job's stdout/stderr, pickles
    slurm/jobs.json               trial id -> job id, written by the driver at submission

Only the driver (or ``mtlbench collect``) writes the store. A driver that stops (Ctrl-C, a
closed laptop, ``--executor-set wait=false``) leaves the jobs running; ``mtlbench collect``
stores their results later, and ``mtlbench run`` with the same options watches the jobs still
queued or running instead of submitting them again.

Preemption and time limits: a job that SLURM requeues (``scontrol requeue``, a preemption
with PreemptMode=REQUEUE) starts again with the same trial; so does one that gets submitit's
signal before its time limit or on preemption (SIGUSR2: submitit requeues it itself). Either
way the trial resumes from its last checkpoint, which is at most ``--checkpoint-every`` seconds
old. A job that ends without writing a result (killed, out of memory, node failure) fails its
trial, with the job's state and the end of its log as the reason.

Job states come from ``scontrol show job`` while SLURM remembers the job (``MinJobAge``), and
from ``sacct`` after that; submitit's own state watcher is not used because it relies on
``sacct`` alone, which clusters without accounting storage do not have.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from mtlbench.executors import (
    ExecutorError,
    ExecutorOption,
    ExecutorOptionError,
    OutstandingJob,
    RunEvents,
    parse_bool,
    parse_int,
)
from mtlbench.files import write_text_atomically
from mtlbench.result_files import (
    ProgressReader,
    append_progress,
    progress_path,
    read_result,
    result_path,
    write_result,
)
from mtlbench.trial import TrialResult, TrialSpec

SLURM_OPTIONS = {
    "partition": ExecutorOption("", "partition (default: the cluster's default partition)"),
    "account": ExecutorOption("", "account to charge (sbatch --account)"),
    "qos": ExecutorOption("", "quality of service (sbatch --qos)"),
    "constraint": ExecutorOption("", "node features (sbatch --constraint)"),
    "gpus": ExecutorOption("0", "GPUs per job; above 0 the trials run on CUDA"),
    "cpus": ExecutorOption("4", "CPU cores per job (also torch's thread count)"),
    "mem": ExecutorOption("", "memory per job, e.g. 32G (default: the cluster's per-core "
                              "default × cpus)"),
    "time": ExecutorOption("240", "time limit per job in minutes; a job that reaches it is "
                                  "requeued and resumes from its checkpoint"),
    "parallel": ExecutorOption("0", "most jobs of the array running at once (0: no limit)"),
    "setup": ExecutorOption("", "shell commands run before each job, separated by ';' "
                                "(e.g. 'module load cuda/12.4')"),
    "job_name": ExecutorOption("mtlbench", "the jobs' name in squeue"),
    "wait": ExecutorOption("true", "wait for the jobs and store results as they arrive; "
                                   "false: submit and return (`mtlbench collect` stores them)"),
    "poll": ExecutorOption("10", "seconds between job-state queries while waiting"),
}

#: States in which a job will not run again by itself.
ENDED_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                "BOOT_FAIL", "DEADLINE", "PREEMPTED", "REVOKED", "SPECIAL_EXIT"}
#: How long an ended job may go without a result file before its trial counts as failed (the
#: file may reach a network file system after SLURM records the job's end; a preempted job
#: shows PREEMPTED for a moment before it is requeued).
RESULT_GRACE_S = 15.0
JOBS_FILE = "jobs.json"


class SlurmError(ExecutorError):
    """SLURM refused or cannot be reached; the message says what to do."""


class SlurmExecutor:
    """Submits trials as a submitit job array on SLURM and yields their results as the jobs
    write them (failed trials too, and jobs that ended without a result as failed)."""

    def __init__(self, run_dir: str | Path, options: dict[str, str]) -> None:
        self.run_dir = Path(run_dir)
        self.folder = self.run_dir / "slurm"
        self.gpus = parse_int(options, "gpus", "slurm")
        self.cpus = parse_int(options, "cpus", "slurm", minimum=1)
        self.time_min = parse_int(options, "time", "slurm", minimum=1)
        self.parallel = parse_int(options, "parallel", "slurm")
        self.poll_s = float(parse_int(options, "poll", "slurm", minimum=1))
        self.wait = parse_bool(options, "wait", "slurm")
        mem = options["mem"].strip()
        if mem and not re.fullmatch(r"\d+[KMGT]?B?", mem, re.IGNORECASE):
            raise ExecutorOptionError(f"--executor-set mem={mem}: expected a size such as "
                                      "32G or 16000M")
        self.options = options
        self.device = "cuda" if self.gpus else "cpu"
        self.detached = False
        self.array_id = ""
        _check_slurm_available()

    def parameters(self) -> dict:
        """submitit's SlurmExecutor parameters for this executor's options."""
        params = {"time": self.time_min, "cpus_per_task": self.cpus, "ntasks_per_node": 1,
                  "nodes": 1, "job_name": self.options["job_name"] or "mtlbench",
                  "array_parallelism": self.parallel or 10_000}
        if self.gpus:
            params["gpus_per_node"] = self.gpus
        for key in ("partition", "account", "qos", "constraint", "mem"):
            if self.options[key].strip():
                params[key] = self.options[key].strip()
        setup = [line.strip() for line in self.options["setup"].split(";") if line.strip()]
        if setup:
            params["setup"] = setup
        return params

    def run(self, specs: list[TrialSpec], events: RunEvents) -> Iterator[TrialResult]:
        """Submit the specs that have no live job yet (one array), then, with wait=true, yield
        every spec's result as it arrives."""
        specs = [replace(s, device=self.device) for s in specs]
        known = {t: job["job_id"] for t, job in read_jobs(self.folder).items()
                 if t in {s.trial_id for s in specs}}
        states = job_states(list(known.values()))  # jobs SLURM no longer knows are left out
        live = {t: job for t, job in known.items()
                if job in states and states[job][0] not in ENDED_STATES}
        to_submit = [s for s in specs if s.trial_id not in live]
        for spec in to_submit:  # an old result or progress of a trial that runs again
            result_path(self.run_dir, spec.trial_id).unlink(missing_ok=True)
            progress_path(self.run_dir, spec.trial_id).unlink(missing_ok=True)
        jobs = {**live, **self._submit(to_submit)}
        if not self.wait:
            self.detached = True
            return
        yield from self._watch(specs, jobs, events)

    def _submit(self, specs: list[TrialSpec]) -> dict[str, str]:
        """Submit ``specs`` as one job array; trial id -> job id, also saved to jobs.json."""
        if not specs:
            return {}
        import submitit

        self.folder.mkdir(parents=True, exist_ok=True)
        executor = submitit.SlurmExecutor(folder=self.folder)
        executor.update_parameters(**self.parameters())
        try:
            jobs = executor.map_array(SlurmTrial(), specs)
        except (subprocess.CalledProcessError, submitit.core.utils.FailedSubmissionError,
                OSError) as exc:
            detail = getattr(exc, "output", b"") or str(exc)
            if isinstance(detail, bytes):
                detail = detail.decode(errors="replace")
            raise SlurmError(f"sbatch refused the job array: {detail.strip()} — check the "
                             "--executor-set options (partition, account, gpus, mem, time)") \
                from exc
        submitted = {spec.trial_id: job.job_id for spec, job in zip(specs, jobs, strict=True)}
        self.array_id = jobs[0].job_id.split("_")[0]
        write_jobs(self.folder, {spec.trial_id: {"job_id": job.job_id, "label": spec.label}
                                 for spec, job in zip(specs, jobs, strict=True)})
        return submitted

    def _watch(self, specs: list[TrialSpec], jobs: dict[str, str], events: RunEvents
               ) -> Iterator[TrialResult]:
        """Yield each trial's result when its file appears; a job that ended without one
        fails its trial after RESULT_GRACE_S."""
        waiting = {s.trial_id: s for s in specs}
        readers = {t: ProgressReader(progress_path(self.run_dir, t)) for t in waiting}
        started: set[str] = set()
        ended_since: dict[str, float] = {}
        last_query = 0.0
        while waiting:
            for trial_id, spec in list(waiting.items()):
                for event in readers[trial_id].new_events():
                    if event.get("event") == "started" and trial_id not in started:
                        started.add(trial_id)
                        events.trial_started(spec)
                    elif event.get("event") == "epoch":
                        events.epoch_finished(spec, event["record"])
                path = result_path(self.run_dir, trial_id)
                if path.exists():
                    del waiting[trial_id]
                    yield read_result(path)
            if waiting and time.monotonic() - last_query >= self.poll_s:
                last_query = time.monotonic()
                states = job_states([jobs[t] for t in waiting])
                now = time.monotonic()
                for trial_id in list(waiting):
                    state = states.get(jobs[trial_id], ("UNKNOWN", 0))[0]
                    if state not in ENDED_STATES:
                        ended_since.pop(trial_id, None)
                        continue
                    ended_since.setdefault(trial_id, now)
                    path = result_path(self.run_dir, trial_id)
                    if not path.exists() and now - ended_since[trial_id] >= RESULT_GRACE_S:
                        yield self._ended_without_result(waiting.pop(trial_id), jobs[trial_id],
                                                         state)
            if waiting:
                time.sleep(min(1.0, self.poll_s))

    def _ended_without_result(self, spec: TrialSpec, job_id: str, state: str) -> TrialResult:
        log = job_log_tail(self.folder, job_id)
        result = TrialResult.failed(
            spec, f"SLURM job {job_id} ended ({state}) without writing a result; its last "
                  f"checkpoint keeps the last saved epoch — run the same command again to "
                  f"resume. End of its log:\n{log}")
        result.env["slurm"] = {"job_id": job_id, "state": state}
        return result

    def announce(self, n_trials: int) -> str:
        """The run's first line about the cluster (printed by the CLI)."""
        params = ", ".join(f"{k}={v}" for k, v in self.parameters().items())
        return f"SLURM job array ({params}); trials run on {self.device}."

    def detached_note(self, n_trials: int) -> str:
        """What a run that submitted and returned says (``wait=false``)."""
        return (f"Submitted {n_trials} trial(s); they write their results to "
                f"{self.run_dir / 'results'}. `mtlbench collect --out {self.run_dir}` stores "
                "what has arrived (run it any time), and running this command again waits for "
                "the rest.")

    def interrupted_note(self) -> str:
        """What a user who stopped the driver should know (printed by the CLI)."""
        return (f"the submitted SLURM jobs keep running; `mtlbench collect --out {self.run_dir}`"
                " stores their results (any time), running the same command again watches "
                f"them, and `scancel {self.array_id or '<job id>'}` stops them")


class SlurmTrial:
    """What a job runs: one trial, its progress and result written to the run folder.

    submitit calls ``checkpoint`` when the job gets SIGUSR2 (time limit near, or preemption on
    clusters that signal it) and requeues the job with what it returns: the same trial, which
    resumes from its checkpoint file.
    """

    def __call__(self, spec: TrialSpec) -> str:
        return run_in_job(spec)

    def checkpoint(self, spec: TrialSpec):
        import submitit

        return submitit.helpers.DelayedSubmission(self, spec)


def run_in_job(spec: TrialSpec) -> str:
    """Run ``spec`` inside a SLURM job; returns the trial's status."""
    import torch

    from mtlbench.executors.local import run_one_trial

    done = result_path(spec.run_dir, spec.trial_id)
    if done.exists() and read_result(done).status == "finished":
        # A job requeued after it finished (the driver removes old results before it submits).
        return "finished"
    cpus = int(os.environ.get("SLURM_CPUS_PER_TASK", "0") or 0)
    if cpus:
        torch.set_num_threads(cpus)
    job = {"job_id": _job_id(), "restarts": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
           "host": socket.gethostname()}
    # The pid is in the progress file only (not the stored result): what a person or a test
    # needs to signal this attempt's process and no other.
    append_progress(spec.run_dir, spec.trial_id, {"event": "started", **job, "pid": os.getpid()})

    def on_epoch(trial: TrialSpec, record: dict) -> None:
        append_progress(spec.run_dir, spec.trial_id, {"event": "epoch", "record": record})

    result = run_one_trial(spec, None, on_epoch)
    result.env["slurm"] = job
    write_result(spec.run_dir, result)
    return result.status


def _job_id() -> str:
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array:
        return f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID", "")


def _check_slurm_available() -> None:
    """Raise before anything is submitted when submitit or SLURM's commands are missing."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise SlurmError("the slurm executor needs submitit: pip install 'mtlbench[slurm]'") \
            from None
    missing = [c for c in ("sbatch", "scontrol") if shutil.which(c) is None]
    if missing:
        raise SlurmError(f"the slurm executor needs SLURM's {' and '.join(missing)} on PATH: "
                         "run mtlbench on a machine of the cluster (a login node)")


def read_jobs(folder: Path) -> dict[str, dict[str, str]]:
    """trial id -> {"job_id", "label"} of the latest submission of each trial in ``folder``."""
    path = folder / JOBS_FILE
    if not path.exists():
        return {}
    try:
        return dict(json.loads(path.read_text()))
    except ValueError:
        return {}


def write_jobs(folder: Path, submitted: dict[str, dict[str, str]]) -> None:
    """Add ``submitted`` to the job record (newer submissions replace older ones)."""
    write_text_atomically(folder / JOBS_FILE, json.dumps({**read_jobs(folder), **submitted},
                                                          indent=1))


def job_states(job_ids: list[str]) -> dict[str, tuple[str, int]]:
    """job id ('ARRAY_TASK' or 'JOB') -> (state, restarts), for those SLURM still knows.

    ``scontrol show job`` answers for jobs SLURM keeps in memory; ``sacct`` (accounting
    storage) for the others, restarts then unknown (0). Jobs neither knows are left out.
    """
    wanted = set(job_ids)
    states: dict[str, tuple[str, int]] = {}
    for array in sorted({j.split("_")[0] for j in wanted}):
        states.update(_scontrol_states(array))
    missing = sorted(wanted - set(states))
    if missing:
        states.update(_sacct_states(missing))
    return {j: states[j] for j in wanted if j in states}


def _scontrol_states(job: str) -> dict[str, tuple[str, int]]:
    try:
        out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return parse_scontrol(out)


def parse_scontrol(out: str) -> dict[str, tuple[str, int]]:
    """job id -> (state, restarts) from ``scontrol show job -o`` lines (array ranges of pending
    tasks expanded)."""
    states = {}
    for line in out.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        state, restarts = fields.get("JobState", ""), int(fields.get("Restarts", "0") or 0)
        if not state:
            continue
        if "ArrayJobId" in fields and "ArrayTaskId" in fields:
            for task in _expand_tasks(fields["ArrayTaskId"]):
                states[f"{fields['ArrayJobId']}_{task}"] = (state, restarts)
        else:
            states[fields.get("JobId", "")] = (state, restarts)
    return states


def _sacct_states(job_ids: list[str]) -> dict[str, tuple[str, int]]:
    command = ["sacct", "-X", "-n", "-P", "-o", "JobID,State"]
    for job in job_ids:
        command += ["-j", job]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return parse_sacct(done.stdout)


def parse_sacct(out: str) -> dict[str, tuple[str, int]]:
    """job id -> (state, 0) from ``sacct -X -n -P -o JobID,State`` lines ('CANCELLED by 0'
    read as CANCELLED, array ranges expanded)."""
    states = {}
    for line in out.splitlines():
        job, _, state = line.partition("|")
        state = state.split()[0] if state.split() else ""
        base, _, tasks = job.partition("_")
        if not tasks:
            states[job] = (state, 0)
            continue
        for task in _expand_tasks(tasks.strip("[]")):
            states[f"{base}_{task}"] = (state, 0)
    return states


def _expand_tasks(text: str) -> list[str]:
    """'3', '2-5', '1,4-6%2' -> the task numbers as strings."""
    tasks = []
    for part in text.split("%")[0].split(","):
        low, _, high = part.partition("-")
        if low.isdigit() and (not high or high.isdigit()):
            tasks += [str(n) for n in range(int(low), int(high or low) + 1)]
    return tasks


def job_log_tail(folder: Path, job_id: str, lines: int = 15) -> str:
    """The last lines of the job's stderr and stdout as submitit wrote them ('' if none)."""
    parts = []
    for suffix in ("err", "out"):
        for path in sorted(folder.glob(f"{job_id}_*_log.{suffix}")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            if text:
                parts.append(f"[{path.name}]\n" + "\n".join(text))
    return "\n".join(parts) or f"(no log files for job {job_id} in {folder})"


def describe_jobs(run_dir: str | Path, trial_ids: set[str]) -> dict[str, tuple[str, str, str]]:
    """trial id -> (job id, state, trial label) for the recorded submissions of ``trial_ids``;
    state is 'UNKNOWN' where SLURM cannot be asked or no longer knows the job."""
    jobs = read_jobs(Path(run_dir) / "slurm")
    wanted = {t: job for t, job in jobs.items() if t in trial_ids}
    ids = [job["job_id"] for job in wanted.values()]
    states = job_states(ids) if shutil.which("scontrol") else {}
    return {t: (job["job_id"], states.get(job["job_id"], ("UNKNOWN", 0))[0], job["label"])
            for t, job in wanted.items()}


def outstanding_jobs(run_dir: Path, statuses: dict[str, str]) -> list[OutstandingJob]:
    """The jobs of this run folder whose trials are not finished in the store (``statuses``):
    those still queued or running, and those that ended without writing a result (a job whose
    state SLURM no longer knows is left out)."""
    run_dir = Path(run_dir)
    out_there = {t for t, status in statuses.items() if status != "finished"}
    out_there |= set(read_jobs(run_dir / "slurm")) - set(statuses)
    jobs = []
    for trial_id, (job_id, state, label) in describe_jobs(run_dir, out_there).items():
        if state == "UNKNOWN":
            continue
        ended = state in ENDED_STATES
        if ended and (trial_id in statuses or result_path(run_dir, trial_id).exists()):
            continue  # its result arrived: stored now or by the next collect
        hint = (f"its log is in {run_dir / 'slurm'}. Run the same `mtlbench run` again to "
                "submit it anew (it resumes from its checkpoint).") if ended else ""
        jobs.append(OutstandingJob(trial_id, job_id, state, label, ended, hint))
    return jobs

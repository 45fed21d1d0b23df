"""Trials in worker processes: several at once on one device, and one or more devices.

``PoolExecutor(["cuda:0", "cuda:1"], trials_per_device=2)`` keeps four trials running, two on
each GPU, each in its own process. The workers only train; the driver (the process that
iterates ``run``) receives every event and result, so only the driver writes the store.

Driver and worker talk through one duplex pipe per worker:

    driver -> worker   a TrialSpec to run, or None: stop
    worker -> driver   ("started", trial_id)           before the trial's first step
                       ("epoch", trial_id, record)     after each finished epoch
                       ("result", TrialResult)         at its end, failed trials too

The driver hands each spec to an idle worker itself, so it always knows which trial a worker
holds. It waits on every busy worker's pipe and process sentinel at once
(``multiprocessing.connection.wait``, no polling); a worker whose process has ended while it
still holds a trial died (killed, out of memory, segfault): that trial comes back failed,
naming the device and exit code, a fresh worker takes the slot and the other trials go on.
There is deliberately no queue shared by the workers: a process killed while writing to one
can leave its lock held or half a message in it and stall every other worker; with one pipe
each, a dead worker breaks only its own.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from mtlbench.executors import RunEvents
from mtlbench.executors.local import run_one_trial
from mtlbench.protocol import ProtocolError
from mtlbench.trial import TrialResult, TrialSpec

#: Seconds a worker gets to exit after it is told to stop (or terminated) before it is killed.
STOP_TIMEOUT_S = 10.0


@dataclass
class _Worker:
    """One worker process of a slot, its end of the pipe and the trial it holds (if any)."""

    device: str
    process: BaseProcess
    conn: Connection
    spec: TrialSpec | None = None


class PoolExecutor:
    """Runs trials in ``len(devices) × trials_per_device`` spawned worker processes.

    Each worker runs the specs the driver hands it on its own device (``cuda:N`` or ``cpu``)
    through ``run_trial``; results come back in the order trials finish, failed ones too. A
    worker process that dies with a trial in hand yields that trial as failed and is replaced.
    Ctrl-C, or any exception in the driver, terminates and joins every worker, then propagates.
    CPU workers share the cores: each uses ``cpu_count // number of CPU workers`` threads.

    Plugins: workers are fresh processes (``spawn``: CUDA cannot be forked) that load plugins
    through their entry points, as ``run_trial`` does when given none, with the driver's
    ``os.environ`` (``MTLBENCH_LOAD_PLUGINS`` included) and ``sys.path``. A method registered
    only inside the driver's process (a ``Plugins`` object extended in code) cannot travel to a
    worker; run it with LocalExecutor. A plugin that fails to import in a worker is left out,
    as the CLI does, and a failed trial's reason then names it.
    """

    def __init__(self, devices: list[str], trials_per_device: int = 1) -> None:
        if not devices:
            raise ValueError("PoolExecutor needs at least one device")
        if trials_per_device < 1:
            raise ValueError(f"trials_per_device={trials_per_device}: must be ≥ 1")
        self.devices = list(devices)
        self.device = self.devices[0]  # what plan_run checks the protocol against
        self.trials_per_device = trials_per_device
        self._context = get_context("spawn")

    def announce(self, n_trials: int) -> str:
        """The run's first line about the workers (printed by the CLI)."""
        workers = min(len(self.slots()), n_trials)
        return (f"{workers} worker process(es), up to {self.trials_per_device} trial(s) at once "
                f"on each of {', '.join(self.devices)}.")

    def slots(self) -> list[str]:
        """The device of each worker, devices interleaved, so that a run with fewer trials than
        slots still spreads them over every device."""
        return [device for _ in range(self.trials_per_device) for device in self.devices]

    def run(self, specs: list[TrialSpec], events: RunEvents) -> Iterator[TrialResult]:
        """Yield one result per spec as trials finish; ``events`` are called in this process.
        Workers start with the run and are all ended (and reaped) when it ends, however."""
        pending = deque(specs)
        slots = self.slots()[:len(specs)]  # never more workers than trials
        threads = cpu_threads(slots)
        workers: list[_Worker] = []
        completed = False
        try:
            for device in slots:
                workers.append(self._next_trial(self._start(device, threads), pending, threads))
            while busy := [w for w in workers if w.spec is not None]:
                wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
                for i, worker in enumerate(workers):
                    if worker.spec is None:
                        continue
                    result = self._receive(worker, events)
                    if result is not None:
                        workers[i] = self._next_trial(worker, pending, threads)
                        yield result
            completed = True
        finally:
            _shut_down(workers, graceful=completed)

    def _start(self, device: str, threads: int) -> _Worker:
        """A new worker process for ``device``, waiting for its first spec."""
        ours, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_worker_main, name=f"mtlbench-worker-{device}",
            args=(theirs, device, threads if device == "cpu" else None, os.getpid()))
        # The worker is started with SIGINT ignored: a spawned interpreter keeps an inherited
        # SIG_IGN (and then installs no KeyboardInterrupt handler), so a Ctrl-C meant for the
        # driver cannot raise in a worker that is still importing, before _worker_main ignores
        # it. (A blocked mask is not inherited through spawn's exec.) The driver ignores Ctrl-C
        # only for the few milliseconds of the start.
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                process.start()
            finally:
                signal.signal(signal.SIGINT, previous)
        else:  # signal dispositions can only be changed from the main thread
            process.start()
        theirs.close()  # the worker holds the only copy: its death reads as end of file here
        return _Worker(device, process, ours)

    def _next_trial(self, worker: _Worker, pending: deque[TrialSpec], threads: int) -> _Worker:
        """Hand the next pending spec to ``worker`` (to a fresh process for its slot when it
        died), or tell it to stop when none is left; returns the slot's worker."""
        if not pending:
            _send(worker, None)
            return worker
        if not worker.process.is_alive():
            _close(worker)
            worker = self._start(worker.device, threads)
        worker.spec = pending.popleft()
        _send(worker, worker.spec)
        return worker

    def _receive(self, worker: _Worker, events: RunEvents) -> TrialResult | None:
        """Deliver the events that ``worker`` has sent; its trial's result when it arrived, or
        a failed result when the worker died with the trial in hand; None while it runs."""
        while True:
            try:
                if not worker.conn.poll():
                    break
                message = worker.conn.recv()
            except (EOFError, OSError):  # the worker is gone, perhaps in the middle of a message
                worker.process.join(STOP_TIMEOUT_S)
                if worker.process.is_alive():  # its pipe broke but it lingers: end it
                    worker.process.kill()
                    worker.process.join()
                break
            kind = message[0]
            if kind == "started":
                events.trial_started(worker.spec)
            elif kind == "epoch":
                events.epoch_finished(worker.spec, message[2])
            elif kind == "result":
                worker.spec = None
                return message[1]
        if worker.process.is_alive():
            return None
        return _died(worker)


def parse_devices(text: str, option: str = "--devices") -> list[str]:
    """The devices of ``--devices``: CUDA numbers (``0,1``), ``cuda:N`` or ``cpu``; each must
    exist here and appear once, and CUDA and CPU are not mixed. Errors name ``option``."""
    import torch

    typed = {}  # device -> what the user typed for it
    devices = []
    for item in (part.strip() for part in text.split(",")):
        number = "0" if item == "cuda" else item.removeprefix("cuda:")
        if item == "cpu":
            device = "cpu"
        elif number.isdigit():
            device = f"cuda:{int(number)}"
        else:
            raise ProtocolError(f"{option} {text}: {item!r} is not a device; expected CUDA "
                                "device numbers (0,1), cuda:N, or cpu")
        if device in typed:
            raise ProtocolError(f"{option} {text}: {item} is listed twice; to run several "
                                "trials at once on one device, use --trials-per-device N")
        typed[device] = item
        devices.append(device)
    cuda = [d for d in devices if d != "cpu"]
    if cuda and "cpu" in devices:
        raise ProtocolError(f"{option} {text}: use either CUDA devices or cpu, not both")
    if cuda and not torch.cuda.is_available():
        raise ProtocolError(f"{option} {text}: no CUDA device is available here; use "
                            "--devices cpu")
    count = torch.cuda.device_count() if cuda else 0
    for device in cuda:
        if int(device.removeprefix("cuda:")) >= count:
            numbers = ", ".join(str(i) for i in range(count))
            raise ProtocolError(f"{option} {typed[device]}: this machine has {count} CUDA "
                                f"device{'s' if count > 1 else ''} ({numbers})")
    return devices


def cpu_threads(slots: list[str]) -> int:
    """Threads for each CPU worker: the cores shared evenly among the CPU slots (at least 1)."""
    cpu_workers = sum(device == "cpu" for device in slots)
    return max(1, (os.cpu_count() or 1) // max(1, cpu_workers))


def _died(worker: _Worker) -> TrialResult:
    """The failed result of the trial ``worker`` held when its process ended."""
    code = worker.process.exitcode
    how = f"exit code {code}"
    if code is not None and code < 0:
        how += f", killed by {signal.Signals(-code).name}"
    spec, worker.spec = worker.spec, None
    result = TrialResult.failed(
        spec, f"worker process for {worker.device} died ({how}) while running this trial; its "
              "checkpoint keeps the last saved epoch — run the same command again to resume")
    result.env["worker"] = {"pid": worker.process.pid, "device": worker.device}
    return result


def _send(worker: _Worker, message: TrialSpec | None) -> None:
    """Send to a worker; one that has just died is noticed through its sentinel instead."""
    try:
        worker.conn.send(message)
    except OSError:
        pass


def _close(worker: _Worker) -> None:
    worker.conn.close()
    worker.process.join(STOP_TIMEOUT_S)
    if worker.process.is_alive():
        worker.process.kill()
        worker.process.join()
    worker.process.close()


def _shut_down(workers: list[_Worker], graceful: bool) -> None:
    """End every worker and reap it: told to stop (graceful) or terminated; killed when it
    has not exited within STOP_TIMEOUT_S."""
    if not graceful:
        for worker in workers:
            if worker.process.is_alive():
                worker.process.terminate()
    for worker in workers:
        _close(worker)


def _exit_with_driver(driver_pid: int) -> None:
    """End this worker within a second of its driver's death (e.g. ``kill -9``), so that no
    orphan trains on and overwrites the checkpoint of a trial that a new run resumes."""
    def watch() -> None:
        while os.getppid() == driver_pid:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, name="mtlbench-driver-watch", daemon=True).start()


def _worker_main(conn: Connection, device: str, threads: int | None, driver_pid: int) -> None:
    """A worker process: run the specs the driver sends on ``device`` until it sends None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's: it terminates us
    # terminate() sends SIGTERM: exit through SystemExit, so a checkpoint being written removes
    # its temporary file (on the way out of run_trial) instead of leaving it behind.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    _exit_with_driver(driver_pid)
    import torch

    from mtlbench.plugins import load_plugins

    if threads is not None:
        torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    plugins = load_plugins(strict=False)
    while True:
        try:
            spec = conn.recv()
        except EOFError:  # the driver is gone
            return
        if spec is None:
            return
        spec = replace(spec, device=device)
        conn.send(("started", spec.trial_id))

        def on_epoch(trial: TrialSpec, record: dict) -> None:
            conn.send(("epoch", trial.trial_id, record))

        result = run_one_trial(spec, plugins, on_epoch)
        result.env["worker"] = {"pid": os.getpid(), "device": device}
        if result.status == "failed" and plugins.errors:
            result.error += "\n(plugins that failed to load in the worker: " + "; ".join(
                str(e) for e in plugins.errors) + ")"
        conn.send(("result", result))
        if device.startswith("cuda"):  # give the trial's cached memory back to the other
            gc.collect()                # trials on this GPU
            torch.cuda.empty_cache()

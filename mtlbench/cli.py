"""The ``mtlbench`` command."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from mtlbench.balancing import BalancingError
from mtlbench.balancing.knobs import resolve_balancing_knobs, split_balancing_sets
from mtlbench.compare import (
    DEFAULT_METRICS,
    CompareError,
    compare,
    format_number,
    load_records,
    precision_differences,
    unmatched_protocols,
)
from mtlbench.compare import to_markdown as compare_markdown
from mtlbench.data.prepare import (
    DataNotFoundError,
    DatasetLayoutError,
    DatasetOptionError,
    canonical_dataset_spec,
    dataset_identity,
    lookup_dataset,
    parse_dataset_spec,
    reading,
    resolve_root,
)
from mtlbench.data.splits import PartitionError, SplitMismatchError, TooFewCasesError
from mtlbench.executors import (
    DEFAULT_EXECUTOR,
    ExecutorContext,
    ExecutorError,
    ExecutorOptionError,
    announcement,
    detached_note,
    interrupted_note,
)
from mtlbench.knobs import split_settings
from mtlbench.leaderboard_table import build as build_table
from mtlbench.leaderboard_table import html_page, markdown, rich_tables, write_leaderboard
from mtlbench.multitask_gain import parse_references
from mtlbench.plugins import Plugins, load_plugins
from mtlbench.precision import bf16_support
from mtlbench.precision import resolve as resolve_precision
from mtlbench.protocol import ProtocolError, describe_protocols, get_protocol
from mtlbench.registry import UnknownNameError
from mtlbench.report import leaderboard, to_csv, to_records
from mtlbench.run_folder import RunFolderError, RunLockedError, run_lock
from mtlbench.store import STORE_NAME, Store, StoreError, damaged_store
from mtlbench.trial import DEFAULT_CHECKPOINT_EVERY_S, SpeedOptions, TrialResult, TrialSpec
from mtlbench.weights import WeightsUnavailableError

# Piped output (logs, CI) gets a wide console so the leaderboard is not squeezed to 80 columns.
# emoji=False: rich would turn ":x:" in a file name (scan:x:01.png) into an emoji.
console = Console(width=None if sys.stdout.isatty() else 180, log_path=False, emoji=False)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 180, emoji=False)

USER_ERRORS = (UnknownNameError, ProtocolError, ExecutorOptionError, ExecutorError,
               DataNotFoundError, DatasetLayoutError, DatasetOptionError, SplitMismatchError,
               TooFewCasesError, WeightsUnavailableError, RunLockedError, RunFolderError,
               StoreError, PartitionError, BalancingError)
DEFAULT_OUT = "mtlbench-runs"


def _plugins() -> Plugins:
    """Load plugins leniently: a broken plugin is named in a warning, the others still load."""
    plugins = load_plugins(strict=False)
    for error in plugins.errors:
        err_console.print(f"[yellow]warning:[/] {escape(str(error))} — what it registers is "
                          "unavailable")
    return plugins


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mtlbench")
def main() -> None:
    """Benchmark multi-task (segmentation + classification) models on breast ultrasound."""


def _parse_sets(values: tuple[str, ...], option: str = "--set") -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            example = "epochs=3" if option == "--set" else "time=120"
            raise ProtocolError(f"{option} {item!r}: expected KEY=VALUE, e.g. {option} "
                                f"{example}")
        out[key.strip()] = value.strip()
    return out


def _parse_folds(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        folds = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        folds = []
    if not folds:
        raise click.BadParameter(f"{text!r}: expected fold numbers like 0,1,2",
                                 param_hint="--folds")
    return folds


def _parse_seeds(text: str | None, first: int) -> list[int] | None:
    """``--seeds``: a count N (the protocol's seed ``first`` and the N-1 after it) or a list
    with commas (``0,1,2``; ``5,`` is the one seed 5)."""
    if not text:
        return None
    try:
        if "," not in text:
            count = int(text)
            if count < 1:
                raise ValueError
            return list(range(first, first + count))
        seeds = list(dict.fromkeys(int(x) for x in text.split(",") if x.strip()))
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0:
        raise click.BadParameter(f"{text!r}: expected a count of seeds (3: the protocol's seed "
                                 f"{first} and the next two) or seeds like 0,1,2",
                                 param_hint="--seeds")
    return seeds


def _emit(records: list[dict], as_json: bool, title: str, columns: dict) -> None:
    """Print ``records`` as JSON, or as a table with ``columns`` (header -> cell function)."""
    if as_json:
        click.echo(json.dumps(records, indent=1))
        return
    table = Table(title=title)
    for header in columns:
        table.add_column(header)
    for record in records:
        table.add_row(*(cell(record) for cell in columns.values()))
    console.print(table)


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ProtocolError(f"--device {name}: no CUDA device is available here; use --device cpu")
    return name


@main.command()
@click.option("--methods", "-m", default="default", show_default=True,
              help="Comma list of methods, wildcards (e.g. 'cu*'), group names (e.g. "
                   "'ablation', 'comparison', 'options') or 'all' (every method except "
                   "options of another method). 'default' is a representative set "
                   "that fits 10 minutes on a 2-core CPU.")
@click.option("--dataset", "-d", default="synthetic", show_default=True,
              help="A dataset, with options if it has any: NAME or NAME:key=value,...")
@click.option("--protocol", "-p", "protocol_name", default="smoke", show_default=True,
              help="A preset; see `mtlbench list protocols`.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override one protocol setting, a knob of the run's methods (recorded "
                   "with every result; `mtlbench list methods` shows the knobs) or of its "
                   "balancings as BALANCING.KNOB=VALUE (e.g. dwa.temperature=3; `mtlbench "
                   "list balancings`), repeatable.")
@click.option("--pretrained", type=click.Choice(["imagenet", "none"]), default=None,
              help="Encoder weights: 'imagenet' (each method's pretrained files, e.g. "
                   "ImageNet-21k for a ViT encoder) loads them from the libraries' caches, "
                   "'none' trains from scratch. Default: the protocol's (paper: imagenet, "
                   "smoke: none). Same as --set pretrained=….")
@click.option("--folds", default=None, help="Only these folds, e.g. 0,1 (default: all).")
@click.option("--seeds", default=None, metavar="N|LIST",
              help="Training seeds, replicates of every method and fold: a count (3: the "
                   "protocol's seed and the next two) or a list (0,1,2). Default: the "
                   "protocol's seed. Tables give mean ± std over folds and seeds.")
@click.option("--balancing", "balancing", default="fixed", show_default=True, metavar="LIST",
              help="How the two task losses are combined into the update, crossed with "
                   "the methods: names (fixed,dwa,upgrad), groups (loss: loss weightings, "
                   "gradient: gradient aggregators) or all; `mtlbench list balancings`. "
                   "fixed is the protocol's loss (λ·CE + (1−λ)·L_seg). Methods with one task "
                   "loss run with fixed alone.")
@click.option("--out", "-o", default=DEFAULT_OUT, show_default=True, type=click.Path(),
              help="Run folder: store, checkpoints, splits and leaderboard files.")
@click.option("--data-root", default=None, type=click.Path(),
              help="The dataset's folder (default: $MTLBENCH_DATA/<dataset>).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--devices", default=None, metavar="LIST",
              help="Run the trials in worker processes on these devices, one worker per "
                   "device unless --trials-per-device asks for more: CUDA device numbers "
                   "(0,1 or cuda:0,cuda:1) or cpu. With --trials-per-device alone: --device.")
@click.option("--trials-per-device", type=int, default=None, metavar="N",
              help="Trials that run at once on each device of --devices, each in its own "
                   "worker process (default 1); on the CPU they share the cores.")
@click.option("--executor", "-x", "executor_name", default=None, metavar="NAME",
              help="How trials are executed: local (default: one after another here), pool "
                   "(worker processes; implied by --devices/--trials-per-device), slurm (a "
                   "job array on a SLURM cluster) or a plugin's; `mtlbench list executors`.")
@click.option("--executor-set", "executor_sets", multiple=True, metavar="KEY=VALUE",
              help="An option of the executor, repeatable, e.g. --executor-set gpus=1 "
                   "--executor-set time=120 for slurm.")
@click.option("--keep-checkpoints", is_flag=True, help="Keep each trial's last checkpoint.")
@click.option("--keep-models", type=click.Choice(["fp16", "fp32"]), is_flag=False,
              flag_value="fp16", default=None,
              help="Keep each finished trial's selected model (weights only, safetensors) in "
                   "models/ of the run folder, for `mtlbench predict`, `evaluate` and "
                   "`export`; fp16 (the default of the flag) halves the disk cost, fp32 keeps "
                   "the weights as trained.")
@click.option("--checkpoint-every", default=DEFAULT_CHECKPOINT_EVERY_S, show_default=True,
              type=float, metavar="SECONDS",
              help="Start a trial's resumable checkpoint after an epoch only when this many "
                   "seconds passed since the last one started (0: after every epoch). "
                   "Checkpoints are written in the background while training goes on; an "
                   "epoch that ends while the previous one is still being written skips its "
                   "own. An interruption loses the epoch in progress (and any skipped ones).")
@click.option("--channels-last", type=click.Choice(["auto", "on", "off"]), default="auto",
              show_default=True,
              help="NHWC memory format for models and inputs; auto: on for CUDA, off on the "
                   "CPU. Speed only: results agree up to float rounding.")
@click.option("--compile", "compile_", is_flag=True,
              help="Run models through torch.compile (first epoch slower while it compiles). "
                   "Speed only: results agree up to float rounding.")
def run(methods, dataset, protocol_name, sets, pretrained, folds, seeds, balancing, out,
        data_root, device, devices, trials_per_device, executor_name, executor_sets,
        keep_checkpoints, keep_models, checkpoint_every, channels_last, compile_) -> None:
    """Train and evaluate METHODS on DATASET under one protocol, five folds each.

    Finished trials are skipped and an interrupted trial resumes from its last checkpoint, so
    running the same command again continues where it stopped. Trials run one after another
    in this process, or, with --devices or --trials-per-device, several at once in worker
    processes, or as SLURM jobs with --executor slurm; either way only this process (or
    `mtlbench collect`) writes the results.
    """
    plugins = _plugins()
    run_dir = Path(out)
    try:
        names = _select_methods(plugins, methods)
        plain_sets, balancing_sets = split_balancing_sets(_parse_sets(sets))
        overrides, knob_overrides = split_settings(
            plain_sets, [plugins.methods.get(n) for n in names],
            [card for _, card in plugins.methods.items()])
        if pretrained is not None:
            overrides["pretrained"] = pretrained
        protocol = get_protocol(protocol_name, parse_dataset_spec(dataset)[0], overrides)
        seed_list = _parse_seeds(seeds, protocol.seed)
        balancings = plugins.select_balancings(balancing)
        resolve_balancing_knobs(plugins.balancings, balancings, balancing_sets)  # fail early
        card, options = lookup_dataset(plugins.datasets, dataset)
        dataset = canonical_dataset_spec(card.name, options)
        executor = _executor(plugins, executor_name, executor_sets, devices, trials_per_device,
                             device, run_dir)
        with run_lock(run_dir):
            with console.status("Preparing data, split and weights…"):
                speed = SpeedOptions(
                    channels_last={"auto": None, "on": True, "off": False}[channels_last],
                    compile=compile_, checkpoint_every_s=checkpoint_every)
                from mtlbench.runner import plan_run  # torch: only commands that train load it

                plan = plan_run(plugins, names, dataset, protocol, run_dir, _parse_folds(folds),
                                data_root, None, executor.device, speed, knob_overrides,
                                seed_list, balancings, balancing_sets, keep_models or "")
            _announce(plan, names, dataset, protocol, run_dir, executor)
            summary = _execute_with_progress(plan, run_dir, plugins, protocol.epochs,
                                             keep_checkpoints, executor)
    except USER_ERRORS as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted before training started; nothing was lost", 130)
    note = detached_note(executor, len(plan.specs))
    if note is not None:
        console.print(escape(note))
        return
    if summary.unstored:
        err_console.print(f"[bold red]The store {run_dir / STORE_NAME} could not take "
                          f"{len(summary.unstored)} result(s)[/] "
                          f"({escape(summary.unstored[0][2])}); nothing trained is lost:")
        for result, path, _ in summary.unstored:
            err_console.print(f"  {escape(result.method)} fold {result.fold} → {path}")
        err_console.print("Repair or replace the store (move it away and the next run starts a "
                          "new one), then run the same command again: it stores these "
                          "result files first and trains none of their trials again.")
        sys.exit(1)
    try:
        with Store.read(run_dir) as store:
            identity = dataset_identity(card, options)
            _show_leaderboard([r for r in leaderboard(store) if r.dataset == identity
                               and r.protocol_hash == protocol.hash])
    except (StoreError, sqlite3.DatabaseError) as exc:
        err_console.print(f"[yellow]note:[/] the leaderboard cannot be shown ({escape(str(exc))})")
    for path in summary.leaderboard_files:
        console.print(f"[dim]wrote {path}[/]")
    console.print(f"Summary: {len(summary.finished)} trial(s) finished, {len(summary.failed)} "
                  f"failed, {summary.skipped} already finished before.")
    if summary.failed:
        err_console.print(f"[bold red]{len(summary.failed)} trial(s) failed:[/]")
        for result in summary.failed:
            err_console.print(f"  {result.method} fold {result.fold}: "
                              f"{escape((result.error.splitlines() or [''])[0])}")
        err_console.print(f"Each reason is stored with its trial in {run_dir / STORE_NAME}. "
                          "Fix the cause and run the same command again: finished trials are "
                          "skipped, failed ones run again.")
        sys.exit(1)


def _executor(plugins: Plugins, name: str | None, sets: tuple[str, ...], devices: str | None,
              trials_per_device: int | None, device: str, run_dir: Path):
    """The executor of --executor / --executor-set; --devices and --trials-per-device are
    options of the executor whose card claims them as flags (and choose it when --executor is
    not given)."""
    flags = {}
    if devices is not None:
        flags["devices"] = devices
    if trials_per_device is not None:
        flags["trials_per_device"] = str(trials_per_device)
    if trials_per_device is not None and trials_per_device < 1:
        raise ProtocolError(f"--trials-per-device {trials_per_device}: must be ≥ 1")
    if flags:
        claimed = [n for n, c in plugins.executors.items() if set(flags) <= set(c.flags)]
        name = name or (claimed[0] if claimed else None)
        if name not in claimed:
            owners = " or ".join(repr(n) for n in claimed) or "no executor"
            raise ExecutorOptionError(f"--devices/--trials-per-device are options of {owners}, "
                                      f"not of {name!r}; use --executor-set")
    name = (name or DEFAULT_EXECUTOR).strip().lower()
    card = plugins.executors.get(name)
    options = {**_parse_sets(sets, "--executor-set"), **flags}
    if card.local_device:
        device = _device(device)
    context = ExecutorContext(run_dir, device, plugins)
    try:
        return card.create(context, options)
    except (ExecutorOptionError, ExecutorError, ProtocolError):
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's executor: name it
        info = plugins.info.get(plugins.executors.owner(name))
        if info is not None and info.builtin:
            raise
        raise ExecutorOptionError(f"executor {name!r} (plugin {plugins.executors.owner(name)}) "
                                  f"could not be set up: {exc}") from exc


def _select_methods(plugins: Plugins, methods: str) -> list[str]:
    """The methods of --methods; 'default' is the 'default' group (all methods if it is empty),
    and the user is told what it holds and how to run everything."""
    if methods.strip().lower() != "default":
        return plugins.select_methods(methods)
    names = plugins.method_groups("default") or plugins.main_methods()
    total = len(plugins.main_methods())
    if len(names) < total:
        options = len(plugins.method_groups("options"))
        console.print(
            f"[bold]Default methods[/]: {', '.join(names)} — a representative set that fits "
            f"10 minutes on a 2-core CPU. [bold]--methods all[/] runs all {total} methods"
            + (f" ([bold]--methods options[/] the {options} variants of other methods)"
               if options else "")
            + ", [bold]--methods ablation[/] the paper's ablation table; `mtlbench list "
            "methods` shows them.")
    return names


def _precision_words(requested: str, executor) -> str:
    """'fp32', 'bf16', or what auto became on this process's device and why."""
    if requested != "auto":
        return requested
    import torch

    device = executor.device if executor is not None else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        return "auto precision (bf16 where each trial's GPU has it natively, else fp32)"
    support = bf16_support(device)
    return f"{resolve_precision(requested, device)} (auto: {support.reason})"


def _announce(plan, names, dataset, protocol, run_dir, executor=None) -> None:
    overrides = ", ".join(f"{k}={v}" for k, v in protocol.overrides) or "none"
    console.print(
        f"[bold]mtlbench run[/]: {len(names)} method(s) ({', '.join(names)}) on [bold]{dataset}"
        f"[/], protocol [bold]{protocol.name}[/] ({protocol.hash}; overrides: {overrides}), "
        f"{protocol.image_size}², {protocol.epochs} epochs, batch {protocol.batch_size}, "
        f"{_precision_words(protocol.precision, executor)} forward, checkpoint selection "
        f"'{protocol.checkpoint}', "
        f"pretrained '{protocol.pretrained}', "
        f"loss mode '{protocol.loss_mode}'.")
    seeds = sorted({spec.seed for spec in plan.specs + plan.done})
    if len(seeds) > 1:
        console.print(f"Training seeds (replicates of every method and fold): "
                      f"{', '.join(map(str, seeds))}.")
    knobbed = {}
    for spec in plan.specs + plan.done:
        knobbed.setdefault(spec.method, spec.knobs)
    knob_lines = [f"{m}: " + ", ".join(f"{k}={v}" for k, v in kv) for m, kv in knobbed.items()
                  if kv]
    if knob_lines:
        console.print("Method knobs: " + "; ".join(knob_lines) + ".")
    if plan.ingested:
        console.print(f"Stored {len(plan.ingested)} result(s) that jobs of an earlier run wrote "
                      f"to {run_dir / 'results'}.")
    for problem in [*plan.warnings, *plan.problems]:
        err_console.print(f"[yellow]warning:[/] {escape(problem)}")
    console.print(f"Run folder {run_dir}: {len(plan.specs)} trial(s) to run, "
                  f"{len(plan.done)} already finished, {len(plan.resumable)} resuming from a "
                  "checkpoint.")
    line = announcement(executor, len(plan.specs)) if executor is not None else None
    if line:
        console.print(escape(line))


class _ProgressEvents:
    """Feeds the rich progress display: the run's epochs with its ETA, and one bar for each
    trial in progress (several when trials run at once)."""

    def __init__(self, progress: Progress, overall, epochs: int, total: int) -> None:
        self.progress, self.overall = progress, overall
        self.epochs, self.total, self.done = epochs, total, 0
        self.running: dict[str, list] = {}  # trial id -> [its bar, epochs counted in overall]

    def trial_started(self, spec: TrialSpec) -> None:
        resuming = " (resuming)" if spec.checkpoint_path.exists() else ""
        bar = self.progress.add_task(spec.label + resuming, total=self.epochs)
        self.running[spec.trial_id] = [bar, 0]
        self._describe_overall()

    def epoch_finished(self, spec: TrialSpec, record: dict) -> None:
        entry = self.running.get(spec.trial_id)
        if entry is not None:
            self.progress.update(entry[0], completed=record["epoch"] + 1)
            entry[1] += 1
        self.progress.update(self.overall, advance=1)

    def trial_finished(self, spec: TrialSpec, result: TrialResult) -> None:
        """Count the trial's epochs not reported yet (those before a resume, or after a
        failure), remove its bar and log its result."""
        self.done += 1
        bar, counted = self.running.pop(spec.trial_id, (None, 0))
        if bar is not None:
            self.progress.remove_task(bar)
        self.progress.update(self.overall, advance=self.epochs - counted)
        if self.running:
            self._describe_overall()
        if result.status == "finished":
            m = result.fold_metrics
            parts = [f"{k} {m[key] * 100:.1f}" for k, key in
                     (("Dice", "strict.dice"), ("ACC", "cls.acc")) if key in m]
            self.progress.console.log(f"{spec.label}: " + ", ".join(parts) +
                                      f" ({result.timing['wall_s']:.0f} s)")
        else:
            self.progress.console.log(f"[red]{spec.label} failed:[/] "
                                      f"{escape(result.error.splitlines()[0])}")

    def _describe_overall(self) -> None:
        """'trial 3/10' with one trial in progress, 'trials 3–4/10' with two."""
        first, running = self.done + 1, len(self.running)
        trials = (f"trial {first}" if running <= 1 else f"trials {first}–{first + running - 1}")
        self.progress.update(self.overall, description=f"{trials}/{self.total}")


def _execute_with_progress(plan, run_dir, plugins, epochs, keep_checkpoints, executor=None):
    """Execute the plan (with ``executor``, LocalExecutor when None) under the progress
    display; Ctrl-C exits with status 130 and says what was kept."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    started = time.perf_counter()
    with Progress(*columns, console=console, transient=False) as progress:
        overall = progress.add_task(f"trial 0/{len(plan.specs)}",
                                    total=len(plan.specs) * epochs)
        events = _ProgressEvents(progress, overall, epochs, len(plan.specs))
        try:
            from mtlbench.runner import execute

            summary = execute(plan, run_dir, events, executor=executor, plugins=plugins,
                              keep_checkpoints=keep_checkpoints)
        except KeyboardInterrupt:
            progress.stop()
            running = len(events.running)
            kept = {0: "", 1: "; the trial in progress keeps its last saved epoch in its "
                              "checkpoint"}.get(running, f"; the {running} trials in progress "
                                                "keep their last saved epoch in their "
                                                "checkpoints")
            note = interrupted_note(executor) if executor is not None else None
            then = "Run the same command again to resume."
            if note is not None:
                kept, then = f"; {note}.", ""
            else:
                kept += "."
            err_console.print(
                f"[yellow]Interrupted[/] after {time.perf_counter() - started:.0f} s: "
                f"{events.done} trial(s) finished and stored{kept} {then}".rstrip())
            sys.exit(130)
    console.print(f"Run took {time.perf_counter() - started:.0f} s.")
    return summary


def _show_leaderboard(rows, mode: str = "strict", references=None) -> None:
    """The leaderboard table of ``rows`` in the terminal (mtlbench.leaderboard_table)."""
    if not rows:
        console.print("No finished trials in this run folder yet.")
        return
    for shown, notes in rich_tables(build_table(rows, mode, references)):
        console.print(shown)
        for note in notes:
            console.print(f"[yellow]{escape(note)}[/]")


@main.command(name="leaderboard")
@click.option("--out", "-o", default=DEFAULT_OUT, show_default=True, type=click.Path(),
              help="Run folder holding the store.")
@click.option("--format", "fmt",
              type=click.Choice(["table", "markdown", "csv", "json", "html"]),
              default="table", show_default=True,
              help="html: a self-contained page (redirect it to a file).")
@click.option("--mode", type=click.Choice(["strict", "paper"]), default="strict",
              show_default=True, help="strict: sound metrics; paper: the paper's computation.")
@click.option("--delta-ref", "delta_ref", default=None, metavar="seg=NAME,cls=NAME",
              help="The single-task references of the multi-task gain Δm (default: those the "
                   "methods' cards name, recorded with the trials).")
def leaderboard_cmd(out, fmt, mode, delta_ref) -> None:
    """Rebuild the leaderboard from the store of a run folder."""
    path = Path(out) / STORE_NAME
    if not path.exists():
        _fail(f"no store at {path}: run `mtlbench run --out {out}` first, or point --out at a "
              "run folder")
    try:
        references = parse_references(delta_ref)
    except ValueError as exc:
        _fail(str(exc))
    try:
        with Store.read(path) as store:
            rows = leaderboard(store, mode, references)
            try:
                write_leaderboard(store, out)
            except OSError as exc:  # a read-only run folder: show the table all the same
                err_console.print(f"[yellow]note:[/] the leaderboard files were not "
                                  f"rewritten in {out} ({escape(str(exc))})")
    except StoreError as exc:
        _fail(str(exc))
    except sqlite3.DatabaseError as exc:
        _fail(str(damaged_store(path, exc)))
    if fmt == "table":
        _show_leaderboard(rows, mode, references)
    elif fmt == "markdown":
        click.echo(markdown(build_table(rows, mode, references)))
    elif fmt == "csv":
        click.echo(to_csv(rows, mode), nl=False)
    elif fmt == "html":
        click.echo(html_page(build_table(rows, mode, references)), nl=False)
    else:
        click.echo(json.dumps(to_records(rows, mode), indent=1))


@main.command(name="collect")
@click.option("--out", "-o", default=DEFAULT_OUT, show_default=True, type=click.Path(),
              help="Run folder whose jobs wrote result files.")
@click.option("--keep-checkpoints", is_flag=True, help="Keep finished trials' checkpoints.")
def collect_cmd(out, keep_checkpoints) -> None:
    """Store the results that jobs wrote into a run folder, and show the jobs still out.

    For runs whose driver stopped (--executor-set wait=false, Ctrl-C, a closed session):
    jobs of an executor such as slurm go on and write results/<trial id>.json; this records
    them in the store and rewrites the leaderboard, then asks each executor which of its jobs
    are still out. Safe to run at any time, also while a driver runs; a result already stored
    is not stored twice. Exit status 1 when a collected trial failed or a job ended without
    a result.
    """
    from mtlbench.result_files import ingest

    run_dir = Path(out)
    if not (run_dir / STORE_NAME).exists() and not (run_dir / "results").is_dir():
        _fail(f"{run_dir} is not a run folder (no {STORE_NAME} and no results/): point --out "
              "at the folder given to `mtlbench run --out`")
    try:
        with Store.in_run_dir(run_dir) as store:
            collected, problems = ingest(store, run_dir)
            statuses = store.statuses()
            files = write_leaderboard(store, run_dir)
    except StoreError as exc:
        _fail(str(exc))
    for problem in problems:
        err_console.print(f"[yellow]warning:[/] {escape(problem)}")
    failed = [r for r in collected if r.status != "finished"]
    for result in collected:
        if result.status == "finished" and not keep_checkpoints:
            (run_dir / "checkpoints" / f"{result.trial_id}.pt").unlink(missing_ok=True)
        mark = "[green]stored[/]" if result.status == "finished" else "[red]failed[/]"
        reason = "" if result.status == "finished" else \
            f": {escape(result.error.splitlines()[0])}"
        console.print(f"{mark} {result.method} · {result.dataset} · fold {result.fold}{reason}")
    jobs = [job for _, card in _plugins().executors.items() if card.outstanding
            for job in card.outstanding(run_dir, statuses)]
    waiting = sorted((j for j in jobs if not j.ended), key=lambda j: j.job)
    lost = sorted((j for j in jobs if j.ended), key=lambda j: j.job)
    console.print(f"Collected {len(collected)} result(s) ({len(failed)} failed); "
                  f"{sum(s == 'finished' for s in statuses.values())} finished trial(s) in "
                  f"the store; {len(waiting)} job(s) still queued or running.")
    for job in waiting:
        console.print(f"  job {job.job} ({job.state}): {escape(job.label)}")
    for job in lost:
        err_console.print(f"[red]job {job.job} ended ({job.state}) without a result[/]: "
                          f"{escape(job.label)}; {escape(job.hint)}")
    if files:
        with Store.read(run_dir) as store:
            _show_leaderboard(leaderboard(store))
    if failed or lost:
        sys.exit(1)


@main.command(name="report")
@click.argument("run", type=click.Path())
@click.option("--out", "-o", "out_dir", default=None, type=click.Path(),
              help="Folder for report.html and figures/ (default: RUN/report).")
@click.option("--mode", type=click.Choice(["strict", "paper"]), default="strict",
              show_default=True, help="strict: sound metrics; paper: the paper's computation.")
@click.option("--dataset", "-d", default=None,
              help="Only this dataset (its name, or the full NAME:options spec).")
@click.option("--grid", "grid", default=4, show_default=True, type=click.IntRange(min=0),
              help="Test cases in the qualitative grid (classes and folds take turns).")
@click.option("--delta-ref", "delta_ref", default=None, metavar="seg=NAME,cls=NAME",
              help="The single-task references of the multi-task gain Δm (default: those the "
                   "methods' cards name, recorded with the trials).")
def report_cmd(run, out_dir, mode, dataset, grid, delta_ref) -> None:
    """Write a self-contained HTML report of RUN (a run folder or a store file).

    Leaderboard beside the paper's numbers, per-fold box plots, paired tests and bootstrap
    intervals, training curves and a qualitative grid; the figures also as PNG files.
    """
    from mtlbench.reporting import write_report

    loaded = _plugins()
    try:
        references = parse_references(delta_ref)
        with err_console.status("Writing the report…"):
            page = write_report(run, out_dir, mode, dataset, grid, loaded.methods,
                                loaded.datasets, references)
    except ValueError as exc:  # a bad --delta-ref, or a ReportError
        _fail(str(exc))
    click.echo(str(page))


@main.command(name="compare")
@click.argument("current")
@click.argument("baseline")
@click.option("--tolerance", default=1.0, show_default=True, type=float,
              help="How much worse a metric may be before it is a regression, in its display "
                   "unit: percentage points for Dice, Jaccard, ACC, PRE, REC; pixels for HD95, "
                   "ASD.")
@click.option("--tolerance-for", "per_metric", multiple=True, metavar="METRIC=VALUE",
              help="A tolerance for one metric, e.g. hd95=5 (repeatable).")
@click.option("--metrics", default=",".join(DEFAULT_METRICS), show_default=True,
              help="Comma list of metrics to compare.")
@click.option("--mode", type=click.Choice(["strict", "paper"]), default="strict",
              show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "json"]),
              default="table", show_default=True)
@click.option("--seed-sigma", type=float, default=None, metavar="K",
              help="With training seeds (run --seeds): a metric worse than its tolerance is a "
                   "regression only when it is also worse by more than K standard deviations "
                   "of the row's seed means (e.g. 2). Rows with one seed: the tolerance alone.")
def compare_cmd(current, baseline, tolerance, per_metric, metrics, mode, fmt,
                seed_sigma) -> None:
    """Compare CURRENT against BASELINE and exit 1 on a regression (for CI).

    Each is a run folder, a store file, or a leaderboard JSON (a run folder's leaderboard.json
    or `mtlbench leaderboard --format json`). Rows are matched on dataset, method and protocol
    hash; a baseline row missing from CURRENT is a regression. Exit status: 0 no regression,
    1 regression, 2 the inputs could not be compared.
    """
    try:
        tolerances = {}
        for item in per_metric:
            name, sep, value = item.partition("=")
            try:
                tolerances[name.strip().lower()] = float(value)
            except ValueError:
                sep = ""
            if not sep:
                raise CompareError(f"--tolerance-for {item}: expected METRIC=VALUE, e.g. hd95=5")
        now, before = load_records(current, mode), load_records(baseline, mode)
        differences = compare(now, before, tuple(m.strip().lower() for m in metrics.split(",")
                                                 if m.strip()), tolerance, tolerances,
                              seed_sigma)
    except (CompareError, StoreError) as exc:
        _fail(str(exc))
    except sqlite3.DatabaseError as exc:
        _fail(str(damaged_store(f"{current} or {baseline}", exc)))
    regressions = [d for d in differences if d.regression]
    if fmt == "json":
        click.echo(json.dumps([{**vars(d), "delta": d.delta, "verdict": d.verdict}
                               for d in differences], indent=1))
    elif fmt == "markdown":
        click.echo(compare_markdown(differences))
    else:
        table = Table(title=f"{current} against {baseline} · {mode} metrics")
        for header in ("dataset", "method", "metric", "baseline", "current", "Δ", "verdict"):
            table.add_column(header)
        for d in differences:
            style = "bold red" if d.regression else ""
            table.add_row(d.dataset, d.method, d.metric, format_number(d.baseline),
                          format_number(d.current), format_number(d.delta, True), d.verdict,
                          style=style)
        console.print(table)
    for note in unmatched_protocols(now, before):
        err_console.print(f"[yellow]note:[/] {escape(note)} (not comparable)")
    for note in precision_differences(now, before):
        err_console.print(f"[yellow]note:[/] {escape(note)} precision (compared: the protocol "
                          "is the same; the difference includes rounding)")
    if regressions:
        err_console.print(f"[bold red]{len(regressions)} regression(s)[/] beyond the tolerance.")
        sys.exit(1)
    err_console.print(f"No regression in {len(differences)} comparison(s).")


def _model_options(command):
    """The options that choose a run's models: one method's fold models of one seed."""
    options = [
        click.option("--method", "-m", default=None,
                     help="The method (needed when the source holds several)."),
        click.option("--fold", type=int, default=None,
                     help="Use this fold's model alone (default: the ensemble of all folds)."),
        click.option("--seed", type=int, default=None,
                     help="The training seed whose fold models to use (default: the lowest)."),
        click.option("--pool-seeds", is_flag=True,
                     help="Average the fold models of every training seed."),
        click.option("--balancing", default=None, help="The task balancing (default: fixed)."),
        click.option("--variant", default=None,
                     help="The method's knobs as its row names them, e.g. width=16."),
        click.option("--trained-on", default=None,
                     help="The training dataset, where the source holds models of several."),
        click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command(name="predict")
@click.argument("source", type=click.Path())
@click.argument("images", nargs=-1, type=click.Path())
@_model_options
@click.option("--dataset", "-d", default=None,
              help="Predict the images of a registered dataset instead of files.")
@click.option("--data-root", default=None, type=click.Path(), help="That dataset's folder.")
@click.option("--to", "to", required=True, type=click.Path(),
              help="Output folder: masks/<name>.png and predictions.csv.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
def predict_cmd(source, images, method, fold, seed, pool_seeds, balancing, variant,
                trained_on, device, dataset, data_root, to, batch_size) -> None:
    """Predict IMAGES (files or folders) with SOURCE's models (a run folder kept with
    --keep-models, or a file of `mtlbench export`).

    Writes each image's tumour mask as a PNG at the image's own size and a CSV with the class
    probabilities (prob_malignant: the malignancy probability). By default the fold models
    are an ensemble: their probabilities are averaged, then thresholded. Exit status 1 when an
    image could not be read (the others are predicted).
    """
    from mtlbench.fold_models import ModelFileError
    from mtlbench.predict import (
        Ensemble,
        ImageSource,
        PredictError,
        choose_models,
        describe,
        image_files,
        predict_images,
        unique_names,
    )

    loaded = _plugins()
    try:
        models = choose_models(source, method, fold=fold, seed=seed, pool_seeds=pool_seeds,
                               balancing=balancing, variant=variant, dataset=trained_on)
        ensemble = Ensemble(loaded, models, _device(device))
        if dataset:
            card, options = lookup_dataset(loaded.datasets, dataset)
            with reading(card, resolve_root(card, data_root)):
                cases = card.load(resolve_root(card, data_root), **options)
            sources = unique_names([ImageSource(c.id, pixels=c.image) for c in cases]
                                   + image_files(images))
        elif images:
            sources = image_files(images)
        else:
            raise PredictError("give images to predict: files, folders, or --dataset NAME")
    except (*USER_ERRORS, PredictError, ModelFileError) as exc:
        _fail(str(exc))
    console.print(f"Predicting {len(sources)} image(s) with {escape(describe(models))}.")
    failed = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console) as progress:
        bar = progress.add_task("images", total=len(sources))

        def done(image, error):
            if error:
                failed.append(error)
                progress.console.print(f"[red]skipped:[/] {escape(error)}")
            progress.advance(bar)

        frame = predict_images(ensemble, sources, Path(to), batch_size, done)
    console.print(f"Wrote {len(frame) - len(failed)} prediction(s) to {Path(to)} "
                  f"(predictions.csv, masks/).")
    if failed:
        err_console.print(f"[bold red]{len(failed)} image(s) could not be read[/]; their rows "
                          "in predictions.csv say why. Replace or remove them and predict "
                          "them again.")
        sys.exit(1)


@main.command(name="export")
@click.argument("run", type=click.Path())
@click.option("--methods", "-m", default=None,
              help="Comma list of methods (default: every method with kept models).")
@click.option("--balancing", default=None, help="Only this task balancing (default: all).")
@click.option("--to", "to", required=True, type=click.Path(),
              help="Folder for the files, one per method (METHOD.mtlbench.safetensors).")
def export_cmd(run, methods, balancing, to) -> None:
    """Export RUN's kept fold models, one file per method (per knob variant and balancing)
    with all its folds and seeds and everything `mtlbench predict` needs; another machine
    needs mtlbench and the method's plugin."""
    from mtlbench.export import export_groups, export_models
    from mtlbench.fold_models import ModelFileError, kept_models
    from mtlbench.predict import PredictError

    try:
        groups = export_groups(kept_models(run), methods.split(",") if methods else None,
                               balancing)
    except (PredictError, ModelFileError) as exc:
        _fail(str(exc))
    for name, group in groups.items():
        path = export_models(group, Path(to) / name)
        console.print(f"{group[0].method}: {len(group)} fold model(s) → {path} "
                      f"({path.stat().st_size / 2**20:.1f} MiB)")


@main.command(name="evaluate")
@click.argument("run", type=click.Path())
@click.option("--dataset", "-d", required=True,
              help="The external test dataset (NAME or NAME:key=value,...): all its cases.")
@click.option("--data-root", default=None, type=click.Path(), help="That dataset's folder.")
@click.option("--methods", "-m", default=None,
              help="Comma list of methods (default: every method with kept models).")
@click.option("--balancing", default=None, help="Only this task balancing (default: all).")
@click.option("--train-data-root", default=None, type=click.Path(),
              help="The training dataset's folder, to find its near duplicates in the test "
                   "set (default: where `mtlbench run` looks).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
def evaluate_cmd(run, dataset, data_root, methods, balancing, train_data_root, device) -> None:
    """Test RUN's kept fold models on another dataset, without training: each fold model and
    their ensemble, both metric modes, stored in RUN's store beside the cross-validation
    ("METHOD → B" rows in `mtlbench leaderboard`, the report and the results API).

    Refused: the training dataset itself (its cases trained the fold models) and a dataset
    whose classes differ by name. Near duplicates of training images are reported.
    """
    from mtlbench.external_eval import EvaluationError, evaluate_external, evaluation_groups
    from mtlbench.fold_models import ModelFileError, kept_models
    from mtlbench.predict import PredictError

    loaded = _plugins()
    run_dir = Path(run)
    try:
        groups = evaluation_groups(kept_models(run_dir), methods, balancing)
        with run_lock(run_dir), Store.in_run_dir(run_dir) as store:
            trained = {t["trial_id"]: t for t in store.trials()}
            for group in groups:
                with console.status(f"Evaluating {group[0].method} on {dataset}…"):
                    evaluation = evaluate_external(loaded, group, dataset, data_root,
                                                   train_data_root, trained, _device(device))
                for result in evaluation.results:
                    store.record(result)
                _show_evaluation(group, evaluation)
            write_leaderboard(store, run_dir)
    except (*USER_ERRORS, PredictError, ModelFileError, EvaluationError) as exc:
        _fail(str(exc))
    console.print(f"Stored in {run_dir / STORE_NAME}; `mtlbench leaderboard --out {run_dir}` "
                  "shows them beside the cross-validation.")


def _show_evaluation(models, evaluation) -> None:
    """The scores of each fold model and of the ensemble, and the evaluation's notes."""
    columns = (("Dice", "strict.dice"), ("HD95", "strict.hd95"), ("ACC", "cls.acc"),
               ("AUC", "cls.auc"))
    table = Table(title=f"{models[0].method} (trained on {models[0].meta['dataset']}) → "
                        f"{evaluation.test_dataset}")
    table.add_column("model")
    for name, _ in columns:
        table.add_column(name)
    for result in evaluation.results:
        label = "ensemble" if result.fold < 0 else f"fold {result.fold}"
        table.add_row(label, *(_percent(result.fold_metrics.get(key), name != "HD95")
                               for name, key in columns))
    console.print(table)
    for note in evaluation.notes:
        err_console.print(f"[yellow]warning:[/] {escape(note)}")


def _percent(value, scaled: bool) -> str:
    if value is None:
        return "–"
    return f"{value * 100:.2f}" if scaled else f"{value:.2f}"


@main.group(name="data")
def data_cmd() -> None:
    """Inspect a dataset."""


@data_cmd.command(name="check")
@click.argument("dataset")
@click.option("--data-root", default=None, type=click.Path(),
              help="The dataset's folder (default: $MTLBENCH_DATA/<dataset>).")
@click.option("--json", "as_json", is_flag=True)
def data_check(dataset, data_root, as_json) -> None:
    """Counts per class and every problem of a dataset folder, by file.

    Exit status 1 when the data cannot be used as it is (errors); warnings are handled.
    """
    loaded = _plugins()
    try:
        card, options = lookup_dataset(loaded.datasets, dataset)
        root = resolve_root(card, data_root)
        if card.check is None:
            console.print(f"{dataset}: no files to check (generated or not checkable).")
            return
        with reading(card, root):
            report = card.check(root, **options)
    except USER_ERRORS as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps({"dataset": dataset, "root": str(root), "counts": report.counts,
                               "problems": [vars(p) for p in report.problems]}, indent=1))
    else:
        counts = ", ".join(f"{k} {v}" for k, v in report.counts.items())
        console.print(f"[bold]{dataset}[/] at {root}: {counts}")
        for problem in report.problems:
            colour = "red" if problem.severity == "error" else "yellow"
            console.print(f"[{colour}]{problem.severity}[/]: {escape(problem.path)}: "
                          f"{escape(problem.message)}")
        console.print(f"{len(report.errors)} error(s), {len(report.warnings)} warning(s).")
    if report.errors:
        sys.exit(1)


@data_cmd.command(name="audit")
@click.argument("dataset")
@click.option("--data-root", default=None, type=click.Path(),
              help="The dataset's folder (default: $MTLBENCH_DATA/<dataset>).")
@click.option("--threshold", default=0.97, show_default=True,
              help="Thumbnail correlation from which two images count as near duplicates.")
@click.option("--against", default=None, metavar="DATASET",
              help="Instead: the images of DATASET that are near duplicates of this one's "
                   "(e.g. a test set against a training set; public BUS sets share scans).")
@click.option("--against-root", default=None, type=click.Path(),
              help="The folder of the --against dataset.")
@click.option("--json", "as_json", is_flag=True)
def data_audit(dataset, data_root, threshold, against, against_root, as_json) -> None:
    """Exact and near-duplicate images, within and across classes, and label conflicts."""
    from mtlbench.data.audit import audit_cases, cross_duplicates

    loaded = _plugins()
    try:
        card, options = lookup_dataset(loaded.datasets, dataset)
        root = resolve_root(card, data_root)
        with reading(card, root):
            cases = card.load(root, **options)
        if against:
            other, other_options = lookup_dataset(loaded.datasets, against)
            other_root = resolve_root(other, against_root)
            with reading(other, other_root):
                others = other.load(other_root, **other_options)
    except USER_ERRORS as exc:
        _fail(str(exc))
    if against:
        pairs = cross_duplicates([c.id for c in others], [c.image for c in others],
                                 [c.id for c in cases], [c.image for c in cases], threshold)
        if as_json:
            click.echo(json.dumps({"dataset": dataset, "against": against,
                                   "threshold": threshold, "pairs": pairs}, indent=1))
            return
        console.print(f"[bold]{against}[/] against [bold]{dataset}[/]: "
                      f"{len({a for a, _, _ in pairs})} of {len(others)} image(s) are near "
                      f"duplicates of {dataset}'s {len(cases)} (thumbnail correlation ≥ "
                      f"{threshold}; {len(pairs)} pair(s)).")
        for a, b, corr in pairs:
            console.print(f"{escape(a)} ~ {escape(b)}, r = {corr:.4f}")
        return
    report = audit_cases(cases, threshold)
    labels = {c.id: c.label for c in cases}
    classes = card.class_names(options)
    names = {c.id: classes[c.label] for c in cases}
    cross = report.cross_class_pairs(labels)
    if as_json:
        click.echo(json.dumps({
            "dataset": dataset, "cases": len(cases), "threshold": threshold,
            "exact": report.exact, "near_pairs": report.near_pairs, "cross_class": cross,
            "clusters": report.clusters, "conflicts": report.conflicts}, indent=1))
        return
    console.print(f"[bold]{dataset}[/]: {len(cases)} cases; {len(report.exact)} exact duplicate "
                  f"group(s), {len(report.near_pairs)} near-duplicate pair(s) (thumbnail "
                  f"correlation ≥ {threshold}) in {len(report.clusters)} cluster(s), "
                  f"{len(report.conflicts)} cluster(s) with conflicting labels.")
    for group in report.exact:
        console.print("exact duplicates: " + ", ".join(f"{g} ({names[g]})" for g in group))
    for a, b, corr in cross:
        console.print(f"across classes: {a} ({names[a]}) ~ {b} ({names[b]}), r = {corr:.4f}")
    console.print("Splits keep every cluster on one side of a fold (its cases share a group).")


@main.group(name="list")
def list_cmd() -> None:
    """List methods, datasets or protocols."""


@list_cmd.command(name="methods")
@click.option("--json", "as_json", is_flag=True)
def list_methods(as_json) -> None:
    """The registered methods with their tasks, family, plugin, knobs and loss terms."""
    plugins = _plugins()
    records = [{"name": n, "tasks": sorted(c.tasks), "family": c.family,
                "groups": list(c.groups), "plugin": plugins.methods.owner(n),
                "knobs": [_knob_record(k) for k in c.knobs],
                "loss_terms": [t.name for t in c.loss_terms],
                "description": c.description} for n, c in plugins.methods.items()]
    _emit(records, as_json, "Methods", {
        "name": lambda r: r["name"], "tasks": lambda r: "+".join(r["tasks"]),
        "family": lambda r: r["family"], "groups": lambda r: ",".join(r["groups"]),
        "plugin": lambda r: r["plugin"],
        "knobs (--set NAME=VALUE)": lambda r: "\n".join(_knob_words(k) for k in r["knobs"]),
        "description": lambda r: r["description"]})


def _knob_record(knob) -> dict:
    return {"name": knob.name, "type": knob.type.__name__, "default": knob.default,
            "presets": dict(knob.presets), "choices": list(knob.choices), "help": knob.help}


def _knob_words(record: dict) -> str:
    kind = "|".join(map(str, record["choices"])) or record["type"]
    presets = "".join(f", {p}: {v}" for p, v in record["presets"].items())
    return f"{record['name']}={record['default']} ({kind}{presets})"


@list_cmd.command(name="datasets")
@click.option("--json", "as_json", is_flag=True)
def list_datasets(as_json) -> None:
    """The registered datasets."""
    plugins = _plugins()
    records = [{"name": n, "classes": list(c.classes), "needs_files": c.needs_files,
                "plugin": plugins.datasets.owner(n), "description": c.description,
                "obtain": c.obtain} for n, c in plugins.datasets.items()]
    _emit(records, as_json, "Datasets", {
        "name": lambda r: r["name"], "classes": lambda r: ", ".join(r["classes"]),
        "plugin": lambda r: r["plugin"], "description": lambda r: r["description"]})


@list_cmd.command(name="protocols")
@click.option("--json", "as_json", is_flag=True)
def list_protocols(as_json) -> None:
    """The protocol presets, their settings and their per-dataset values."""
    records = []
    for name, description, per_dataset in describe_protocols():
        protocol = get_protocol(name)
        records.append({"name": name, "description": description, "hash": protocol.hash,
                        "settings": protocol.knobs(), "per_dataset": per_dataset})
    if as_json:
        click.echo(json.dumps(records, indent=1))
        return
    for r in records:
        console.print(f"[bold]{r['name']}[/] ({r['hash']}): {r['description']}")
        console.print("  " + ", ".join(f"{k}={v}" for k, v in r["settings"].items()))
        for ds, knobs in r["per_dataset"].items():
            console.print(f"  on {ds}: " + ", ".join(f"{k}={v}" for k, v in knobs.items()))
    console.print("Override any setting with --set KEY=VALUE (recorded with every result); "
                  "methods' own knobs are set the same way (`mtlbench list methods`).")


@list_cmd.command(name="executors")
@click.option("--json", "as_json", is_flag=True)
def list_executors(as_json) -> None:
    """The registered executors and their options (--executor NAME --executor-set KEY=VALUE)."""
    plugins = _plugins()
    records = [{"name": n, "plugin": plugins.executors.owner(n), "description": c.description,
                "options": {k: {"default": o.default, "help": o.help}
                            for k, o in c.options.items()}}
               for n, c in plugins.executors.items()]
    if as_json:
        click.echo(json.dumps(records, indent=1))
        return
    for r in records:
        console.print(f"[bold]{r['name']}[/] ({r['plugin']}): {escape(r['description'])}")
        for key, option in r["options"].items():
            default = f" (default {option['default']})" if option["default"] else ""
            console.print(f"  {key}: {escape(option['help'])}{escape(default)}")


@list_cmd.command(name="balancings")
@click.option("--json", "as_json", is_flag=True)
def list_balancings(as_json) -> None:
    """The registered task balancings (run --balancing NAME,... or a group: loss, gradient)
    with their knobs (--set NAME.KNOB=VALUE)."""
    plugins = _plugins()
    records = [{"name": n, "plugin": plugins.balancings.owner(n), "kind": c.kind,
                "description": c.description, "citation": c.citation,
                "knobs": [_knob_record(k) for k in c.knobs]}
               for n, c in plugins.balancings.items()]
    _emit(records, as_json, "Balancings", {
        "name": lambda r: r["name"], "group": lambda r: r["kind"],
        "description": lambda r: r["description"],
        "knobs (--set NAME.KNOB=VALUE)": lambda r: "\n".join(
            f"{r['name']}.{_knob_words(k)}" for k in r["knobs"]),
        "paper": lambda r: r["citation"], "plugin": lambda r: r["plugin"]})


@main.command()
@click.option("--json", "as_json", is_flag=True)
def plugins(as_json) -> None:
    """Installed plugins, their versions and what each registered."""
    loaded = _plugins()
    records = [{"name": i.name, "module": i.module, "distribution": i.distribution,
                "version": i.version, "builtin": i.builtin, "methods": i.methods,
                "datasets": i.datasets, "executors": i.executors,
                "balancings": i.balancings}
               for i in loaded.info.values()]
    records += [{"name": e.plugin, "error": str(e.reason)} for e in loaded.errors]
    def registered(r: dict) -> str:
        if "error" in r:
            return f"[red]failed: {escape(r['error'])}[/]"
        return ", ".join([f"method {m}" for m in r["methods"]] +
                         [f"dataset {d}" for d in r["datasets"]] +
                         [f"executor {e}" for e in r["executors"]] +
                         [f"balancing {b}" for b in r["balancings"]])

    _emit(records, as_json, "Plugins", {
        "name": lambda r: r["name"], "distribution": lambda r: r.get("distribution", ""),
        "version": lambda r: r.get("version", ""), "registered": registered})


@main.command()
@click.option("--methods", "-m", default="all", show_default=True)
@click.option("--size", default=256, show_default=True, help="Input size (square).")
@click.option("--device", default="auto", show_default=True,
              help="Where latency and throughput are measured: auto, cpu, cuda or cuda:N.")
@click.option("--speed/--no-speed", default=True, show_default=True,
              help="Measure forward latency (batch 1) and training throughput.")
@click.option("--batch-size", default=8, show_default=True,
              help="Batch size of the training-throughput measurement.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
def profile(methods, size, device, speed, batch_size, fmt, as_json) -> None:
    """Parameters, FLOPs, MACs and speed of each method, beside its paper's published figures.

    Ours: unique parameters, FLOPs by torch's FlopCounterMode (2 per multiply-add), MACs by
    thop's rules on the model as built (with the method's own counting rules). Paper
    convention: thop's rules on the method's original code (submodules it registered twice
    counted twice, as the card says). Published: what the method's paper printed (the card's
    ``gmacs_paper``/``mparams_paper``). Speed: forward latency at batch 1 and training images/s
    on --device.
    """
    from mtlbench.cards import ModelConfig
    from mtlbench.profile import measure_speed, profile_method

    loaded = _plugins()
    try:
        names = loaded.select_methods(methods)
        device = _device(device)
    except (UnknownNameError, ProtocolError) as exc:
        _fail(str(exc))
    records = []
    for number, name in enumerate(names, start=1):
        card = loaded.methods.get(name)
        config = ModelConfig(image_size=size, in_channels=card.in_channels)
        try:
            with err_console.status(f"Profiling {name} ({number}/{len(names)})…"):
                prof = profile_method(card, card.build(config), size)
                fast = (measure_speed(card.build(config), size, device, batch_size,
                                      in_channels=card.in_channels) if speed else None)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not hide the others
            err_console.print(f"[red]{name} (plugin {loaded.methods.owner(name)}) could not be "
                              f"profiled:[/] {escape(str(exc))}")
            continue
        published = next((d for d in card.published.values() if "gmacs_paper" in d), {})
        records.append({
            "method": name, "size": size, "params_m": prof.mparams, "gflops": prof.gflops,
            "gmacs": prof.gmacs, "paper_convention_params_m": prof.paper_mparams,
            "paper_convention_gmacs": prof.paper_gmacs,
            "published_params_m": (published.get("mparams_paper", (None,))[0]
                                   if size == 256 else None),
            "published_gmacs": (published.get("gmacs_paper", (None,))[0]
                                if size == 256 else None),
            "device": fast.device if fast else None,
            "latency_ms": fast.latency_ms if fast else None,
            "train_images_per_s": fast.train_images_per_s if fast else None,
            "train_batch_size": fast.batch_size if fast else None})
    fmt = "json" if as_json else fmt
    if fmt == "json":
        click.echo(json.dumps(records, indent=1))
        return
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(records[0]) if records else ["method"])
        writer.writeheader()
        writer.writerows(records)
        click.echo(buf.getvalue(), nl=False)
        return

    def num(value) -> str:
        return "–" if value is None else f"{value:.2f}"

    table = Table(title=f"Complexity at {size}×{size} (batch 1)"
                        + (f" and speed on {device}" if speed else ""),
                  caption="GFLOPs: FlopCounterMode, 2 per multiply-add of convolutions, "
                          "matrix products, attention and the methods' own operators. GMACs: "
                          "thop's rules on every layer (BatchNorm and upsampling included, "
                          "attention's products not). Paper convention: thop itself on the "
                          "method's original code, with the submodules it registered twice "
                          "counted twice and layer subclasses skipped (spec §7). "
                          "Published values are for 256² only. Latency: one "
                          f"forward pass at batch 1; train: images/s at batch {batch_size}.")
    columns = ["method", "params (M)", "GFLOPs", "GMACs", "paper-conv. params (M)",
               "paper-conv. GMACs", "published params (M)", "published GMACs"]
    if speed:
        columns += ["latency (ms)", "train img/s"]
    for col in columns:
        table.add_column(col, justify="right" if col != "method" else "left")
    for r in records:
        cells = [r["method"], num(r["params_m"]), num(r["gflops"]), num(r["gmacs"]),
                 num(r["paper_convention_params_m"]), num(r["paper_convention_gmacs"]),
                 num(r["published_params_m"]), num(r["published_gmacs"])]
        if speed:
            cells += [f"{r['latency_ms']:.1f}", f"{r['train_images_per_s']:.1f}"]
        table.add_row(*cells)
    console.print(table)


if __name__ == "__main__":
    main()

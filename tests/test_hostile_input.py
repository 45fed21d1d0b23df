"""Hostile and broken input (issue 18): nothing is read outside the data, the CI gate cannot be
fooled, a damaged store costs no work, and every bad input gets a message, exit 2, no
traceback. Tests of permissions run their command without root's privileges (CI runs as root,
where permissions do not bite)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from conftest import folder_dataset, tiny_run
from mtlbench.cli import main
from mtlbench.store import STORE_NAME, Store

BASELINE = Path(__file__).parents[1] / "benchmarks" / "baselines" / "smoke-synthetic.json"


def text_of(result) -> str:
    return " ".join(result.output.split())


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def unprivileged(command: list[str]) -> list[str]:
    """``command`` run without root's capabilities, so file permissions apply (as for any user).
    A non-root user runs it as it is."""
    if os.geteuid() != 0:
        return command
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be tested")
    return ["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all",
            *command]


def run_unprivileged(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(unprivileged([sys.executable, "-m", "mtlbench", *args]),
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MTLBENCH_LOAD_PLUGINS": "mtlbench"})


def plan_only(root: Path, out: Path, *extra: str):
    """`mtlbench run` on a folder dataset; with bad input it stops while planning."""
    return cli("run", "--dataset", "folder", "--data-root", str(root), "--methods", "clsnet",
               "--folds", "0", "--set", "image_size=32", "--set", "epochs=1", "--out", str(out),
               *extra)


# --- nothing is read outside the data folder --------------------------------------------------

@pytest.mark.parametrize("case_id", ["../../outside/secret", "../outside_images/secret",
                                     "/etc/passwd", "sub/../../../outside/secret"])
def test_a_case_id_cannot_reach_outside_its_folder(tmp_path, case_id):
    root = folder_dataset(tmp_path / "data", n=10)
    (tmp_path / "outside").mkdir()
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "outside" / "secret.png")
    with open(root / "labels.csv", "a") as f:
        f.write(f"{case_id},benign\n")
    check = cli("data", "check", "folder", "--data-root", str(root))
    assert check.exit_code == 1 and "leaves the folder" in text_of(check), check.output
    run = plan_only(root, tmp_path / "run")
    assert run.exit_code == 2 and "leaves the folder" in text_of(run), run.output
    assert "Traceback" not in run.output and not (tmp_path / "run" / "checkpoints").exists()


def test_a_link_inside_the_folder_cannot_lead_outside_but_the_folder_may_be_a_link(tmp_path):
    real = folder_dataset(tmp_path / "elsewhere" / "data", n=10)
    (tmp_path / "secret.png").write_bytes((real / "images" / "c0.png").read_bytes())
    linked_root = tmp_path / "data"
    linked_root.symlink_to(real, target_is_directory=True)  # a user's data root often is
    assert cli("data", "check", "folder", "--data-root", str(linked_root)).exit_code == 0
    (real / "images" / "c0.png").unlink()
    (real / "images" / "c0.png").symlink_to(tmp_path / "secret.png")
    check = cli("data", "check", "folder", "--data-root", str(linked_root))
    assert check.exit_code == 1 and "outside" in text_of(check), check.output


@pytest.mark.parametrize("pattern, message", [
    ("{id.__class__.__name__}.png", "the field {id.__class__.__name__} is not allowed"),
    ("{0}.png", "the field {0} is not allowed"),
    ("{foo}.png", "the field {foo} is not allowed"),
    ("{id!r}.png", "the field {id!r} is not allowed"),
    ("{id:>10}.png", "the field {id:>10} is not allowed"),
    ("{id.png", "expected '}' before end of string"),
    ("mask.png", "it has no {id}"),
])
def test_patterns_are_literal_text_with_the_one_field_id(tmp_path, pattern, message):
    root = folder_dataset(tmp_path / "data", n=10)
    for command in (["data", "check"], ["data", "audit"]):
        result = cli(*command, f"folder:mask_pattern={pattern}", "--data-root", str(root))
        assert result.exit_code == 2 and message in text_of(result), result.output
    run = cli("run", "--dataset", f"folder:image_pattern={pattern}", "--data-root", str(root),
              "--out", str(tmp_path / "run"))
    assert run.exit_code == 2 and message in text_of(run), run.output
    assert "Traceback" not in run.output


def test_a_pattern_around_the_id_still_works(tmp_path):
    root = folder_dataset(tmp_path / "data", n=10)
    for path in (root / "masks").iterdir():
        path.rename(path.with_name(f"mask_{path.stem}{{x}}.png"))
    result = cli("data", "check", "folder:mask_pattern=mask_{id}{{x}}.png", "--data-root",
                 str(root))
    assert result.exit_code == 0, result.output


# --- the CI gate cannot be fooled ---------------------------------------------------------------

def baseline_with(tmp_path: Path, name: str, edit) -> Path:
    data = json.loads(BASELINE.read_text())
    edit(data)
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_a_nan_metric_in_the_current_run_is_a_regression(tmp_path):
    def nan_acc(data):
        data["strict"][1]["acc_mean"] = float("nan")

    current = baseline_with(tmp_path, "current.json", nan_acc)
    result = cli("compare", str(current), str(BASELINE))
    assert result.exit_code == 1 and "REGRESSION (not finite)" in result.output, result.output


@pytest.mark.parametrize("args", [["--tolerance", "nan"], ["--tolerance-for", "acc=nan"],
                                  ["--tolerance", "inf"], ["--tolerance", "-1"],
                                  ["--tolerance-for", "acc=-0.5"],
                                  ["--tolerance-for", "nosuch=1"]])
def test_a_tolerance_that_would_disable_the_gate_is_refused(tmp_path, args):
    def drop_acc(data):
        data["strict"][1]["acc_mean"] -= 48  # a 48-point drop must never pass

    current = baseline_with(tmp_path, "current.json", drop_acc)
    result = cli("compare", str(current), str(BASELINE), *args)
    assert result.exit_code == 2, result.output
    assert "tolerance" in text_of(result) and "Traceback" not in result.output


@pytest.mark.parametrize("content, message", [
    ("[]", "the baseline has no leaderboard rows"),
    ('{"strict": []}', "the baseline has no leaderboard rows"),
    ("", "not an mtlbench store"),
])
def test_an_empty_baseline_is_an_error_and_is_not_changed(tmp_path, content, message):
    path = tmp_path / ("baseline.json" if content else "baseline.sqlite")
    path.write_text(content)
    result = cli("compare", str(BASELINE), str(path))
    assert result.exit_code == 2 and message in text_of(result), result.output
    assert path.read_text() == content  # compare never creates or changes what it reads
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["strict"][0].pop("dataset"), "'dataset' is missing or not a string"),
    (lambda d: d["strict"][0].update(dice_mean=10 ** 400), "is too large to be a metric"),
    (lambda d: d["strict"][0].update(dice_mean="high"), "dice_mean = 'high' is not a number"),
    (lambda d: d["strict"][0].update(method=7), "'method' is missing or not a string"),
])
def test_broken_leaderboard_records_are_refused_by_record(tmp_path, edit, message):
    path = baseline_with(tmp_path, "broken.json", edit)
    for args in ([str(path), str(BASELINE)], [str(BASELINE), str(path)]):
        result = cli("compare", *args)
        assert result.exit_code == 2 and message in text_of(result), result.output
        assert "record 1" in text_of(result) and "Traceback" not in result.output


# --- stores: read-only readers, damaged stores, no lost result -----------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A run folder with two finished trials (clsnet, tiny, folds 0 and 1)."""
    return tiny_run(tmp_path_factory.mktemp("finished") / "run", "clsnet", "0,1")


def read_only_copy(run: Path, tmp_path: Path) -> Path:
    """The run folder copied, read-only for a user without root's privileges; without the
    store's -shm file (a read-only reader may leave one), which SQLite must then create to read
    a WAL store in place, and cannot."""
    copy = tmp_path / "ro-run"
    shutil.copytree(run, copy)
    (copy / f"{STORE_NAME}-shm").unlink(missing_ok=True)
    for path in copy.rglob("*"):
        path.chmod(0o555 if path.is_dir() else 0o444)
    copy.chmod(0o555)
    return copy


def test_a_read_only_store_is_read_by_leaderboard_report_and_compare(finished_run, tmp_path):
    copy = read_only_copy(finished_run, tmp_path)
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    try:
        board = run_unprivileged("leaderboard", "--out", str(copy), "--format", "markdown")
        assert board.returncode == 0, board.stderr
        assert "| clsnet |" in board.stdout
        report = run_unprivileged("report", str(copy), "--out", str(tmp_path / "report"))
        assert report.returncode == 0, report.stderr
        gate = run_unprivileged("compare", str(copy), str(copy / STORE_NAME))
        assert gate.returncode == 0, gate.stderr
        in_place = run_unprivileged("report", str(copy))  # its default --out is read-only
        assert in_place.returncode == 2, in_place.stderr
        assert "give another folder with --out" in " ".join(in_place.stderr.split())
        assert "Traceback" not in in_place.stderr
        after = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
        assert after == before  # nothing created or changed
    finally:
        for path in [copy, *copy.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)


def test_run_stops_before_training_on_a_read_only_store(finished_run, tmp_path):
    copy = read_only_copy(finished_run, tmp_path)
    try:
        result = run_unprivileged("run", "--methods", "clsnet", "--folds", "2", "--set",
                                  "image_size=32", "--set", "epochs=1", "--out", str(copy))
    finally:
        for path in [copy, *copy.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "cannot be used" in " ".join(
        result.stderr.split()) or "cannot take results" in " ".join(result.stderr.split())


def damage(path: Path, offset: int, length: int = 64) -> None:
    data = bytearray(path.read_bytes())
    data[offset:offset + length] = b"\xff" * length
    path.write_bytes(bytes(data))


def test_a_damaged_store_stops_leaderboard_and_run_with_a_message(finished_run, tmp_path):
    copy = tmp_path / "damaged"
    shutil.copytree(finished_run, copy)
    store = copy / STORE_NAME
    damage(store, 4096, store.stat().st_size - 8192)  # every page but the first and last
    board = cli("leaderboard", "--out", str(copy))
    assert board.exit_code == 2, board.output
    assert "damaged" in text_of(board) or "not a readable" in text_of(board)
    run = cli("run", "--methods", "clsnet", "--folds", "2", "--set", "image_size=32",
              "--set", "epochs=1", "--out", str(copy))
    assert run.exit_code == 2, run.output
    assert "Nothing was trained" in text_of(run) or "not a readable" in text_of(run)
    assert "Traceback" not in run.output + board.output
    assert not list((copy / "checkpoints").glob("*.pt"))


def test_a_result_the_store_cannot_take_is_kept_and_imported_next_time(tmp_path, monkeypatch):
    out = tmp_path / "run"
    args = ["run", "--methods", "clsnet", "--folds", "0", "--set", "image_size=32", "--set",
            "epochs=1", "--set", "precision=fp32", "--device", "cpu", "--out", str(out)]

    def broken(self, result):
        raise sqlite3.DatabaseError("database disk image is malformed")

    with monkeypatch.context() as patch:
        patch.setattr(Store, "record", broken)
        first = cli(*args)
    assert first.exit_code == 1, first.output
    assert "nothing trained is lost" in text_of(first) and "Traceback" not in first.output
    (kept,) = (out / "results").glob("*.json")
    second = cli(*args)
    assert second.exit_code == 0, second.output
    assert "1 already finished" in text_of(second)  # imported, not trained again
    with Store.read(out) as store:
        assert [t["method"] for t in store.trials()] == ["clsnet"]


# --- messages instead of tracebacks -------------------------------------------------------------

@pytest.mark.parametrize("edit, message", [
    (lambda p: p.write_text(p.read_text() + "c99\n"), "the row has fewer"),
    (lambda p: p.write_text(p.read_text() + "c98,benign,extra\n"), "the row has more"),
    (lambda p: p.write_text(p.read_text() + ",benign\n"), "the id (id) is empty"),
    (lambda p: p.write_text(p.read_text() + "c1,malignant\n"), "the id 'c1' is listed twice"),
    (lambda p: p.write_text(p.read_text() + "c\x00x,benign\n"), "holds a control character"),
])
def test_bad_csv_rows_are_named_by_line(tmp_path, edit, message):
    root = folder_dataset(tmp_path / "data", n=10)
    edit(root / "labels.csv")
    check = cli("data", "check", "folder", "--data-root", str(root))
    assert check.exit_code == 1 and message in text_of(check), check.output
    audit = cli("data", "audit", "folder", "--data-root", str(root))
    assert audit.exit_code == 2 and message in text_of(audit), audit.output
    run = plan_only(root, tmp_path / "run")
    assert run.exit_code == 2 and message in text_of(run), run.output
    assert "Traceback" not in check.output + audit.output + run.output


def test_too_few_cases_for_the_folds_is_said_before_training(tmp_path):
    root = folder_dataset(tmp_path / "data", n=1)
    run = plan_only(root, tmp_path / "run")
    assert run.exit_code == 2 and "too few for 5 folds" in text_of(run), run.output


def test_an_out_folder_that_cannot_be_used_is_named(tmp_path):
    (tmp_path / "afile").write_text("x")
    as_file = cli("run", "--out", str(tmp_path / "afile"))
    assert as_file.exit_code == 2 and "a file of that name exists" in text_of(as_file)
    too_long = cli("run", "--out", str(tmp_path / ("x" * 300)))
    assert too_long.exit_code == 2 and "cannot be used" in text_of(too_long), too_long.output
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = run_unprivileged("run", "--out", str(locked / "run"))
    finally:
        locked.chmod(0o755)
    assert result.returncode == 2 and "cannot be used" in " ".join(result.stderr.split()), \
        result.stderr
    assert "Traceback" not in as_file.output + too_long.output + result.stderr


def test_an_unreadable_class_folder_is_named(tmp_path):
    root = tmp_path / "busi" / "Dataset_BUSI_with_GT"
    for name in ("benign", "malignant"):
        (root / name).mkdir(parents=True)
        image = np.zeros((40, 40), np.uint8)
        Image.fromarray(image).save(root / name / f"{name} (1).png")
        Image.fromarray(image).save(root / name / f"{name} (1)_mask.png")
    (root / "malignant").chmod(0)
    try:
        result = run_unprivileged("data", "check", "busi", "--data-root", str(tmp_path / "busi"))
    finally:
        (root / "malignant").chmod(0o755)
    text = " ".join((result.stdout + result.stderr).split())
    assert result.returncode in (1, 2) and "Traceback" not in text, text
    assert "malignant" in text and "permission denied" in text.lower()


@pytest.mark.parametrize("args, message", [
    (["--folds", ","], "expected fold numbers like 0,1,2"),
    (["--set", "lr=nan"], "lr=nan must be a finite number"),
    (["--set", "cls_weight=nan"], "cls_weight=nan must be a finite number"),
    (["--methods", "acsnet", "--set", "lossnet_weight=nan"], "must be a finite number"),
])
def test_values_that_used_to_pass_silently_are_refused(tmp_path, args, message):
    result = cli("run", *args, "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and message in text_of(result), result.output
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_link_loop_is_not_called_a_missing_folder(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    result = cli("data", "check", "folder", "--data-root", str(tmp_path / "a"))
    assert result.exit_code == 2 and "loop of links" in text_of(result), result.output


def test_file_names_are_printed_as_they_are(tmp_path):
    root = folder_dataset(tmp_path / "data", n=10)
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(root / "images" / "scan:x:01.png")
    result = cli("data", "check", "folder", "--data-root", str(root))
    assert "scan:x:01.png" in result.output and "❌" not in result.output, result.output


def test_a_checkpoint_of_the_right_trial_with_the_wrong_tensors_is_not_blamed_on_the_method(
        tmp_path):
    args = ["run", "--methods", "clsnet", "--folds", "0", "--set", "image_size=32", "--set",
            "epochs=2", "--set", "precision=fp32", "--device", "cpu", "--keep-checkpoints",
            "--out", str(tmp_path / "run")]
    assert cli(*args).exit_code == 0
    with Store.read(tmp_path / "run") as store:
        (trial,) = store.trials()
    path = tmp_path / "run" / "checkpoints" / f"{trial['trial_id']}.pt"
    payload = torch.load(path, weights_only=True)
    payload["model"] = {k: v[..., :1] if v.ndim else v for k, v in payload["model"].items()}
    torch.save(payload, path)
    with sqlite3.connect(tmp_path / "run" / STORE_NAME) as db:  # make the trial run again
        db.execute("DELETE FROM trials")
    result = cli(*args)
    assert result.exit_code == 1, result.output
    text = text_of(result)
    assert "contents do not fit" in text and "the method is not at fault" in text
    assert "delete it to restart this trial" in text


def test_a_wal_store_with_unmerged_writes_in_a_read_only_folder_is_read_whole(tmp_path):
    """The -wal file holds trials the main file does not have yet (a writer is still open):
    read in place that needs a -shm file the folder cannot take, so the reader reads a
    temporary copy of both, and misses nothing."""
    from test_store import result

    source = tmp_path / "live"
    writer = Store(source / STORE_NAME)
    try:
        writer.record(result("m", fold=0))
        writer.record(result("m", fold=1))
        wal = source / f"{STORE_NAME}-wal"
        assert wal.stat().st_size > 0  # not merged into the main file yet
        folder = tmp_path / "ro"
        folder.mkdir()
        for name in (STORE_NAME, wal.name):
            shutil.copyfile(source / name, folder / name)
    finally:
        writer.close()
    for path in (*folder.iterdir(), folder):
        path.chmod(0o555 if path.is_dir() else 0o444)
    script = ("import sys; from mtlbench.store import Store\n"
              "with Store.read(sys.argv[1]) as s: print(sorted(t['trial_id'] for t in "
              "s.trials()))")
    try:
        done = subprocess.run(unprivileged([sys.executable, "-c", script, str(folder)]),
                              capture_output=True, text=True, timeout=120)
        files = sorted(p.name for p in folder.iterdir())
    finally:
        folder.chmod(0o755)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['m-0', 'm-1']"
    main_file_only = sqlite3.connect((folder / STORE_NAME).as_uri() + "?immutable=1", uri=True)
    try:  # what a reader of the main file alone would have missed
        assert main_file_only.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0 \
            or main_file_only.execute("SELECT count(*) FROM trials").fetchone()[0] < 2
    finally:
        main_file_only.close()
    assert files == [STORE_NAME, f"{STORE_NAME}-wal"]  # nothing created there

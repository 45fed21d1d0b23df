"""One failing trial never sinks a run; bad input gets a clear error naming the thing.

The failing methods come from a real third-party plugin found through its entry point, and run
through the real CLI into the real SQLite store.
"""

import importlib
import json
import os
import pickle
import socket
import sqlite3
import textwrap

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from conftest import folder_dataset
from mtlbench.cli import main
from mtlbench.plugins import load_plugins
from mtlbench.protocol import get_protocol
from mtlbench.trial import TrialSpec

TINY = ["--folds", "0", "--set", "image_size=32", "--set", "epochs=1", "--set",
        "precision=fp32", "--device", "cpu"]

FAILING_PLUGIN = textwrap.dedent('''
    """A third-party plugin with one good method and one for each way a trial can fail."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from mtlbench.cards import MethodCard
    from mtlbench.hookspecs import hookimpl


    class Net(nn.Module):
        def __init__(self, num_classes, how):
            super().__init__()
            self.how, self.steps = how, 0
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.seg = nn.Conv2d(8, 1, 1)
            self.cls = nn.Linear(8, num_classes)

        def forward(self, x):
            self.steps += self.training
            if self.how == "oom":
                raise torch.cuda.OutOfMemoryError(
                    "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.19 GiB total)")
            if self.how == "raise":
                raise ValueError("the relfail decoder broke")
            h = self.body(x)
            out = {"seg": self.seg(h), "cls": self.cls(h.mean((2, 3)))}
            if self.how == "nan" and self.steps > 1:  # fine for one step, then NaN
                out = {k: v * float("nan") for k, v in out.items()}
            if self.how == "naneval" and not self.training:  # as if the last step diverged
                out = {k: v * float("nan") for k, v in out.items()}
            if self.how == "smallseg":
                out["seg"] = F.avg_pool2d(out["seg"], 2)
            if self.how == "nocls":
                del out["cls"]
            return out


    @hookimpl
    def mtlbench_register_methods(register):
        for how in ("good", "nan", "naneval", "oom", "raise", "smallseg", "nocls"):
            register(MethodCard(name=f"rel-{how}", build=lambda c, how=how: Net(c.num_classes,
                                                                                how),
                                tasks=frozenset({"seg", "cls"}), family="multi-task",
                                description="reliability test method"))
''')


@pytest.fixture
def failing_site(tmp_path, monkeypatch):
    """The plugin above and a plugin that fails to import, both installed through entry points
    in one distribution on sys.path."""
    site = tmp_path / "site"
    info = site / "mtlbench_relfail-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mtlbench-relfail\n"
                                   "Version: 0.1\n")
    (info / "entry_points.txt").write_text("[mtlbench]\nrelfail = mtlbench_relfail\n"
                                           "relbroken = mtlbench_relbroken\n")
    (site / "mtlbench_relfail.py").write_text(FAILING_PLUGIN)
    (site / "mtlbench_relbroken.py").write_text(
        "raise ImportError('relbroken needs the package nosuchdep')\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("MTLBENCH_LOAD_PLUGINS", "mtlbench,relfail,relbroken")
    importlib.invalidate_caches()
    return site


def text_of(result) -> str:
    return " ".join(result.output.split())


def stored_trials(run_dir) -> dict[str, tuple[str, str]]:
    """method -> (status, error) from the run's SQLite store."""
    db = sqlite3.connect(run_dir / "mtlbench.sqlite")
    try:
        return {m: (s, e) for m, s, e in db.execute("SELECT method, status, error FROM trials")}
    finally:
        db.close()


def test_failing_trials_are_recorded_and_the_others_finish(failing_site, tmp_path):
    methods = "rel-good,rel-nan,rel-naneval,rel-oom,rel-raise,rel-smallseg,rel-nocls"
    result = CliRunner().invoke(main, ["run", "--methods", methods, *TINY,
                                       "--out", str(tmp_path / "run")])
    text = text_of(result)
    assert result.exit_code == 1, result.output
    # the plugin that cannot be imported is named; the other plugin's methods still ran
    assert "plugin 'relbroken' failed" in text and "nosuchdep" in text
    trials = stored_trials(tmp_path / "run")
    assert set(trials) == set(methods.split(","))
    assert trials["rel-good"] == ("finished", "")
    assert {m for m, (status, _) in trials.items() if status == "failed"} == \
        set(methods.split(",")) - {"rel-good"}
    nan = trials["rel-nan"][1]
    assert "method 'rel-nan' (plugin 'relfail'): training loss became nan at epoch 0" in nan
    assert "non-finite: " in nan and "total" in nan
    assert "'seg' outputs on the test fold are NaN/inf after training" in \
        trials["rel-naneval"][1]
    oom = trials["rel-oom"][1]
    assert "'rel-oom' ran out of memory on cpu at batch size 8" in oom
    assert "CUDA out of memory. Tried to allocate 20.00 GiB" in oom
    assert "--set batch_size=4" in oom
    raised = trials["rel-raise"][1]
    assert raised.startswith("method 'rel-raise' raised ValueError: the relfail decoder broke")
    assert "mtlbench_relfail.py" in raised  # the traceback reaches the plugin's own frame
    assert "'seg' must be (8, 1, 32, 32), got (8, 1, 16, 16)" in trials["rel-smallseg"][1]
    assert "solves 'cls' but forward returned keys ['seg']" in trials["rel-nocls"][1]
    # the summary: counts, one line per failed trial, what to do; the leaderboard has the good one
    assert "Summary: 1 trial(s) finished, 6 failed" in text
    assert "6 trial(s) failed:" in text
    for method in methods.split(",")[1:]:
        assert f"{method} fold 0: " in text
    assert "run the same command again" in text
    board = json.loads((tmp_path / "run" / "leaderboard.json").read_text())
    assert [row["method"] for row in board["strict"]] == ["rel-good"]


def _spec_of_cli_run(run_dir, method: str) -> TrialSpec:
    """The spec `mtlbench run --methods METHOD` with TINY makes for fold 0 on synthetic."""
    protocol = get_protocol("smoke", "synthetic", {"image_size": "32", "epochs": "1",
                                                   "precision": "fp32"})
    return TrialSpec("synthetic", method, 0, protocol, str(run_dir))


class _Evil:
    """Unpickling this runs a shell command that creates MARKER."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


@pytest.mark.parametrize("writer", ["pickle-2", "pickle-5", "torch.save"])
def test_a_crafted_pickle_in_a_checkpoint_path_is_refused(failing_site, tmp_path,
                                                          writer):
    run_dir, marker = tmp_path / "run", tmp_path / "MARKER"
    path = _spec_of_cli_run(run_dir, "rel-good").checkpoint_path
    path.parent.mkdir(parents=True)
    payload = {"trial_id": path.stem, "model": _Evil(marker)}
    if writer.startswith("pickle"):
        path.write_bytes(pickle.dumps(payload, protocol=int(writer[-1])))
    else:
        torch.save(payload, path)
    result = CliRunner().invoke(main, ["run", "--methods", "rel-good", *TINY, "--out",
                                       str(run_dir)])
    assert result.exit_code == 1, result.output
    assert "1 resuming from a checkpoint" in text_of(result)  # the file was taken as its own
    assert not marker.exists()
    status, error = stored_trials(run_dir)["rel-good"]
    assert status == "failed"
    assert f"checkpoint {path} was refused" in error
    if writer != "pickle-5":  # torch stops at protocol 5's first unknown opcode, before it
        assert "posix.system" in error
    assert "delete it" in error and "--out" in error
    assert "weights_only" not in error  # torch's advice to load it unsafely is not passed on
    assert path.exists()  # the user decides what to do with it


def test_a_checkpoint_of_another_trial_names_both_and_the_file(failing_site, tmp_path):
    """A checkpoint copied to another trial's path (here fold 0's as fold 1's) is refused."""
    run_dir = tmp_path / "run"
    first = CliRunner().invoke(main, ["run", "--methods", "rel-good", *TINY, "--out",
                                      str(run_dir), "--keep-checkpoints",
                                      "--checkpoint-every", "0"])
    assert first.exit_code == 0, first.output
    fold0 = _spec_of_cli_run(run_dir, "rel-good")
    fold1 = TrialSpec("synthetic", "rel-good", 1, fold0.protocol, str(run_dir))
    fold0.checkpoint_path.rename(fold1.checkpoint_path)  # e.g. copied in by hand
    result = CliRunner().invoke(main, ["run", "--methods", "rel-good", *TINY[2:], "--folds",
                                       "1", "--out", str(run_dir)])
    assert result.exit_code == 1, result.output
    status, error = stored_trials(run_dir)["rel-good"]
    assert status == "failed"
    assert f"checkpoint {fold1.checkpoint_path} belongs to trial {fold0.trial_id!r} " \
           f"(rel-good · synthetic · fold 0, protocol {fold0.protocol.hash})" in error
    assert f"not to {fold1.trial_id!r} (rel-good · synthetic · fold 1" in error
    assert "delete it to restart this trial from scratch, or use another --out" in error


def test_a_checkpoint_without_a_trial_id_is_refused(failing_site, tmp_path):
    run_dir = tmp_path / "run"
    path = _spec_of_cli_run(run_dir, "rel-good").checkpoint_path
    path.parent.mkdir(parents=True)
    torch.save({"model": {}}, path)
    result = CliRunner().invoke(main, ["run", "--methods", "rel-good", *TINY, "--out",
                                       str(run_dir)])
    assert result.exit_code == 1
    assert "is not a checkpoint of an mtlbench trial" in stored_trials(run_dir)["rel-good"][1]


INJECTION = "x'; DROP TABLE trials;--"


@pytest.mark.parametrize("option", ["--methods", "--dataset"])
def test_names_from_the_command_line_never_reach_sql(failing_site, tmp_path, option):
    run_dir = tmp_path / "run"
    first = CliRunner().invoke(main, ["run", "--methods", "rel-good", *TINY, "--out",
                                      str(run_dir)])
    assert first.exit_code == 0, first.output
    result = CliRunner().invoke(main, ["run", option, INJECTION, *TINY, "--out", str(run_dir)])
    assert result.exit_code == 2
    what = "method" if option == "--methods" else "dataset"
    assert f"unknown {what} " in text_of(result)
    assert stored_trials(run_dir)["rel-good"][0] == "finished"


def test_quotes_and_semicolons_in_names_are_stored_as_data(tmp_path):
    from mtlbench.store import Store
    from mtlbench.trial import TrialResult

    spec = TrialSpec(INJECTION, INJECTION, 0, get_protocol("smoke"), str(tmp_path))
    with Store(tmp_path / "s.sqlite") as store:
        store.record(TrialResult.failed(spec, INJECTION))
        rows = store.trials(status=None)
    assert [(r["dataset"], r["method"], r["error"]) for r in rows] == \
        [(INJECTION, INJECTION, INJECTION)]


def test_pretrained_none_builds_every_method_without_the_network(monkeypatch, tmp_path):
    """With pretrained none nothing asks for weights, and no model or loss looks up a host or
    opens a socket (the guard does catch torchvision's download when weights are asked for)."""
    from mtlbench.cards import ModelConfig
    from mtlbench.knobs import knob_values
    from mtlbench.train import build_loss
    from mtlbench.weights import required_weights

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: refuse(None, *a))
    monkeypatch.delenv("HF_HUB_OFFLINE")  # not saved by the offline switch: nothing asks
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty weights cache
    plugins = load_plugins()
    cards = [plugins.methods.get(n) for n in plugins.methods.names()]
    smoke = get_protocol("smoke", "synthetic", {"pretrained": "none"})
    paper = get_protocol("paper", "busi", {"pretrained": "none"})
    off = {"lossnet_weight": "0", "perceptual_weight": "0"}
    for card in cards:
        assert required_weights(card, smoke, knob_values(card, "smoke")) == []
        assert required_weights(card, paper, knob_values(card, "paper", off)) == []
    unet = plugins.methods.get("unet")
    with pytest.raises(AssertionError, match="network access attempted"):  # the guard works
        unet.build(ModelConfig(num_classes=2, image_size=32, pretrained="imagenet"))
    for card in cards:
        card.build(ModelConfig(num_classes=2, in_channels=card.in_channels, image_size=32,
                               pretrained="none"))
        build_loss(card, smoke)


@pytest.mark.parametrize("args, message", [
    (["--folds", "7"], "--folds 7: protocol 'smoke' has folds 0..4"),
    (["--methods", "clsnet,unte"], "unknown method 'unte'. Did you mean 'unet'"),
    (["--dataset", "synthetic:cases=3"], "dataset 'synthetic' has no option 'cases'"),
    (["--set", "batch_size=1.5"], "batch_size"),
    (["--set", "epochs=-1"], "epochs=-1 must be >= 1"),
    (["--set", "precision=fp8"], "precision"),
    (["--methods", "fcn", "--set", "lossnet_weight=0.5"],
     "--set lossnet_weight: a knob of unet, cunet"),
    (["--methods", "acsnet", "--set", "lossnet_vgg=rnd"],
     "method 'acsnet' (plugin 'acsnet'): knob lossnet_vgg='rnd': must be one of imagenet, random"),
    (["--methods", "acsnet", "--set", "lossnet_weight=x"], "lossnet_weight='x': expected float"),
    (["--set", "gamma=1"], "unknown setting 'gamma'"),
    (["--metods", "unet"], "No such option '--metods'. (Did you mean one of: '--folds', "
                              "'--methods'"),
])
def test_more_bad_input_gets_a_clear_error(tmp_path, args, message):
    result = CliRunner().invoke(main, ["run", *args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert message in text_of(result)
    assert "Traceback" not in result.output
    assert not (tmp_path / "run" / "checkpoints").exists()


def _truncate(path):
    path.write_bytes(path.read_bytes()[:60])


def _not_an_image(path):
    path.write_text("this is a text file, not a PNG\n")


def _wrong_size_mask(path):
    Image.new("L", (12, 12)).save(path.parent.parent / "masks" / path.name)


@pytest.mark.parametrize("damage, problem", [
    (_truncate, "unreadable: cannot read"),
    (_not_an_image, "unreadable: cannot read"),
    (_wrong_size_mask, "is 12×12 but its image"),
])
def test_damaged_files_are_named_by_check_and_run(tmp_path, damage, problem):
    root = folder_dataset(tmp_path / "data")
    damage(root / "images" / "c3.png")
    check = CliRunner().invoke(main, ["data", "check", "folder", "--data-root", str(root),
                                      "--json"])
    assert check.exit_code == 1, check.output
    errors = [p for p in json.loads(check.output)["problems"] if p["severity"] == "error"]
    assert len(errors) == 1 and errors[0]["path"].endswith("c3.png")
    assert problem in errors[0]["message"]
    run = CliRunner().invoke(main, ["run", "--dataset", "folder", "--data-root", str(root),
                                    "--methods", "clsnet", *TINY, "--out",
                                    str(tmp_path / "run")])
    assert run.exit_code == 2, run.output
    assert "c3.png" in text_of(run) and "Traceback" not in run.output
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_labels_that_do_not_match_are_named(tmp_path):
    root = folder_dataset(tmp_path / "data")
    (root / "labels.csv").write_text("id,label\nc0,benign\nc1,cancer\nc9,malignant\n")
    check = CliRunner().invoke(main, ["data", "check", "folder", "--data-root", str(root)])
    assert check.exit_code == 1
    assert "line 3: label 'cancer' is not one of the classes benign, malignant" in \
        text_of(check)
    (root / "labels.csv").write_text("id,label\nc0,benign\nc1,malignant\nc9,malignant\n")
    check = CliRunner().invoke(main, ["data", "check", "folder", "--data-root", str(root),
                                      "--json"])
    problems = {os.path.basename(p["path"]): p for p in json.loads(check.output)["problems"]}
    assert problems["c9.png"]["severity"] == "error"
    assert "listed on line 4 of labels.csv but missing" in problems["c9.png"]["message"]
    assert problems["c2.png"]["severity"] == "warning"  # an image without a label
    run = CliRunner().invoke(main, ["run", "--dataset", "folder", "--data-root", str(root),
                                    "--methods", "clsnet", *TINY, "--out",
                                    str(tmp_path / "run")])
    assert run.exit_code == 2
    assert "c9.png" in text_of(run) and "line 4" in text_of(run)


@pytest.mark.parametrize("dataset, make", [
    ("busi", lambda root: [(root / "Dataset_BUSI_with_GT" / c).mkdir(parents=True)
                           for c in ("benign", "malignant")]),
    ("folder", lambda root: (root / "images").mkdir(parents=True)
     or (root / "labels.csv").write_text("id,label\n")),
])
def test_a_folder_without_cases_is_an_error_for_check_and_run(tmp_path, dataset, make):
    root = tmp_path / "data"
    make(root)
    check = CliRunner().invoke(main, ["data", "check", dataset, "--data-root", str(root)])
    assert check.exit_code == 1, check.output
    assert "0 warning(s)" in text_of(check) and "1 error(s)" in text_of(check)
    run = CliRunner().invoke(main, ["run", "--dataset", dataset, "--data-root", str(root),
                                    "--methods", "clsnet", *TINY, "--out",
                                    str(tmp_path / "run")])
    assert run.exit_code == 2, run.output
    expected = (f"dataset '{dataset}' at {root.resolve()}: no cases found" if dataset == "busi"
                else f"{root.resolve() / 'labels.csv'} lists no cases")
    assert expected in text_of(run)
    assert "Traceback" not in run.output


def test_an_empty_data_folder_says_where_it_looked(tmp_path):
    (tmp_path / "data").mkdir()
    run = CliRunner().invoke(main, ["run", "--dataset", "busi", "--data-root",
                                    str(tmp_path / "data"), "--out", str(tmp_path / "run")])
    assert run.exit_code == 2
    assert f"dataset 'busi' not found: looked in {tmp_path / 'data'} (an empty folder)" in \
        text_of(run)
    assert "Expected layout" in run.output and "--data-root" in run.output


def test_a_store_written_by_a_newer_mtlbench_stops_run_and_leaderboard(tmp_path):
    from mtlbench.store import Store

    run_dir = tmp_path / "run"
    Store.in_run_dir(run_dir).close()
    db = sqlite3.connect(run_dir / "mtlbench.sqlite")
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    for args in (["run", "--methods", "clsnet", *TINY], ["leaderboard"]):
        result = CliRunner().invoke(main, [*args, "--out", str(run_dir)])
        assert result.exit_code == 2, result.output
        text = text_of(result)
        assert f"store {run_dir / 'mtlbench.sqlite'} was written by a newer mtlbench" in text
        assert "upgrade mtlbench" in text and "Traceback" not in result.output
    assert not (run_dir / "checkpoints").exists()

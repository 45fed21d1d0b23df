"""The command line, including a real third-party plugin found through its entry point."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mtlbench.cli import console, main
from mtlbench.runner import run_lock

FAKE_PLUGIN = textwrap.dedent('''
    """A third-party plugin as a user would write it."""
    import os
    import time

    from torch import nn

    from mtlbench.cards import DatasetCard, MethodCard
    from mtlbench.hookspecs import hookimpl


    class FakeNet(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.seg = nn.Conv2d(8, 1, 1)
            self.cls = nn.Linear(8, num_classes)

        def forward(self, x):
            time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
            h = self.body(x)
            return {"seg": self.seg(h), "cls": self.cls(h.mean((2, 3)))}


    @hookimpl
    def mtlbench_register_datasets(register):
        register(DatasetCard(name="fakefiles", classes=("benign", "malignant"),
                             load=lambda root: [], fingerprint=lambda root: "v1",
                             layout="  images/*.png", obtain="from the fake authors"))


    @hookimpl
    def mtlbench_register_methods(register):
        register(MethodCard(name="fakenet", build=lambda config: FakeNet(config.num_classes),
                            tasks=frozenset({"seg", "cls"}), family="multi-task",
                            description="third-party test method"))
''')


@pytest.fixture
def fake_site(tmp_path):
    """A folder holding an installed-looking distribution with an ``mtlbench`` entry point."""
    site = tmp_path / "site"
    info = site / "mtlbench_fake-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mtlbench-fake\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mtlbench]\nfake = mtlbench_fake_plugin\n")
    (site / "mtlbench_fake_plugin.py").write_text(FAKE_PLUGIN)
    return site


def cli_env(site: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MTLBENCH_LOAD_PLUGINS"}
    env.update(PYTHONPATH=str(site), COLUMNS="200", **extra)
    return env


def mtlbench(args, env, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "mtlbench", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def test_entry_point_plugin_is_discovered_in_process(fake_site, monkeypatch):
    import importlib

    from mtlbench.plugins import load_plugins

    monkeypatch.syspath_prepend(str(fake_site))
    monkeypatch.delenv("MTLBENCH_LOAD_PLUGINS")
    importlib.invalidate_caches()
    plugins = load_plugins()
    assert "fakenet" in plugins.methods and plugins.methods.owner("fakenet") == "fake"
    assert plugins.info["fake"].distribution == "mtlbench-fake"
    assert plugins.info["fake"].version == "0.1"
    monkeypatch.setenv("MTLBENCH_LOAD_PLUGINS", "mtlbench")
    assert "fakenet" not in load_plugins().methods
    monkeypatch.setenv("MTLBENCH_LOAD_PLUGINS", "")
    assert len(load_plugins().methods) == 0


def test_third_party_plugin_in_list_plugins_and_a_run(fake_site, tmp_path):
    env = cli_env(fake_site)
    listed = mtlbench(["list", "methods", "--json"], env, tmp_path)
    assert listed.returncode == 0, listed.stderr
    methods = {m["name"]: m for m in json.loads(listed.stdout)}
    assert methods["fakenet"]["plugin"] == "fake" and "unet" in methods
    plugins = json.loads(mtlbench(["plugins", "--json"], env, tmp_path).stdout)
    fake = next(p for p in plugins if p["name"] == "fake")
    assert fake["methods"] == ["fakenet"] and fake["version"] == "0.1"

    args = ["run", "--methods", "fakenet", "--folds", "0,1", "--set", "epochs=1",
            "--set", "image_size=32", "--out", "run"]
    done = mtlbench(args, env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Leaderboard" in done.stdout and "fakenet" in done.stdout
    assert (tmp_path / "run" / "leaderboard.md").exists()
    db = sqlite3.connect(tmp_path / "run" / "mtlbench.sqlite")
    assert db.execute("SELECT count(*) FROM trials WHERE status='finished'").fetchone()[0] == 2
    again = mtlbench(args, env, tmp_path)
    assert "0 trial(s) to run, 2 already finished" in again.stdout


def test_broken_plugin_is_named_and_the_others_still_run(fake_site, tmp_path):
    (fake_site / "mtlbench_fake_plugin.py").write_text("raise ImportError('no such thing')\n")
    result = mtlbench(["list", "methods"], cli_env(fake_site), tmp_path)
    assert result.returncode == 0
    assert "plugin 'fake' failed" in result.stderr and "no such thing" in result.stderr
    assert "unet" in result.stdout


def test_missing_data_folder_stops_before_training(fake_site, tmp_path):
    env = cli_env(fake_site, MTLBENCH_DATA=str(tmp_path / "datasets"))
    result = mtlbench(["run", "--dataset", "fakefiles", "--out", "run"], env, tmp_path)
    assert result.returncode == 2
    text = " ".join(result.stderr.split())
    assert f"looked in {tmp_path / 'datasets' / 'fakefiles'}" in text
    assert "--data-root" in text and "from the fake authors" in text
    assert not (tmp_path / "run" / "checkpoints").exists()


def _wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_run_resumes_without_losing_or_repeating_work(fake_site, tmp_path, sig):
    env = cli_env(fake_site, FAKE_SLEEP="0.03")
    args = ["run", "--methods", "fakenet", "--folds", "0,1", "--set", "epochs=12",
            "--set", "image_size=32", "--checkpoint-every", "0", "--out", "run"]
    # A shell that starts CI in the background may ignore SIGINT, and a child would inherit
    # that; restore the default so Python turns Ctrl-C into KeyboardInterrupt as in a terminal.
    proc = subprocess.Popen([sys.executable, "-m", "mtlbench", *args], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for(tmp_path / "run" / "checkpoints", 120)
    deadline = time.time() + 60
    while not list((tmp_path / "run" / "checkpoints").glob("*.pt")):
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130, out + err
        assert "Run the same command again to resume" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    resumed = mtlbench(args, env, tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming from a checkpoint" in resumed.stdout
    db = sqlite3.connect(tmp_path / "run" / "mtlbench.sqlite")
    rows = db.execute("SELECT fold, resumed_from_epoch FROM trials ORDER BY fold").fetchall()
    assert [r[0] for r in rows] == [0, 1]
    assert any(r[1] >= 0 for r in rows), "one trial must have resumed from its checkpoint"
    curves = db.execute("SELECT trial_id, count(DISTINCT epoch) FROM curves GROUP BY trial_id")
    assert [c[1] for c in curves] == [12, 12]


@pytest.mark.parametrize("args, message", [
    (["run", "--methods", "unte"], "unknown method 'unte'. Did you mean 'unet'"),
    (["run", "--dataset", "bussi"], "unknown dataset 'bussi'"),
    (["run", "--protocol", "smok"], "unknown protocol 'smok'. Did you mean 'smoke'"),
    (["run", "--set", "epochs"], "expected KEY=VALUE"),
    (["run", "--set", "lr=-1"], "lr=-1.0 must be > 0"),
    # bf16 asked for explicitly: refused with --compile on every CPU (auto is fp32 on some)
    (["run", "--device", "cpu", "--compile", "--set", "precision=bf16"],
     "--set precision=fp32 or leave out --compile"),
])
def test_bad_input_gets_a_clear_error(tmp_path, args, message):
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_missing_pretrained_weights_stop_the_run_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    started = time.time()
    result = CliRunner().invoke(main, ["run", "--protocol", "paper", "--methods", "unet",
                                       "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "pretrained weights unavailable" in text and "resnet18-f37072fd.pth" in text
    assert "--pretrained none" in text
    assert time.time() - started < 10
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_second_run_on_the_same_folder_stops_at_once(tmp_path):
    with run_lock(tmp_path / "run"):
        result = CliRunner().invoke(main, ["run", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "is in use by" in " ".join(result.output.split())


def test_leaderboard_without_store_says_what_to_do(tmp_path):
    result = CliRunner().invoke(main, ["leaderboard", "--out", str(tmp_path / "none")])
    assert result.exit_code == 2 and "mtlbench run" in result.output


def test_list_protocols_and_profile(tmp_path):
    listed = CliRunner().invoke(main, ["list", "protocols", "--json"])
    names = [p["name"] for p in json.loads(listed.output)]
    assert names == ["paper", "smoke"]
    prof = CliRunner().invoke(main, ["profile", "--methods", "clsnet", "--size", "64", "--json"])
    record = json.loads(prof.output)[0]
    assert record["method"] == "clsnet" and record["params_m"] == pytest.approx(11.31, abs=0.01)


def test_missing_lossnet_weights_stop_the_run_and_say_how_to_go_on(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    result = CliRunner().invoke(main, ["run", "--protocol", "paper", "--methods", "cunet",
                                       "--set", "pretrained=none",
                                       "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "vgg16-397923af.pth" in text and "resnet18" not in text
    assert "--set lossnet_vgg=random" in text and "--set lossnet_weight=0" in text
    assert "needed by method 'cunet'" in text
    assert not (tmp_path / "run" / "checkpoints").exists()
    # a classification-only method needs no LossNet, so nothing is missing
    from mtlbench.plugins import load_plugins
    from mtlbench.protocol import get_protocol
    from mtlbench.weights import required_weights

    loaded = load_plugins()
    paper = get_protocol("paper", "busi", {"pretrained": "none"})
    acsnet = loaded.methods.get("acsnet")
    assert required_weights(loaded.methods.get("clsnet"), paper) == []
    assert [w.name for w in required_weights(acsnet, paper, {"lossnet_weight": 0.2,
                                                             "lossnet_vgg": "imagenet"})] == [
        "torchvision/vgg16-imagenet"]
    code = get_protocol("paper", "busi", {"loss_mode": "code"})
    assert [w.name for w in required_weights(acsnet, code, {"lossnet_weight": 0.2,
                                                            "lossnet_vgg": "imagenet"})] == [
        "torchvision/resnet18-imagenet"]


def test_default_methods_are_a_named_representative_set(tmp_path):
    from mtlbench.cli import _select_methods
    from mtlbench.plugins import load_plugins

    loaded = load_plugins()
    with console.capture() as captured:
        names = _select_methods(loaded, "default")
    assert names == ["unet", "cunet"]
    text = " ".join(captured.get().split())
    assert f"--methods all runs all {len(loaded.main_methods())} methods" in text
    assert "--methods options the 3 variants" in text
    assert _select_methods(loaded, "ablation") == loaded.methods.names()[:10]


def test_speed_options_reach_every_trial_and_do_not_change_its_identity(tmp_path):
    args = ["run", "--methods", "clsnet", "--folds", "0", "--set", "image_size=32", "--set",
            "epochs=1", "--set", "precision=fp32", "--device", "cpu"]
    plain = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "a")])
    fast = CliRunner().invoke(main, [*args, "--channels-last", "on", "--checkpoint-every",
                                     "3600", "--out", str(tmp_path / "b")])
    assert plain.exit_code == 0 and fast.exit_code == 0, plain.output + fast.output
    rows = {}
    for run in ("a", "b"):
        db = sqlite3.connect(tmp_path / run / "mtlbench.sqlite")
        rows[run] = db.execute("SELECT trial_id, env_json FROM trials").fetchone()
        db.close()
    assert rows["a"][0] == rows["b"][0]
    assert json.loads(rows["a"][1])["speed"] == {"channels_last": False, "compile": False,
                                                 "checkpoint_every_s": 0.0}
    assert json.loads(rows["b"][1])["speed"] == {"channels_last": True, "compile": False,
                                                 "checkpoint_every_s": 3600.0}
    bad = CliRunner().invoke(main, [*args, "--checkpoint-every", "-1", "--out",
                                    str(tmp_path / "c")])
    assert bad.exit_code != 0 and "--checkpoint-every -1: must be ≥ 0" in bad.output

"""Kept fold models (--keep-models), `mtlbench predict` and `mtlbench export`, on real runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import tiny_run
from mtlbench.cli import main
from mtlbench.data.fold import load_arrays
from mtlbench.fold_models import build_model, kept_models
from mtlbench.plugins import load_plugins
from mtlbench.predict import Ensemble
from mtlbench.store import Store


@pytest.fixture
def kept(kept_run):
    return kept_run


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A folder of images of other sizes and modes (gray PNG, RGB JPEG, RGBA in a subfolder)
    and a file that is no image."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 70), dtype=np.uint8)).save(folder / "gray.png")
    Image.fromarray(rng.integers(0, 255, (41, 33, 3), dtype=np.uint8)).save(folder / "rgb.jpg")
    (folder / "sub").mkdir()
    Image.fromarray(rng.integers(0, 255, (90, 64, 4), dtype=np.uint8)).save(
        folder / "sub" / "rgba.png")
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_kept_model_carries_its_metadata_and_reproduces_the_stored_predictions(kept):
    with Store.read(kept) as store:
        trials = {t["trial_id"]: t for t in store.trials()}
        models = kept_models(kept)
        assert {m.meta["trial_id"] for m in models} == set(trials)
        model = next(m for m in models if m.fold == 0)
        meta = model.meta
        assert meta["method"] == "cunet" and meta["classes"] == ["benign", "malignant"]
        assert meta["dataset"] == "synthetic" and meta["dtype"] == "fp32"
        assert meta["protocol"]["image_size"] == 32 and meta["mtlbench_version"]
        assert meta["knobs"] == trials[meta["trial_id"]]["knobs"]
        assert trials[meta["trial_id"]]["env"]["kept_model"]["bytes"] == \
            model.path.stat().st_size
        stored = store.image_metrics(meta["trial_id"])
    # Model weights only: no optimizer state, loadable without running code.
    tensors = load_file(model.path)
    assert not any("optimizer" in k or "exp_avg" in k for k in tensors)
    plugins = load_plugins()
    ensemble = Ensemble(plugins, [model])
    card = plugins.datasets.get("synthetic")
    arrays = load_arrays(card, None, 32, None)
    ids = sorted(stored)
    index = [arrays.ids.index(i) for i in ids]
    _, cls = ensemble.probabilities(arrays.images[index])
    expected = np.array([stored[i]["prob_positive"] for i in ids])
    np.testing.assert_allclose(cls[:, 1], expected, atol=1e-4)


def test_fp16_keeps_predictions_within_rounding(kept, tmp_path):
    """The same model kept in half precision predicts what it predicts in full."""
    model = kept_models(kept)[0]
    half = tmp_path / "half.safetensors"
    with safe_open(str(model.path), framework="pt") as handle:
        metadata = handle.metadata()
    meta = json.loads(metadata["mtlbench"])
    meta["dtype"] = "fp16"
    save_file({k: v.half() if v.is_floating_point() else v
               for k, v in load_file(model.path).items()}, half,
              metadata={"mtlbench": json.dumps(meta)})
    assert half.stat().st_size < 0.55 * model.path.stat().st_size
    plugins = load_plugins()
    from mtlbench.fold_models import FoldModel

    x = np.random.default_rng(1).integers(0, 255, (6, 32, 32), dtype=np.uint8)
    seg32, cls32 = Ensemble(plugins, [model]).probabilities(x)
    seg16, cls16 = Ensemble(plugins, [FoldModel(half, meta)]).probabilities(x)
    assert np.abs(cls32 - cls16).max() < 2e-3
    assert np.abs(seg32 - seg16).max() < 2e-3


def test_predict_ensemble_averages_fold_probabilities(kept, images, tmp_path):
    result = invoke("predict", kept, images, "--to", tmp_path / "ens")
    assert result.exit_code == 1, result.output  # the broken file
    assert "broken.png" in result.output and "ensemble of 2 fold models" in result.output
    table = pd.read_csv(tmp_path / "ens" / "predictions.csv")
    assert list(table["name"]) == ["broken", "gray", "rgb", "sub/rgba"]
    assert "cannot read" in table.set_index("name").loc["broken", "error"]
    ok = table[table["error"].isna()].set_index("name")
    for name, size in (("gray", (70, 50)), ("rgb", (33, 41)), ("sub/rgba", (64, 90))):
        with Image.open(tmp_path / "ens" / ok.loc[name, "mask"]) as mask:
            assert mask.size == size and mask.mode == "L"
            assert set(np.unique(np.asarray(mask))) <= {0, 255}
        assert (ok.loc[name, "width"], ok.loc[name, "height"]) == size
    np.testing.assert_allclose(ok["prob_benign"] + ok["prob_malignant"], 1, atol=1e-6)
    folds = []
    for fold in (0, 1):
        assert invoke("predict", kept, images / "gray.png", images / "rgb.jpg", "--fold", fold,
                      "--to", tmp_path / f"f{fold}").exit_code == 0
        folds.append(pd.read_csv(tmp_path / f"f{fold}" / "predictions.csv").set_index("name"))
    mean = (folds[0]["prob_malignant"] + folds[1]["prob_malignant"]) / 2
    np.testing.assert_allclose(ok.loc[["gray", "rgb"], "prob_malignant"], mean, atol=1e-6)
    assert not np.allclose(folds[0]["prob_malignant"], folds[1]["prob_malignant"])


def test_predict_a_registered_dataset_and_bad_choices(kept, tmp_path):
    result = invoke("predict", kept, "--dataset", "synthetic", "--to", tmp_path / "syn")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "syn" / "predictions.csv")
    cases = {c.id: c for c in load_plugins().datasets.get("synthetic").load(None)}
    assert sorted(table["name"]) == sorted(cases)
    for _, row in table.iterrows():
        assert (row["height"], row["width"]) == cases[row["name"]].image.shape
    for args, words in ((["--fold", "3"], "kept folds: 0, 1"),
                        (["--seed", "7"], "kept seeds: 2"),
                        (["--method", "unet"], "kept: cunet"),
                        (["--balancing", "dwa"], "'fixed'")):
        result = invoke("predict", kept, tmp_path, *args, "--to", tmp_path / "x")
        assert result.exit_code == 2 and words in result.output, result.output
    result = invoke("predict", kept, tmp_path / "nothing.png", "--to", tmp_path / "x")
    assert result.exit_code == 2 and "no such file or folder" in result.output


def test_a_run_folder_without_kept_models_says_what_to_do(tmp_path):
    run = tiny_run(tmp_path / "old", "clsnet", "0")
    assert not (run / "models").exists()  # not kept by default
    result = invoke("predict", run, tmp_path, "--to", tmp_path / "p")
    assert result.exit_code == 2
    assert "keeps no trained models" in result.output and "--keep-models" in result.output
    result = invoke("export", run, "--to", tmp_path / "e")
    assert result.exit_code == 2 and "--keep-models" in result.output
    # --keep-models on that folder does not train its finished trial again, and says so
    result = invoke("run", "--methods", "clsnet", "--folds", "0", "--set", "image_size=32",
                    "--set", "epochs=1", "--set", "precision=fp32", "--device", "cpu",
                    "--keep-models", "--out", run)
    assert result.exit_code == 0, result.output
    words = " ".join(result.output.split())
    assert "1 finished trial(s) of this run folder were trained without keeping their models" \
        in words
    assert not (run / "models").exists()


def test_export_then_predict_in_a_fresh_directory(kept, images, tmp_path):
    result = invoke("export", kept, "--to", tmp_path / "exported")
    assert result.exit_code == 0, result.output
    exported = tmp_path / "exported" / "cunet.mtlbench.safetensors"
    fresh = tmp_path / "elsewhere"
    fresh.mkdir()
    (fresh / "model.safetensors").write_bytes(exported.read_bytes())
    (fresh / "in.png").write_bytes((images / "gray.png").read_bytes())
    env = {**os.environ, "MTLBENCH_LOAD_PLUGINS": "mtlbench", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "mtlbench", "predict", "model.safetensors",
                           "in.png", "--to", "out"], cwd=fresh, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr + done.stdout
    there = pd.read_csv(fresh / "out" / "predictions.csv")
    assert invoke("predict", kept, images / "gray.png", "--to", tmp_path / "here").exit_code == 0
    here = pd.read_csv(tmp_path / "here" / "predictions.csv")
    np.testing.assert_allclose(there["prob_malignant"], here["prob_malignant"], atol=1e-6)
    with Image.open(fresh / "out" / "masks" / "in.png") as a, \
            Image.open(tmp_path / "here" / "masks" / "gray.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
    # --fold works on the exported file too
    assert invoke("predict", exported, images / "gray.png", "--fold", "1",
                  "--to", tmp_path / "one").exit_code == 0


def rewrite_header(path: Path, change) -> Path:
    """The exported file at ``path`` with its mtlbench metadata edited by ``change``."""
    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()["mtlbench"])
    change(header)
    save_file(load_file(path), path, metadata={"mtlbench": json.dumps(header)})
    return path


def test_exported_file_of_an_unknown_method_or_newer_mtlbench_is_refused(kept, tmp_path):
    assert invoke("export", kept, "--to", tmp_path).exit_code == 0
    source = tmp_path / "cunet.mtlbench.safetensors"

    def unknown(header):
        for member in header["models"]:
            member.update(method="mynet", plugin="mynet-plugin", plugin_version="1.2")

    other = tmp_path / "other.safetensors"
    other.write_bytes(source.read_bytes())
    rewrite_header(other, unknown)
    result = invoke("predict", other, tmp_path, "--to", tmp_path / "p")
    assert result.exit_code == 2
    assert "'mynet' is not registered here" in result.output
    assert "mynet-plugin" in result.output and "1.2" in result.output
    rewrite_header(source, lambda h: h.update(mtlbench_version="99.0"))
    result = invoke("predict", source, tmp_path, "--to", tmp_path / "p")
    assert result.exit_code == 2
    assert "mtlbench 99.0" in result.output and "install mtlbench >= 99.0" in result.output


def test_kept_weights_that_do_not_fit_are_refused(kept, tmp_path):
    model = kept_models(kept)[0]
    broken = tmp_path / "broken.safetensors"
    tensors = load_file(model.path)
    tensors.pop(next(k for k in tensors if k.endswith(".weight")))
    with safe_open(str(model.path), framework="pt") as handle:
        save_file(tensors, broken, metadata=handle.metadata())
    from mtlbench.fold_models import FoldModel, ModelFileError

    with pytest.raises(ModelFileError, match="do not fit method 'cunet'"):
        build_model(load_plugins(), FoldModel(broken, model.meta))


def test_output_names_never_repeat_nor_lead_out_of_the_output_folder():
    from mtlbench.predict import ImageSource, unique_names

    names = [s.name for s in unique_names([ImageSource("../up"), ImageSource("/abs"),
                                           ImageSource("a"), ImageSource("a")])]
    assert names == ["_/up", "_/abs", "a", "a~2"]


def test_the_ensemble_is_one_method_balancing_and_seed_unless_seeds_are_pooled(tmp_path):
    from mtlbench.fold_models import FoldModel
    from mtlbench.predict import PredictError, select_models

    def model(fold, seed, balancing="fixed", variant=""):
        return FoldModel(tmp_path / f"{fold}{seed}{balancing}", {
            "method": "mynet", "fold": fold, "seed": seed, "balancing": balancing,
            "variant": variant, "dataset": "synthetic", "protocol_hash": "abc",
            "knobs": {"w": variant}})

    models = [model(f, s, b) for f in (0, 1) for s in (3, 7) for b in ("fixed", "dwa")]
    chosen = select_models(models, "mynet")
    assert {(m.fold, m.seed, m.balancing) for m in chosen} == {(0, 3, "fixed"), (1, 3, "fixed")}
    pooled = select_models(models, "mynet", pool_seeds=True, balancing="dwa")
    assert {(m.seed, m.balancing) for m in pooled} == {(3, "dwa"), (7, "dwa")}
    assert len(pooled) == 4
    assert [m.fold for m in select_models(models, "mynet", seed=7, fold=1)] == [1]
    with pytest.raises(PredictError, match="2 settings"):
        select_models([model(0, 3, variant=""), model(0, 3, variant="w=2")], "mynet")

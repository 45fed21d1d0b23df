"""The BUSI loader against the real copy in ../shared/data/busi and small broken copies of it."""

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from mtlbench.data import busi
from mtlbench.data.prepare import prepare_dataset
from mtlbench.plugins import load_plugins

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "busi"
needs_real = pytest.mark.skipif(not (REAL / busi.FOLDER).is_dir(),
                                reason=f"the BUSI copy is not at {REAL} (CI and the team have it)")


@pytest.fixture(scope="module")
def real_cases():
    return busi.load(REAL)


@needs_real
def test_real_busi_counts_and_multi_mask_union(real_cases):
    labels = [c.label for c in real_cases]
    assert (labels.count(0), labels.count(1)) == (437, 210)
    assert sum(c.meta["masks"] > 1 for c in real_cases) == 17
    by_id = {c.id: c for c in real_cases}
    first = {c.id: c for c in busi.load(REAL, multimask="first") if c.meta["masks"] >= 1}
    several = by_id["benign (195)"]  # three masks
    assert several.meta["masks"] == 3
    assert several.mask.sum() > first["benign (195)"].mask.sum()
    assert np.array_equal(by_id["benign (1)"].mask, first["benign (1)"].mask)
    assert all(c.mask.any() and c.image.dtype == np.uint8 for c in real_cases)


@needs_real
def test_real_busi_with_normal_as_third_class():
    cases = busi.load(REAL, include_normal=True)
    normal = [c for c in cases if c.label == 2]
    assert len(cases) == 780 and len(normal) == 133
    assert not any(c.mask.any() for c in normal)


@needs_real
def test_busi_is_registered_and_cached(tmp_path):
    card = load_plugins().datasets.get("busi")
    started = time.perf_counter()
    first = prepare_dataset(card, REAL, 64, tmp_path)
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    second = prepare_dataset(card, REAL, 64, tmp_path)
    second_s = time.perf_counter() - started
    assert first.ids == second.ids and np.array_equal(first.masks, second.masks)
    assert first.images.shape == (647, 64, 64)
    assert second_s < first_s / 5, (first_s, second_s)


def small_copy(tmp_path: Path, names=("benign (1)", "benign (4)", "malignant (1)")) -> Path:
    root = tmp_path / "busi"
    for name in names:
        cls = name.split(" ")[0]
        (root / busi.FOLDER / cls).mkdir(parents=True, exist_ok=True)
        for path in (REAL / busi.FOLDER / cls).glob(f"{name}*.png"):
            if path.stem == name or path.stem.startswith(f"{name}_mask"):
                shutil.copy(path, root / busi.FOLDER / cls / path.name)
    (root / busi.FOLDER / "normal").mkdir()
    return root


@needs_real
def test_small_copy_loads_with_either_root(tmp_path):
    root = small_copy(tmp_path)
    assert [c.id for c in busi.load(root)] == ["benign (1)", "benign (4)", "malignant (1)"]
    assert len(busi.load(root / busi.FOLDER)) == 3


@needs_real
def test_missing_mask_is_named(tmp_path):
    root = small_copy(tmp_path)
    (root / busi.FOLDER / "benign" / "benign (1)_mask.png").unlink()
    with pytest.raises(busi.DatasetLayoutError, match=r"images without a mask: \['benign \(1\)'\]"):
        busi.load(root)


@needs_real
def test_unreadable_image_is_named(tmp_path):
    root = small_copy(tmp_path)
    broken = root / busi.FOLDER / "malignant" / "malignant (1).png"
    broken.write_bytes(broken.read_bytes()[:100])
    with pytest.raises(busi.DatasetLayoutError, match="cannot read .*malignant \\(1\\).png"):
        busi.load(root)


@needs_real
def test_mask_of_another_size_is_named(tmp_path):
    from PIL import Image

    root = small_copy(tmp_path)
    mask = root / busi.FOLDER / "benign" / "benign (1)_mask.png"
    Image.new("L", (10, 10)).save(mask)
    with pytest.raises(busi.DatasetLayoutError, match="benign \\(1\\)_mask.png is 10×10"):
        busi.load(root)


def test_missing_class_folder_shows_layout(tmp_path):
    (tmp_path / busi.FOLDER / "benign").mkdir(parents=True)
    with pytest.raises(busi.DatasetLayoutError, match="malignant is missing"):
        busi.load(tmp_path)


@needs_real
def test_a_run_on_busi_completes_from_the_cli(tmp_path):
    from click.testing import CliRunner

    from mtlbench.cli import main

    result = CliRunner().invoke(main, [
        "run", "--dataset", "busi", "--data-root", str(REAL), "--methods", "clsnet",
        "--folds", "0", "--set", "epochs=1", "--set", "image_size=32",
        "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "busi" in result.output and "clsnet" in result.output
    split = next((tmp_path / "run" / "splits").glob("busi-*.json"))
    assert "benign (1)" in split.read_text()


@needs_real
def test_audit_finds_the_known_duplicates_and_splits_keep_them_together(real_cases):
    from mtlbench.data.audit import audit_cases

    report = audit_cases(real_cases)
    assert ["benign (433)", "malignant (145)"] in report.exact
    labels = {c.id: c.label for c in real_cases}
    cross = {frozenset(p[:2]) for p in report.cross_class_pairs(labels)}
    for pair in (("benign (131)", "malignant (51)"), ("benign (42)", "malignant (51)"),
                 ("benign (399)", "malignant (93)"), ("benign (433)", "malignant (145)")):
        assert frozenset(pair) in cross
    group = {c.id: c.group for c in real_cases}
    assert group["benign (131)"] == group["benign (42)"] == group["malignant (51)"]
    assert group["benign (1)"] != group["benign (2)"]


@needs_real
def test_audit_command_and_leak_free_default_split(tmp_path):
    import json

    from click.testing import CliRunner

    from mtlbench.cli import main
    from mtlbench.data.splits import make_folds

    result = CliRunner().invoke(main, ["data", "audit", "busi", "--data-root", str(REAL),
                                       "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["cases"] == 647 and ["benign (433)", "malignant (145)"] in doc["exact"]
    card = load_plugins().datasets.get("busi")
    arrays = prepare_dataset(card, REAL, 32, tmp_path)
    for fold in make_folds(arrays, 5, "stratified-group", 42):
        inside = {arrays.groups[i] for i in fold}
        outside = {arrays.groups[i] for i in range(len(arrays)) if i not in set(fold)}
        assert not inside & outside
    normal_with_benign = busi.load(REAL, include_normal=True)
    groups = {c.id: c.group for c in normal_with_benign}
    assert groups["benign (437)"] == groups["normal (34)"]


@needs_real
def test_data_check_lists_every_problem_by_file(tmp_path):
    import json

    from click.testing import CliRunner
    from PIL import Image

    from mtlbench.cli import main

    root = small_copy(tmp_path, ("benign (1)", "benign (4)", "benign (2)", "malignant (1)",
                                 "malignant (2)"))
    folder = root / busi.FOLDER
    clean = CliRunner().invoke(main, ["data", "check", "busi", "--data-root", str(root)])
    assert clean.exit_code == 0, clean.output
    assert "benign 3, malignant 2" in clean.output
    (folder / "malignant" / "malignant (1).png").write_bytes(b"not a png")
    Image.new("L", (10, 10)).save(folder / "benign" / "benign (1)_mask.png")
    (folder / "benign" / "benign (2)_mask.png").unlink()
    Image.new("L", (20, 20), 0).save(folder / "benign" / "stray_mask.png")
    mask = folder / "malignant" / "malignant (2)_mask.png"
    Image.fromarray(np.asarray(Image.open(mask).convert("L")) // 2).save(mask)
    result = CliRunner().invoke(main, ["data", "check", "busi", "--data-root", str(root),
                                       "--json"])
    assert result.exit_code == 1
    problems = {(Path(p["path"]).name, p["severity"]): p["message"]
                for p in json.loads(result.output)["problems"]}
    assert "unreadable" in problems[("malignant (1).png", "error")]
    assert "is 10×10 but its image" in problems[("benign (1)_mask.png", "error")]
    assert "has no mask" in problems[("benign (2).png", "error")]
    assert "mask without an image" in problems[("stray_mask.png", "warning")]
    assert "not binary" in problems[("malignant (2)_mask.png", "warning")]


@needs_real
def test_dataset_options_reach_the_loader_and_the_trial_identity(tmp_path):
    from click.testing import CliRunner

    from mtlbench.cli import main
    from mtlbench.data.prepare import DatasetOptionError, lookup_dataset

    plugins = load_plugins()
    card, options = lookup_dataset(plugins.datasets, "BUSI:multimask=first, include_normal=true")
    assert options == {"multimask": "first", "include_normal": "true"}
    arrays = prepare_dataset(card, REAL, 32, tmp_path, options)
    assert arrays.name == "busi:include_normal=true,multimask=first"
    assert arrays.classes == ("benign", "malignant", "normal") and len(arrays) == 780
    with pytest.raises(DatasetOptionError, match="has no option 'normals'; its options: "
                                                 "include_normal, multimask"):
        lookup_dataset(plugins.datasets, "busi:normals=true")
    with pytest.raises(DatasetOptionError, match="expected true or false"):
        prepare_dataset(card, REAL, 32, tmp_path, {"include_normal": "maybe"})
    result = CliRunner().invoke(main, ["run", "--dataset", "busi:multimask=second",
                                       "--data-root", str(REAL), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "choose one of union, first" in result.output

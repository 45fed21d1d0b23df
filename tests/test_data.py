"""Data preparation, cache, splits and batch augmentation."""

import json

import numpy as np
import pytest
import torch

from mtlbench.cards import DatasetCard
from mtlbench.data.augment import augment_batch, draw_augmentations
from mtlbench.data.cases import Case
from mtlbench.data.prepare import DataNotFoundError, prepare_dataset, resolve_root
from mtlbench.data.splits import SplitMismatchError, load_or_make_split, make_folds
from mtlbench.protocol import get_protocol


def grouped_card(n: int = 40) -> DatasetCard:
    """Cases with label 1 for every third one and groups of two cases."""
    def load(root):
        rng = np.random.default_rng(0)
        cases = []
        for i in range(n):
            image = rng.integers(0, 255, (40, 50), dtype=np.uint8)
            mask = np.zeros((40, 50), bool)
            mask[10:20, 10 + i % 20:25 + i % 20] = True
            cases.append(Case(f"c{i}", image, mask, int(i % 3 == 0), group=f"g{i // 2}"))
        return cases
    return DatasetCard("grouped", ("benign", "malignant"), load, lambda root: f"v1-{n}",
                       needs_files=False)


def test_prepare_resizes_and_caches(tmp_path):
    calls = []
    card = grouped_card()
    counting = DatasetCard(card.name, card.classes, lambda r: calls.append(1) or card.load(r),
                           card.fingerprint, needs_files=False)
    arrays = prepare_dataset(counting, None, 32, tmp_path)
    assert arrays.images.shape == (40, 32, 32) and arrays.images.dtype == np.uint8
    assert set(np.unique(arrays.masks)) <= {0, 1}
    assert arrays.soft_masks.max() == 255 and 0 < np.mean((arrays.soft_masks > 0)
                                                          & (arrays.soft_masks < 255))
    again = prepare_dataset(counting, None, 32, tmp_path)
    assert len(calls) == 1, "second preparation must come from the cache"
    assert again.ids == arrays.ids and np.array_equal(again.images, arrays.images)
    assert again.hashes == arrays.hashes


def test_missing_data_folder_says_where_and_how(tmp_path, monkeypatch):
    card = DatasetCard("bus", ("benign", "malignant"), lambda r: [], lambda r: "",
                       layout="  original/000001.png\n  GT/000001.png",
                       obtain="ask the authors", needs_files=True)
    monkeypatch.setenv("MTLBENCH_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError) as info:
        resolve_root(card, None)
    text = str(info.value)
    assert str(tmp_path / "nowhere" / "bus") in text
    assert "--data-root" in text and "MTLBENCH_DATA" in text and "ask the authors" in text
    (tmp_path / "given").mkdir()
    (tmp_path / "given" / "x").write_text("")
    assert resolve_root(card, tmp_path / "given") == (tmp_path / "given").resolve()


def test_stratified_group_folds_cover_everything_and_keep_groups(tmp_path):
    arrays = prepare_dataset(grouped_card(), None, 32, tmp_path)
    folds = make_folds(arrays, 5, "stratified-group", 42)
    flat = sorted(i for f in folds for i in f)
    assert flat == list(range(40))
    for fold in folds:
        test_groups = {arrays.groups[i] for i in fold}
        train_groups = {arrays.groups[i] for i in range(40) if i not in fold}
        assert not test_groups & train_groups
        malignant = np.mean(arrays.labels[fold])
        assert abs(malignant - arrays.labels.mean()) < 0.2


def test_paper_split_is_sklearn_kfold_over_sorted_cases(tmp_path):
    from sklearn.model_selection import KFold

    arrays = prepare_dataset(grouped_card(), None, 32, tmp_path)
    folds = make_folds(arrays, 5, "paper", 42)
    # benign first then malignant, natural order of ids inside each class (c2 before c10)
    order = [i for i in range(40) if arrays.labels[i] == 0] + \
            [i for i in range(40) if arrays.labels[i] == 1]
    expected = [sorted(order[j] for j in test)
                for _, test in KFold(5, shuffle=True, random_state=42).split(order)]
    assert folds == expected
    assert [len(f) for f in folds] == [8] * 5


def test_split_is_saved_reused_and_checked(tmp_path):
    arrays = prepare_dataset(grouped_card(), None, 32, tmp_path)
    path = tmp_path / "split.json"
    folds = load_or_make_split(path, arrays, 5, "stratified-group", 1)
    doc = json.loads(path.read_text())
    assert doc["folds"][0][0].keys() == {"id", "hash"}
    assert load_or_make_split(path, arrays, 5, "stratified-group", 999) == folds  # reused
    doc["folds"][0][0]["hash"] = "0" * 16
    path.write_text(json.dumps(doc))
    with pytest.raises(SplitMismatchError, match="changed since the split was made"):
        load_or_make_split(path, arrays, 5, "stratified-group", 1)
    with pytest.raises(SplitMismatchError, match="asks for 3"):
        load_or_make_split(path, arrays, 3, "stratified-group", 1)


def draws(n: int, seed: int) -> torch.Tensor:
    return draw_augmentations(n, torch.Generator().manual_seed(seed), torch.device("cpu"))


def test_epoch_draws_equal_batch_by_batch_draws():
    """Drawing an epoch's augmentations at once (one device copy) replays the per-batch draws."""
    at_once = draws(10, 5)
    generator = torch.Generator().manual_seed(5)
    batches = [torch.rand(4, 4, generator=generator), torch.rand(4, 4, generator=generator),
               torch.rand(2, 4, generator=generator)]
    assert torch.equal(at_once, torch.cat(batches))


def test_augmentation_moves_image_and_mask_together():
    protocol = get_protocol("paper", overrides={"hflip_p": "1", "vflip_p": "0",
                                                "rotate_deg": "0"})
    images = torch.rand(4, 1, 32, 32)
    masks = (images > 0.5).float()
    out_i, out_m = augment_batch(images, masks, protocol, draws(4, 0))
    assert torch.equal(out_i, images.flip(3)) and torch.equal(out_m, masks.flip(3))


def test_rotation_keeps_mask_binary_and_aligned():
    protocol = get_protocol("paper", overrides={"hflip_p": "0", "vflip_p": "0"})
    images = torch.zeros(8, 1, 64, 64)
    images[:, :, 20:44, 28:36] = 1.0
    masks = images.clone()
    out_i, out_m = augment_batch(images, masks, protocol, draws(8, 3))
    assert set(out_m.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(out_m, masks), "±30° rotations must change a bar"
    agreement = ((out_i > 0.5).float() == out_m).float().mean()
    assert agreement > 0.98
    again = augment_batch(images, masks, protocol, draws(8, 3))
    assert torch.equal(again[1], out_m), "same generator state, same augmentation"


def test_paper_text_rotation_range():
    from mtlbench.data.augment import _angles

    protocol = get_protocol("paper", overrides={"rotate_mode": "paper-text"})
    angles = _angles(torch.rand(1000), torch.rand(1000), protocol)
    assert angles.abs().min() >= 10 - 1e-5 and angles.abs().max() <= 30 + 1e-5
    assert (angles < 0).any() and (angles > 0).any()

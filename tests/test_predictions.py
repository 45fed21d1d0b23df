"""Predicted masks and gallery images: encoding, case choice, TrialResult and store round trips."""

import dataclasses
import json
import sqlite3

import numpy as np

from mtlbench.predictions import decode_png, encode_png, gallery, gallery_indices, mask_pngs
from mtlbench.protocol import get_protocol
from mtlbench.store import Store
from mtlbench.train import run_trial
from mtlbench.trial import TrialResult, TrialSpec


def test_png_round_trips_masks_and_gray_images():
    rng = np.random.default_rng(0)
    mask = (rng.random((64, 64)) > 0.7).astype(np.uint8)
    image = (rng.random((64, 48)) * 255).astype(np.uint8)
    assert np.array_equal(decode_png(encode_png(mask, binary=True)), mask)
    assert np.array_equal(decode_png(encode_png(image)), image)
    assert set(mask_pngs(["a", "b"], np.stack([mask, 1 - mask]))) == {"a", "b"}


def test_gallery_cases_are_per_class_and_independent_of_order():
    ids = [f"case{i:03d}" for i in range(20)]
    labels = [i % 2 for i in range(20)]
    chosen = [ids[i] for i in gallery_indices(ids, labels, per_class=3)]
    assert len(chosen) == 6 and sorted(labels[ids.index(c)] for c in chosen) == [0, 0, 0, 1, 1, 1]
    reversed_ids, reversed_labels = ids[::-1], labels[::-1]
    again = [reversed_ids[i] for i in gallery_indices(reversed_ids, reversed_labels, 3)]
    assert sorted(again) == sorted(chosen)
    assert len(gallery_indices(ids[:2], labels[:2], per_class=3)) == 2  # fewer cases than asked


def test_gallery_holds_image_mask_and_label():
    images = np.arange(4 * 8 * 8, dtype=np.uint8).reshape(4, 8, 8)
    masks = (images % 3 == 0).astype(np.uint8)
    out = gallery(["a", "b", "c", "d"], [0, 1, 0, 1], images, masks, per_class=1)
    assert len(out) == 2
    for case_id, entry in out.items():
        i = "abcd".index(case_id)
        assert entry["label"] == [0, 1, 0, 1][i]
        assert np.array_equal(decode_png(entry["image"]), images[i])
        assert np.array_equal(decode_png(entry["mask"]), masks[i])


def _result(trial_id="t0", predictions=None, gallery_cases=None) -> TrialResult:
    return TrialResult(
        trial_id=trial_id, dataset="ds", method="m", fold=0, seed=1,
        protocol={"name": "smoke", "image_size": 8}, protocol_hash="h", status="finished",
        image_rows=[{"case_id": "a", "label": 0, "strict.dice": 0.5}],
        predictions=predictions or {}, gallery=gallery_cases or {})


def test_trial_result_survives_a_json_round_trip():
    mask = np.eye(8, dtype=np.uint8)
    result = _result(predictions=mask_pngs(["a"], mask[None]),
                     gallery_cases=gallery(["a"], [0], mask[None] * 200, mask[None]))
    data = json.loads(json.dumps(dataclasses.asdict(result)))
    assert TrialResult(**data) == result


def test_store_records_predictions_and_gallery_once(tmp_path):
    mask = np.eye(8, dtype=np.uint8)
    cases = gallery(["a"], [1], mask[None] * 200, mask[None])
    with Store(tmp_path / "s.sqlite") as store:
        store.record(_result("t0", mask_pngs(["a"], mask[None]), cases))
        store.record(_result("t1", mask_pngs(["a"], 1 - mask[None]), cases))
        assert np.array_equal(decode_png(store.predictions("t1")["a"]), 1 - mask)
        stored = store.case_images("ds", 8)
        assert list(stored) == ["a"] and stored["a"]["label"] == 1
        assert np.array_equal(decode_png(stored["a"]["image"]), mask * 200)
        assert store.case_images("ds", 16) == {}
        store.record(_result("t0"))  # re-recorded without predictions: the old ones go
        assert store.predictions("t0") == {}


def test_a_store_from_before_predictions_opens_and_reads(tmp_path):
    path = tmp_path / "old.sqlite"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE predictions")
    db.execute("DROP TABLE case_images")
    db.commit()
    db.close()
    with Store(path) as store:
        assert store.predictions("x") == {} and store.case_images("ds", 8) == {}


def test_run_trial_returns_every_test_mask_and_the_same_gallery_for_each_method(tmp_path,
                                                                              plugins):
    protocol = get_protocol("smoke", "small", {"epochs": "1", "image_size": "32"})
    results = [run_trial(TrialSpec("small", m, 1, protocol, str(tmp_path / "run")), plugins)
               for m in ("tiny", "tinycls")]
    seg, cls = results
    test_ids = {row["case_id"] for row in seg.image_rows}
    assert set(seg.predictions) == test_ids and cls.predictions == {}
    assert decode_png(next(iter(seg.predictions.values()))).shape == (32, 32)
    assert seg.gallery == cls.gallery and set(seg.gallery) <= test_ids
    labels = [entry["label"] for entry in seg.gallery.values()]
    assert 0 in labels and 1 in labels

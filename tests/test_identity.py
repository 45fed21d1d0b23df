"""Trial and row identity (mtlbench.identity): versioned, stable, knob-aware."""

from __future__ import annotations

import hashlib
import json

from mtlbench.compare import row_key
from mtlbench.identity import KEY_VERSION, TrialKey, knobs_tuple, variant_text
from mtlbench.protocol import get_protocol
from mtlbench.trial import TrialSpec


def test_the_trial_id_is_the_hash_of_the_documented_version_2_fields():
    key = TrialKey("synthetic", "cunet", 3, 2, "abc123", knobs_tuple({"w": 0.2, "a": "x"}))
    fields = {"v": 2, "dataset": "synthetic", "method": "cunet", "fold": 3, "seed": 2,
              "protocol": "abc123", "knobs": {"a": "x", "w": 0.2}}
    expected = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    assert KEY_VERSION == 2 and key.trial_id == expected


def test_knob_values_enter_the_id_in_any_order_and_the_row_leaves_out_the_fold():
    a = TrialKey("d", "m", 0, 2, "p", knobs_tuple({"x": 1, "y": "b"}))
    b = TrialKey("d", "m", 0, 2, "p", knobs_tuple({"y": "b", "x": 1}))
    c = TrialKey("d", "m", 0, 2, "p", knobs_tuple({"x": 2, "y": "b"}))
    assert a.trial_id == b.trial_id != c.trial_id
    assert TrialKey("d", "m", 1, 2, "p", a.knobs).row() == a.row() != c.row()


def test_a_spec_is_identified_by_its_key_and_says_its_variant():
    protocol = get_protocol("smoke")
    spec = TrialSpec("synthetic", "cunet", 0, protocol, "/tmp/run",
                     knobs=(("lossnet_weight", 0.5),), variant="lossnet_weight=0.5")
    assert spec.trial_id == TrialKey("synthetic", "cunet", 0, protocol.seed, protocol.hash,
                                     (("lossnet_weight", 0.5),)).trial_id
    assert spec.label == "cunet [lossnet_weight=0.5] · synthetic · fold 0"


def test_variant_names_only_the_knobs_away_from_their_defaults():
    assert variant_text({"a": 1, "b": "x"}, {"a": 1, "b": "y"}) == "b=x"
    assert variant_text({"a": 1}, {"a": 1}) == ""


def test_compare_matches_rows_on_method_and_variant_and_reads_old_records():
    old = {"dataset": "d", "method": "m", "protocol_hash": "p"}  # before knobs: no variant
    assert row_key(old) == ("d", "m", "p")
    assert row_key({**old, "variant": "w=2"}) == ("d", "m [w=2]", "p")

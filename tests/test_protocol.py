import pytest

from mtlbench.protocol import ProtocolError, get_protocol


def test_hash_is_stable_and_ignores_name_and_overrides_record():
    a = get_protocol("smoke")
    b = get_protocol("smoke")
    assert a.hash == b.hash and len(a.hash) == 12
    c = get_protocol("smoke", overrides={"epochs": "6"})
    assert c.hash != a.hash
    # the same knob values reached another way hash the same
    d = get_protocol("smoke", overrides={"epochs": "4"})
    assert d.hash == a.hash and d.overrides == (("epochs", 4),)


def test_paper_preset_is_per_dataset():
    assert (get_protocol("paper", "busi").batch_size, get_protocol("paper", "busi").epochs) == \
        (16, 100)
    assert (get_protocol("paper", "bus").batch_size, get_protocol("paper", "bus").epochs) == (4, 90)
    paper = get_protocol("paper", "busi")
    assert (paper.image_size, paper.lr, paper.beta2, paper.norm_mean) == (256, 1e-4, 0.99, 0.330)
    assert paper.pretrained == "imagenet"


def test_overrides_are_typed_and_recorded():
    p = get_protocol("smoke", overrides={"lr": "3e-4", "checkpoint": "paper", "epochs": "2"})
    assert p.lr == 3e-4 and p.checkpoint == "paper" and p.epochs == 2
    assert dict(p.overrides) == {"lr": 3e-4, "checkpoint": "paper", "epochs": 2}
    assert p.to_dict()["overrides"]


@pytest.mark.parametrize("overrides, message", [
    ({"epochz": "3"}, "unknown protocol setting 'epochz'. Did you mean 'epochs'"),
    ({"epochs": "three"}, "expected int"),
    ({"epochs": "0"}, "epochs=0 must be >= 1"),
    ({"image_size": "100"}, "multiple of 32"),
    ({"hflip_p": "1.5"}, "within [0, 1]"),
    ({"checkpoint": "best"}, "must be one of last, paper"),
])
def test_bad_overrides_name_the_setting(overrides, message):
    with pytest.raises(ProtocolError) as info:
        get_protocol("smoke", overrides=overrides)
    assert message in str(info.value)


def test_unknown_protocol_lists_presets():
    with pytest.raises(ProtocolError, match="Valid protocols: paper, smoke"):
        get_protocol("smok")


def test_round_trip_through_dict():
    from mtlbench.protocol import Protocol

    p = get_protocol("smoke", overrides={"epochs": "2"})
    assert Protocol.from_dict(p.to_dict()) == p

"""The compared multi-task methods: Chen 2019, Qu 2019, Wang 2018 (spec §8.3–8.5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mtlbench.cards import ImageFeatures, ModelConfig
from mtlbench.data.features import ImageFeaturesError, feature_arrays
from mtlbench.data.prepare import DatasetArrays
from mtlbench.knobs import knob_values
from mtlbench.plugins import load_plugins
from mtlbench.profile import count_parameters, profile_model
from mtlbench.protocol import get_protocol
from mtlbench.train import build_loss, normalise
from mtlbench.weights import required_weights
from mtlbench_methods.multitask_baselines import (
    PIXEL_CLASSES,
    SpatialPyramidClassifier,
    check_pixel_logits,
)
from mtlbench_methods.perceptual import (
    QU_PERCEPTUAL,
    VGG16_IMAGENET,
    LossNet,
    QuPerceptualLoss,
)

METHODS = ["wang2018", "chen2019", "qu2019"]
SEG_CLS = frozenset({"seg", "cls"})


@pytest.fixture(scope="module")
def cards():
    methods = load_plugins().methods
    return {name: methods.get(name) for name in METHODS}


def build(card, size=64):
    torch.manual_seed(0)
    return card.build(ModelConfig(image_size=size, in_channels=card.in_channels))


@pytest.mark.parametrize("name", METHODS)
def test_output_contract(cards, name):
    card = cards[name]
    assert card.tasks == SEG_CLS and card.family == "multi-task" and "comparison" in card.groups
    out = build(card)(torch.randn(2, card.in_channels, 64, 64))
    assert set(out) == {"seg", "cls"}
    assert out["seg"].shape == (2, 1, 64, 64) and out["cls"].shape == (2, 2)
    with pytest.raises(ValueError, match="multiples of 32"):
        build(card)(torch.randn(1, card.in_channels, 48, 48))


def test_parameter_counts_match_the_spec(cards):
    # spec §8.3: Chen's head on the UNet skeleton, 34.59 M in the paper's convention
    chen = profile_model(build(cards["chen2019"], 256), 256,
                         double_counted=cards["chen2019"].thop_double_counted)
    assert chen.paper_mparams == pytest.approx(34.59, abs=0.005)
    assert chen.params == 17_909_057 + 10752 * 512 + 512 + 512 * 2 + 2
    # spec §8.4: 14.29 M + the 0.26 M head = Table 5's 14.55 M; 5.82 GMACs
    qu = profile_model(build(cards["qu2019"], 256), 256)
    assert qu.paper_mparams == pytest.approx(14.55, abs=0.01)
    assert qu.paper_gmacs == pytest.approx(5.82, abs=0.005)
    # spec §8.5: Table 5's 29.38 M / 37.86 G, within 1%
    wang = cards["wang2018"]
    profile = profile_model(build(wang, 256), 256, wang.in_channels,
                            double_counted=wang.thop_double_counted)
    assert profile.paper_mparams == pytest.approx(29.38, rel=0.01)
    assert profile.paper_gmacs == pytest.approx(37.86, rel=0.01)
    assert count_parameters(build(wang).pre_enhance) == pytest.approx(0.19e6, rel=0.01)


def test_chen_head_pools_a_pyramid_and_has_no_nonlinearity_between_its_fcs():
    torch.manual_seed(0)
    head = SpatialPyramidClassifier(in_ch=8, bins=(4, 2, 1), hidden=6).eval()
    assert head.fc1.in_features == 8 * 21
    x = torch.rand(3, 8, 8, 8)
    # max pooling is positively homogeneous, so an affine head gives out(2x) = 2·out(x) − c
    offset = head.fc2(head.fc1.bias)  # W2·b1 + b2
    assert torch.allclose(head(2 * x) - 2 * head(x), -offset.expand(3, -1), atol=1e-5)


def test_qu_decoder_block_order_is_conv_relu_bn_dropout(cards):
    block = build(cards["qu2019"]).ups[0]
    kinds = [type(m) for m in block.conv]
    assert kinds == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d, nn.Dropout2d] * 2
    assert block.up.out_channels == block.up.in_channels // 2


def perceptual_batch():
    torch.manual_seed(0)
    outputs = {"seg": torch.randn(2, 1, 32, 32), "cls": torch.randn(2, 2)}
    return outputs, (torch.rand(2, 1, 32, 32) > 0.5).float(), torch.tensor([0, 1])


def test_qu_perceptual_term_is_the_unnormalised_mean_over_levels(cards):
    torch.manual_seed(0)
    probs, masks = torch.rand(2, 1, 32, 32), (torch.rand(2, 1, 32, 32) > 0.5).float()
    qu, lossnet = QuPerceptualLoss("random"), LossNet("random")
    lossnet.load_state_dict(qu.state_dict())
    expected, p, g = 0.0, probs.expand(-1, 3, -1, -1), masks.expand(-1, 3, -1, -1)
    for block in qu.blocks:
        p, g = block(p), block(g)
        expected += torch.mean((p - g) ** 2).item()
    assert qu(probs, masks).item() == pytest.approx(expected / 4, rel=1e-5)
    assert lossnet(probs, masks).item() != pytest.approx(qu(probs, masks).item(), rel=1e-2)
    paper, smoke = get_protocol("paper", "busi"), get_protocol("smoke", "synthetic")
    qu_card = cards["qu2019"]
    assert qu_card.loss_terms == (QU_PERCEPTUAL,)
    random_vgg = knob_values(qu_card, "paper", {"perceptual_vgg": "random"})
    assert random_vgg == {"perceptual_weight": 0.1, "perceptual_vgg": "random"}
    loss = build_loss(qu_card, paper, random_vgg)
    [term] = loss.term_modules
    assert isinstance(term.loss, QuPerceptualLoss)
    assert loss.terms(*perceptual_batch())["perceptual"] > 0
    assert "0.1·Qu perceptual (RANDOM VGG-16" in loss.describe()
    assert build_loss(qu_card, paper, {**random_vgg, "perceptual_weight": 0.0}).term_modules == []
    assert build_loss(qu_card, smoke).term_modules == []  # smoke: β = 0
    assert VGG16_IMAGENET in required_weights(qu_card, paper, knob_values(qu_card, "paper"))
    assert required_weights(qu_card, smoke, knob_values(qu_card, "smoke")) == []
    chen = cards["chen2019"]
    assert VGG16_IMAGENET not in required_weights(chen, paper, knob_values(chen, "paper"))


def small_arrays(n=3, size=16):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    return DatasetArrays(
        name="t", classes=("a", "b"), ids=tuple(f"c{i}" for i in range(n)),
        hashes=tuple(f"h{i}" for i in range(n)), groups=tuple(f"c{i}" for i in range(n)),
        labels=np.zeros(n, dtype=np.int64), images=images,
        masks=np.zeros_like(images), soft_masks=np.zeros_like(images))


def test_feature_channels_are_computed_once_and_cached(tmp_path):
    calls = []

    def halves(images):
        calls.append(len(images))
        return np.stack([images / 255.0, 1 - images / 255.0], axis=1)

    features = ImageFeatures("halves-v1", 2, halves)
    arrays = small_arrays()
    first = feature_arrays(arrays, features, tmp_path)
    assert first.shape == (3, 2, 16, 16) and first.dtype == np.uint8
    assert np.array_equal(first[:, 0], arrays.images)  # quantised back to the same bytes
    again = feature_arrays(arrays, features, tmp_path)
    assert calls == [3] and np.array_equal(first, again)  # the second call read the cache
    bad = ImageFeatures("bad-v1", 2, lambda images: np.stack([images] * 2, axis=1) * 1.0)
    with pytest.raises(ImageFeaturesError, match="'bad-v1'.*\\[0, 1\\]"):
        feature_arrays(arrays, bad, tmp_path)
    wrong = ImageFeatures("wrong-v1", 3, halves)
    with pytest.raises(ImageFeaturesError, match="must have shape \\(3, 3, 16, 16\\)"):
        feature_arrays(arrays, wrong, tmp_path)


def test_wang_filters_reach_the_model_after_the_normalised_image(cards):
    features = cards["wang2018"].image_features
    arrays = small_arrays(size=32)
    values = feature_arrays(arrays, features, None)
    assert values.shape == (3, 3, 32, 32)
    batch = torch.from_numpy(np.concatenate([arrays.images[:, None], values], 1)).float() / 255
    p = get_protocol("smoke", "synthetic")
    x = normalise(batch, p)
    assert x.shape == (3, 6, 32, 32)
    assert torch.allclose(x[:, :3], ((batch[:, :1] - p.norm_mean) / p.norm_std).expand(-1, 3,
                                                                                        -1, -1))
    assert torch.equal(x[:, 3:], batch[:, 1:])


def test_chen_original_mtnet_is_an_option_with_the_spec_size():
    plugins = load_plugins()
    card = plugins.methods.get("chen2019-mtnet")
    assert card.option_of == "chen2019"
    model = build(card, 256)
    out = model(torch.randn(2, 3, 64, 64))
    assert out["seg"].shape == (2, 1, 64, 64) and out["cls"].shape == (2, 2)
    profile = profile_model(model, 256)
    # spec §8.3 [MEAS]: 30.71 M / 33.24 G at 256² (with Chen's two-class output conv)
    assert profile.paper_mparams == pytest.approx(30.71, rel=0.01)
    assert profile.paper_gmacs == pytest.approx(33.24, rel=0.01)


def test_all_leaves_options_out_and_options_selects_them():
    plugins = load_plugins()
    everything = plugins.select_methods("all")
    assert "fcn8s" not in everything and "chen2019-mtnet" not in everything
    assert {"fcn", "chen2019", "qu2019", "wang2018", "transunet", "acsnet"} <= set(everything)
    assert set(plugins.select_methods("options")) == {"chen2019-mtnet", "qu2019-pixelwise",
                                                      "fcn8s"}
    assert "fcn8s" in plugins.select_methods("all,fcn8s")  # named, an option runs
    assert len(everything) + len(plugins.select_methods("options")) == len(plugins.methods)


def test_qu_pixelwise_option_reads_mask_and_class_from_one_pixel_map():
    from mtlbench_methods.multitask_baselines import pixel_class_loss, pixelwise_outputs

    card = load_plugins().methods.get("qu2019-pixelwise")
    assert card.option_of == "qu2019" and card.loss_terms == (PIXEL_CLASSES,)
    assert PIXEL_CLASSES.name == "pixel_ce" and PIXEL_CLASSES.part == "whole"
    assert card.check_outputs is check_pixel_logits
    model = build(card)
    out = model(torch.randn(2, 3, 64, 64))
    assert out["seg"].shape == (2, 1, 64, 64) and out["cls"].shape == (2, 2)
    assert out["pixel_logits"].shape == (2, 3, 64, 64)
    assert check_pixel_logits(out, 2, 64) is None
    assert "pixel_logits" in check_pixel_logits({"seg": out["seg"], "cls": out["cls"]}, 2, 64)
    # background everywhere except a malignant-looking square on image 0
    logits = torch.zeros(2, 3, 8, 8)
    logits[:, 0] = 4.0
    logits[0, :, 2:5, 2:5] = torch.tensor([0.0, 1.0, 3.0]).view(3, 1, 1)
    probs = torch.softmax(logits, 1)
    trained = pixelwise_outputs(logits, vote=False)
    assert torch.allclose(torch.sigmoid(trained["seg"]), 1 - probs[:, :1], atol=1e-6)
    voted = pixelwise_outputs(logits, vote=True)
    assert torch.allclose(voted["cls"][0].exp(), torch.tensor([0.0, 1.0]), atol=1e-5)
    # image 1 has no tumour pixel: the mean probability decides
    assert torch.allclose(voted["cls"][1], trained["cls"][1])
    masks = torch.zeros(2, 1, 8, 8)
    masks[0, :, 2:5, 2:5] = 1
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[0, 2:5, 2:5] = 2  # malignant (label 1) tumour pixels are class 2
    loss = build_loss(card, get_protocol("paper", "busi"))
    terms = loss.terms(voted, masks, torch.tensor([1, 0]))
    assert set(terms) == {"pixel_ce", "total"}
    assert torch.allclose(terms["total"], torch.nn.functional.cross_entropy(logits, target))
    assert torch.equal(terms["total"], pixel_class_loss(voted, masks, torch.tensor([1, 0])))
    assert "pixel CE" in loss.describe()

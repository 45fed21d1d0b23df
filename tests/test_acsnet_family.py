"""ACSNet's parts (gate unit, DSAModule, channel attention, multi-scale head), the ten Table 1
methods, and their sizes against spec §7 and thop itself."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import DeformConv2d, deform_conv2d

from mtlbench.cards import ModelConfig
from mtlbench.models import ChannelAttention, SingleScaleClassifier
from mtlbench.plugins import load_plugins
from mtlbench.profile import count_flops, count_parameters, profile_method
from mtlbench.thop_rules import conv_rule, rule_for, thop_count
from mtlbench_methods.acsnet_parts import (
    FLOP_FORMULAS,
    MAC_RULES,
    DSAModule,
    GateUnit,
    ModulatedDeformConv,
    MultiScaleClassifier,
    SamplingDeformConv2d,
    sampled_deform_conv2d,
)
from mtlbench_methods.perceptual import LOSSNET

ABLATION = ["unet", "clsnet", "cunet", "cugnet", "caunet", "cuanet", "cuganet", "cmsunet",
            "camsunet", "acsnet"]

# Spec §7 at 256²: true params (M), true GMACs, paper-convention params (M) and GMACs.
SPEC_7 = {
    "unet": (17.91, 18.55, 29.08, 25.69), "cunet": (18.04, 18.55, 29.21, 25.69),
    "cugnet": (21.61, 19.91, 32.78, 27.05), "caunet": (18.09, 18.55, 29.26, 25.69),
    "cuanet": (27.45, 22.46, 38.62, 29.60), "cuganet": (31.02, 23.82, 42.19, 30.96),
    "cmsunet": (18.73, 18.55, 29.90, 25.69), "camsunet": (18.84, 18.55, 30.01, 25.69),
    "acsnet": (31.82, 23.82, 42.99, 30.97), "clsnet": (11.31, 2.38, 22.48, 9.53),
}
# Table 1: (CA, gate units, DSA modules, multi-scale head)
TABLE_1 = {
    "unet": (0, 0, 0, False), "clsnet": (0, 0, 0, False), "cunet": (0, 0, 0, False),
    "cugnet": (0, 5, 0, False), "caunet": (1, 0, 0, False), "cuanet": (0, 0, 2, False),
    "cuganet": (0, 5, 2, False), "cmsunet": (0, 0, 0, True), "camsunet": (3, 0, 0, True),
    "acsnet": (3, 5, 2, True),
}


@pytest.fixture(scope="module")
def cards():
    methods = load_plugins().methods
    return {name: methods.get(name) for name in ABLATION}


def build(card, size: int = 256):
    torch.manual_seed(0)
    return card.build(ModelConfig(image_size=size))


def within(value: float, expected: float, rel: float = 0.005) -> bool:
    return abs(value / expected - 1) <= rel


# --- the paper's parts ----------------------------------------------------------------------


class FixedGate(nn.Module):
    """Gate logits with known sigmoid maps: channel 0 is 0.25 everywhere (mean 0.25, max 0.25),
    channel 1 is 0.1 except one 0.9 (max 0.9, mean 0.15)."""

    def forward(self, x):
        gates = torch.full((x.shape[0], 2, *x.shape[2:]), 0.25)
        gates[:, 1] = 0.1
        gates[:, 1, 1, 1] = 0.9
        return torch.logit(gates)


def test_gate_unit_scales_by_average_and_max_pooled_gates():
    unit = GateUnit(32).eval()
    unit.gate = FixedGate()
    x = torch.randn(2, 32, 4, 4)
    # G¹ = mean of channel 0 = 0.25, G² = max of channel 1 = 0.9 (swapped pools would give
    # 0.25 + 0.15)
    expected = unit.refine(x * (0.25 + 0.9))
    assert torch.allclose(unit(x), expected, atol=1e-4)


def test_gate_unit_widths_follow_the_paper():
    unit = GateUnit(512)
    convs = [m for m in unit.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(512, 64), (64, 2), (512, 512)]
    norms = [m.num_groups for m in unit.modules() if isinstance(m, nn.GroupNorm)]
    assert norms == [32, 128]  # C/16 groups on C/8 channels, C/4 groups on C
    assert unit(torch.randn(1, 512, 3, 5)).shape == (1, 512, 3, 5)


def test_modulated_deform_conv_is_initialised_as_the_reference():
    dcn = ModulatedDeformConv(8, 4)
    assert torch.count_nonzero(dcn.offset.weight) == 0
    assert torch.all(dcn.modulation.weight == 0.5)
    assert dcn.conv.bias is None and isinstance(dcn.conv, DeformConv2d)  # torchvision's op
    assert (dcn.offset.out_channels, dcn.modulation.out_channels) == (18, 9)


def test_modulated_deform_conv_with_zero_offsets_and_full_mask_is_a_plain_conv():
    dcn = ModulatedDeformConv(6, 5)
    with torch.no_grad():
        dcn.offset.bias.zero_()
        dcn.modulation.weight.zero_()
        dcn.modulation.bias.fill_(40.0)  # sigmoid(40) == 1 in float32
    x = torch.randn(2, 6, 7, 9)
    assert torch.allclose(dcn(x), F.conv2d(x, dcn.conv.weight, padding=1), atol=1e-5)


@pytest.mark.parametrize("channels, size", [(3, 5), (8, 4), (4, 9)])
def test_sampled_deform_conv_equals_torchvision_forward_and_backward(channels, size):
    torch.manual_seed(channels)
    x = torch.randn(2, channels, size, size, requires_grad=True)
    offset = (3 * torch.randn(2, 18, size, size)).requires_grad_()  # many samples fall outside
    mask = torch.rand(2, 9, size, size, requires_grad=True)
    weight = torch.randn(5, channels, 3, 3, requires_grad=True)
    inputs = (x, offset, mask, weight)
    ours = sampled_deform_conv2d(x, offset, mask, weight, padding=1)
    theirs = deform_conv2d(x, offset, weight, padding=1, mask=mask)
    assert torch.allclose(ours, theirs, atol=1e-5)
    grads_ours = torch.autograd.grad(ours.square().sum(), inputs)
    grads_theirs = torch.autograd.grad(theirs.square().sum(), inputs)
    for a, b in zip(grads_ours, grads_theirs, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_sampling_deform_conv_falls_back_to_torchvision_when_not_simple():
    conv = SamplingDeformConv2d(4, 4, 3, stride=2, padding=1, bias=False)
    x, offset = torch.randn(1, 4, 8, 8), torch.randn(1, 18, 4, 4)
    mask = torch.rand(1, 9, 4, 4)
    expected = deform_conv2d(x, offset, conv.weight, stride=2, padding=1, mask=mask)
    assert torch.allclose(conv(x, offset, mask), expected)


def test_modulated_deform_conv_learns_offsets():
    dcn = ModulatedDeformConv(4, 4)
    dcn(torch.randn(2, 4, 6, 6)).square().mean().backward()
    assert dcn.offset.weight.grad.abs().sum() > 0


def test_dsa_module_keeps_shape_and_uses_mean_and_max_maps():
    dsa = DSAModule(16)
    x = torch.randn(2, 16, 5, 6)
    assert dsa(x).shape == x.shape
    assert dsa.mean_attention.in_channels == dsa.max_attention.in_channels == 1
    dcns = [m for m in dsa.modules() if isinstance(m, ModulatedDeformConv)]
    assert [(d.conv.in_channels, d.conv.out_channels) for d in dcns] == [(16, 16), (32, 16)]


def test_channel_attention_weights_from_average_and_max():
    ca = ChannelAttention(32)
    assert (ca.fc[0].in_features, ca.fc[0].out_features, ca.fc[2].out_features) == (64, 2, 32)
    x = torch.randn(3, 32, 4, 4)
    w = ca.fc(torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1))
    assert torch.allclose(ca(x), torch.relu(x * w[:, :, None, None]))


def test_multi_scale_head_reads_stages_4_5_6_and_needs_the_decoder():
    head = MultiScaleClassifier(num_classes=2)
    feats = [None, None, None, torch.randn(2, 256, 8, 8), torch.randn(2, 512, 4, 4)]
    assert head.from_features(feats, torch.randn(2, 512, 8, 8)).shape == (2, 2)
    assert (head.fc1.in_features, head.fc1.out_features) == (1280, 640)
    with pytest.raises(ValueError, match="decoder"):
        head.from_features(feats, None)


def test_single_scale_head_with_attention_is_c_a_unet_head():
    head = SingleScaleClassifier(attention=True)
    assert isinstance(head.attention, ChannelAttention)
    assert head(torch.randn(2, 512, 2, 2)).shape == (2, 2)


@pytest.mark.parametrize("block, millions", [
    (lambda: GateUnit(512), 2.66), (lambda: GateUnit(256), 0.67), (lambda: GateUnit(128), 0.17),
    (lambda: GateUnit(64), 0.04), (lambda: DSAModule(512), 7.45), (lambda: DSAModule(256), 1.96),
    (lambda: MultiScaleClassifier(2), 0.93),
])
def test_block_sizes_match_spec(block, millions):
    # the spec rounds to 0.01 M (GU256 has 0.664994 M and is printed 0.67)
    assert count_parameters(block()) / 1e6 == pytest.approx(millions, abs=0.0051)


# --- the ten methods ------------------------------------------------------------------------


def test_ablation_group_is_table_1_in_order():
    loaded = load_plugins()
    assert loaded.methods.select("ablation", loaded.method_groups) == ABLATION
    assert loaded.method_groups("default") == ["unet", "cunet"]


@pytest.mark.parametrize("name", ABLATION)
def test_method_has_table_1_parts_and_the_contract(cards, name):
    card = cards[name]
    model = build(card, 64)
    ca, gates, dsa, multi = TABLE_1[name]
    assert sum(isinstance(m, ChannelAttention) for m in model.modules()) == ca
    assert sum(isinstance(m, GateUnit) for m in model.modules()) == gates
    assert sum(isinstance(m, DSAModule) for m in model.modules()) == dsa
    assert isinstance(model.classifier, MultiScaleClassifier) == multi
    out = model(torch.randn(2, 3, 64, 64))
    assert set(out) == set(card.tasks)
    if "seg" in card.tasks:
        assert out["seg"].shape == (2, 1, 64, 64)
        assert card.loss_terms == (LOSSNET,)
        assert {k.name for k in card.knobs} == {"lossnet_weight", "lossnet_vgg"}
    if "cls" in card.tasks:
        assert out["cls"].shape == (2, 2)
    assert "busi" in card.published and card.groups[0] == "ablation"


def test_cards_carry_table_2(cards):
    assert cards["acsnet"].published["busi"]["Dice"] == (84.90, 1.69)
    assert cards["cuganet"].published["busi"]["HD95"] == (13.12, 1.08)
    assert cards["camsunet"].published["busi"]["REC"] == (94.07, 1.48)
    assert cards["clsnet"].published["busi"]["ACC"] == (92.38, 2.59)


def test_gradients_of_the_classification_loss_reach_the_decoder_stage_6(cards):
    model = build(cards["acsnet"], 64)
    model(torch.randn(2, 3, 64, 64))["cls"].sum().backward()
    stage6 = model.decoder.stage6[0][0].weight.grad
    stage9 = model.decoder.stage9[0].weight.grad
    assert stage6 is not None and stage6.abs().sum() > 0
    assert stage9 is None or stage9.abs().sum() == 0  # d9 does not feed the classifier


# --- sizes against spec §7 and thop ---------------------------------------------------------


@pytest.mark.parametrize("name", ABLATION)
def test_params_and_macs_match_spec_7_within_half_a_percent(cards, name):
    card = cards[name]
    profile = profile_method(card, build(card), 256)
    params, gmacs, paper_params, paper_gmacs = SPEC_7[name]
    assert within(profile.mparams, params)
    assert within(profile.gmacs, gmacs)
    assert within(profile.paper_mparams, paper_params)
    assert within(profile.paper_gmacs, paper_gmacs)
    table5 = card.published["busi"].get("gmacs_paper")
    if table5:
        assert within(profile.paper_gmacs, table5[0])


def test_deformable_convolution_flops_are_counted():
    dcn = DeformConv2d(8, 4, 3, padding=1, bias=False)

    class Wrapped(nn.Module):
        def forward(self, x):
            offset = torch.zeros(1, 18, *x.shape[2:])
            return dcn(x.expand(-1, 8, -1, -1), offset)

    # the core does not know the deformable convolution: ACSNet's parts bring its formula
    assert count_flops(Wrapped(), 6, in_channels=1) == 0
    assert count_flops(Wrapped(), 6, in_channels=1, formulas=FLOP_FORMULAS) == \
        2 * (4 * 6 * 6) * 8 * 9
    acsnet_part = ModulatedDeformConv(8, 4)
    conv_flops = 2 * 4 * 36 * 8 * 9 + 2 * (18 + 9) * 36 * 8 * 9
    assert count_flops(acsnet_part, 6, in_channels=8, formulas=FLOP_FORMULAS) == conv_flops


def test_dsa_cards_bring_the_deformable_convolution_counting_rules(cards):
    assert rule_for(DeformConv2d) is None and rule_for(SamplingDeformConv2d) is None
    assert rule_for(SamplingDeformConv2d, MAC_RULES) is conv_rule
    for name, (_, _, dsa, _) in TABLE_1.items():
        card = cards[name]
        assert (dict(card.mac_rules), dict(card.flop_formulas)) == (
            (MAC_RULES, FLOP_FORMULAS) if dsa else ({}, {}))


def test_thop_rules_count_a_known_model_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Upsample(scale_factor=2, mode="bilinear"),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    count = thop_count(model, 8)
    conv = 4 * 8 * 8 * 3 * 9
    norm = 2 * 4 * 64 * 2
    upsample = 11 * 4 * 16 * 16
    pool = (16 * 16 + 1) * 4
    assert count.macs == conv + norm + upsample + pool + 4 * 2
    assert count.params == count_parameters(model) == count.paper_params
    with pytest.raises(ValueError, match="no submodule 'encoder'"):
        thop_count(model, 8, double_counted=("encoder",))


@pytest.mark.parametrize("name", ["unet", "clsnet", "cugnet", "camsunet", "acsnet"])
def test_thop_rules_agree_with_thop_itself(cards, name):
    """Our re-implementation of thop's rules gives thop 0.1.1's own numbers (for the
    deformable conv, thop is given our rule, which it cannot know)."""
    import thop  # the test extra pins the version the paper's figures came from

    card = cards[name]

    def deform_rule(module, inputs, output):
        module.total_ops += MAC_RULES[SamplingDeformConv2d](module, inputs[0], output)

    model = build(card, 128)
    ours = thop_count(model, 128, extra_rules=card.mac_rules)
    macs, params = thop.profile(model, inputs=(torch.zeros(1, 3, 128, 128),), verbose=False,
                                custom_ops={SamplingDeformConv2d: deform_rule})
    assert (ours.macs, ours.params) == (int(macs), int(params))

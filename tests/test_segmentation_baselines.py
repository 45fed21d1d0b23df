"""The compared single-task segmentation methods: FCN, DeepLabV3+, FPN, UNet++ (spec §8.2)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from mtlbench.cards import ModelConfig
from mtlbench.cli import main
from mtlbench.plugins import load_plugins
from mtlbench.profile import count_parameters, measure_speed, profile_model

METHODS = ["fcn", "fcn8s", "deeplabv3plus", "fpn", "unetplusplus"]
ENCODER_PARAMS = 11_176_512  # torchvision ResNet-18 without fc
# Spec §8.2 / §7 at 256²: smp ResNet-18 models, clean (params M, thop-rule GMACs)
SMP_SIZES = {"deeplabv3plus": (12.33, 4.60), "fpn": (13.05, 4.45), "unetplusplus": (15.97, 16.03)}


@pytest.fixture(scope="module")
def cards():
    methods = load_plugins().methods
    return {name: methods.get(name) for name in METHODS}


def build(card, size=64, pretrained="none"):
    torch.manual_seed(0)
    return card.build(ModelConfig(image_size=size, pretrained=pretrained))


@pytest.mark.parametrize("name", METHODS)
def test_output_contract(cards, name):
    card = cards[name]
    assert card.tasks == {"seg"} and card.family == "single-task"
    out = build(card)(torch.randn(2, 3, 64, 64))
    assert set(out) == {"seg"} and out["seg"].shape == (2, 1, 64, 64)
    with pytest.raises(ValueError, match="multiples of 32"):
        build(card)(torch.randn(1, 3, 48, 48))


def test_fcn_parameter_counts_and_the_paper_convention(cards):
    assert count_parameters(build(cards["fcn"])) == ENCODER_PARAMS + 513
    assert count_parameters(build(cards["fcn8s"])) == ENCODER_PARAMS + 513 + 257 + 129
    profile = profile_model(build(cards["fcn"], 256), 256,
                            double_counted=cards["fcn"].thop_double_counted)
    # Table 5 prints 9.54 G / 22.35 M for FCN (spec §7: thop, encoder registered twice)
    assert profile.paper_mparams == pytest.approx(22.35, abs=0.005)
    assert profile.paper_gmacs == pytest.approx(9.54, rel=0.005)


@pytest.mark.parametrize("name", sorted(SMP_SIZES))
def test_smp_model_sizes_match_spec(cards, name):
    params, gmacs = SMP_SIZES[name]
    profile = profile_model(build(cards[name], 256), 256)
    assert profile.mparams == pytest.approx(params, rel=0.005)
    assert profile.gmacs == pytest.approx(gmacs, rel=0.005)


def test_deeplab_rates_are_scaled_to_the_feature_map(cards):
    from mtlbench_methods.segmentation_baselines import deeplab_rates

    assert deeplab_rates(256) == (3, 6, 9)  # (6, 12, 18) × 16/33
    assert deeplab_rates(512) == (6, 12, 17)
    assert deeplab_rates(64) == (1, 1, 2)
    model = build(cards["deeplabv3plus"], 256)
    dilations = sorted({m.dilation[0] for m in model.modules()
                        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
                        and m.dilation[0] > 1 and m.groups > 1})
    assert dilations == [3, 6, 9]
    assert "(3, 6, 9 at 256²)" in cards["deeplabv3plus"].description


def test_imagenet_encoder_weights_are_loaded_into_smp_and_fcn(cards, monkeypatch):
    from torchvision.models import ResNet18_Weights, resnet18

    torch.manual_seed(123)
    reference = resnet18().state_dict()
    monkeypatch.setattr(type(ResNet18_Weights.IMAGENET1K_V1), "get_state_dict",
                        lambda self, progress=True, **kwargs: reference)
    smp_model = build(cards["fpn"], pretrained="imagenet")
    assert torch.equal(smp_model.net.encoder.conv1.weight, reference["conv1.weight"])
    assert torch.equal(smp_model.net.encoder.layer4[1].bn2.running_var,
                       reference["layer4.1.bn2.running_var"])
    fcn = build(cards["fcn"], pretrained="imagenet")
    assert torch.equal(fcn.net.encoder.stage1[0].weight, reference["conv1.weight"])
    scratch = build(cards["fpn"])
    assert not torch.equal(scratch.net.encoder.conv1.weight, reference["conv1.weight"])


def test_cards_carry_tables_5_and_7(cards):
    assert cards["deeplabv3plus"].published["busi"]["Dice"] == (83.34, 0.96)
    assert cards["unetplusplus"].published["busi"]["gmacs_paper"] == (35.20, 0.0)
    assert cards["fpn"].published["bus"]["HD95"] == (14.28, 1.87)
    assert [w.name for w in cards["fcn"].weights] == ["torchvision/resnet18-imagenet"]
    comparison = load_plugins().method_groups("comparison")
    assert [m for m in comparison if m in METHODS + ["transunet"]] == [
        "fcn", "deeplabv3plus", "fpn", "unetplusplus", "transunet"]


def test_measure_speed_reports_latency_and_throughput(cards):
    speed = measure_speed(build(cards["fcn"], 32), 32, "cpu", batch_size=2, repeats=1)
    assert speed.latency_ms > 0 and speed.train_images_per_s > 0
    assert (speed.device, speed.batch_size) == ("cpu", 2)


def test_profile_command_formats():
    args = ["profile", "--methods", "fcn,unet", "--size", "64"]
    records = json.loads(CliRunner().invoke(main, [*args, "--no-speed", "--json"]).output)
    assert [r["method"] for r in records] == ["unet", "fcn"]
    assert records[0]["latency_ms"] is None and records[0]["published_gmacs"] is None
    csv_text = CliRunner().invoke(main, [*args, "--format", "csv", "--batch-size", "2"]).output
    header, *rows = csv_text.strip().splitlines()
    assert header.startswith("method,size,params_m,gflops,gmacs,paper_convention_params_m")
    assert "latency_ms" in header and len(rows) == 2
    table = CliRunner().invoke(main, ["profile", "--methods", "fcn", "--size", "256",
                                      "--no-speed"]).output
    assert "22.35" in table and "9.54" in table  # ours (paper convention), Table 5

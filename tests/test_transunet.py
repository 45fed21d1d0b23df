"""TransUNet (R50 + ViT-B/16, spec §8.2): contract, size, thop convention, ImageNet-21k weights."""

from __future__ import annotations

import time

import huggingface_hub
import pytest
import timm
import torch
from click.testing import CliRunner
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

from mtlbench.cards import ModelConfig
from mtlbench.cli import main
from mtlbench.plugins import load_plugins
from mtlbench.profile import count_parameters, profile_model
from mtlbench.protocol import get_protocol
from mtlbench.weights import (
    WeightsUnavailableError,
    ensure_weights,
    required_weights,
)
from mtlbench_methods.transunet import R50_VIT_IN21K

SPEC_TRUE_MPARAMS = 105.3  # spec §7: TransUNet's real size at 256²
POS_EMBED_256 = 16 * 16 * 768


@pytest.fixture(scope="module")
def card():
    return load_plugins().methods.get("transunet")


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, used offline (no request leaves the machine)."""
    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("MTLBENCH_OFFLINE", "1")
    return cache


def put_in_cache(cache, state):
    """Store ``state`` as the R50+ViT-B/16 file in ``cache``'s hub layout."""
    repo = cache / f"models--{R50_VIT_IN21K.hf_repo.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))


def test_output_contract_and_input_checks(card):
    assert card.tasks == {"seg"} and card.family == "single-task"
    assert "comparison" in card.groups
    model = card.build(ModelConfig(image_size=64))
    out = model(torch.randn(2, 3, 64, 64))
    assert set(out) == {"seg"} and out["seg"].shape == (2, 1, 64, 64)
    with pytest.raises(ValueError, match="multiples of 16"):
        model(torch.randn(1, 3, 56, 56))
    with pytest.raises(ValueError, match="built for 4×4 tokens"):
        model(torch.randn(1, 3, 96, 96))


def test_parameter_count_is_the_spec_true_figure_and_thop_reproduces_table_5(card):
    model = card.build(ModelConfig(image_size=256))
    params = count_parameters(model)
    assert params == pytest.approx(SPEC_TRUE_MPARAMS * 1e6, rel=0.01)
    assert params - count_parameters(card.build(ModelConfig(image_size=64))) == (
        POS_EMBED_256 - 4 * 4 * 768)  # only the position embeddings depend on the size
    profile = profile_model(model, 256, double_counted=card.thop_double_counted)
    # Table 5: 93.23 M exactly; 32.23 G, of which 0.03 G is thop's count of the official
    # code's nn.Softmax module in attention (timm calls a function, which thop cannot see).
    assert profile.paper_mparams == pytest.approx(93.23, abs=0.005)
    assert profile.paper_gmacs == pytest.approx(32.23 - 12 * 12 * 256 * 767 / 1e9, abs=0.005)
    assert profile.gmacs > profile.paper_gmacs + 5  # the standardised convs, counted here


def test_imagenet21k_weights_load_from_the_hub_cache(card, hf_cache):
    torch.manual_seed(1)
    timm_state = timm.create_model("vit_base_r50_s16_224", pretrained=False,
                                   num_classes=0).state_dict()
    put_in_cache(hf_cache, timm_state)
    ensure_weights([R50_VIT_IN21K])  # cached: nothing to fetch
    encoder = card.build(ModelConfig(image_size=64, pretrained="imagenet")).net.encoder
    state = encoder.state_dict()
    assert torch.equal(state["resnet.stem.conv.weight"],
                       timm_state["patch_embed.backbone.stem.conv.weight"])
    assert torch.equal(state["resnet.stages.2.blocks.8.conv3.weight"],
                       timm_state["patch_embed.backbone.stages.2.blocks.8.conv3.weight"])
    assert torch.equal(state["patch_embed.weight"], timm_state["patch_embed.proj.weight"])
    assert torch.equal(state["blocks.11.mlp.fc2.weight"], timm_state["blocks.11.mlp.fc2.weight"])
    # class token dropped, 14×14 grid resized to the 4×4 grid of a 64² input
    grid = timm_state["pos_embed"][:, 1:]
    expected = resample_abs_pos_embed(grid, new_size=(4, 4), old_size=(14, 14),
                                      num_prefix_tokens=0, interpolation="bilinear",
                                      antialias=False)
    assert state["pos_embed"].shape == (1, 16, 768)
    assert torch.allclose(state["pos_embed"], expected)


def test_missing_imagenet21k_weights_stop_the_run_within_seconds(card, hf_cache, tmp_path):
    paper = get_protocol("paper", "busi")
    assert required_weights(card, paper) == [R50_VIT_IN21K]
    with pytest.raises(WeightsUnavailableError) as caught:
        ensure_weights([R50_VIT_IN21K])
    text = str(caught.value)
    assert R50_VIT_IN21K.name in text and "hf download" in text and "--pretrained none" in text
    started = time.time()
    result = CliRunner().invoke(main, ["run", "--methods", "transunet", "--pretrained",
                                       "imagenet", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert R50_VIT_IN21K.name in " ".join(result.output.split())
    assert time.time() - started < 10
    assert not (tmp_path / "run" / "checkpoints").exists()

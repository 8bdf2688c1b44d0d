"""Backbones: any channel count and input size, weights from a local file."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from recsys.errors import InvalidInput, InvalidSettings
from recsys.vision.backbones import build_backbone, load_backbone_weights


@pytest.mark.parametrize("name", ["small_cnn", "resnet18", "resnet50", "vit_tiny"])
@pytest.mark.parametrize("channels", [1, 3])
def test_backbone_maps_images_to_out_dim(name, channels):
    net = build_backbone(name, channels, 16, width=8).eval()
    with torch.no_grad():
        out = net(torch.randn(2, channels, 16, 16))
    assert out.shape == (2, net.out_dim)


def test_unknown_backbone_names_the_choices():
    with pytest.raises(InvalidSettings, match="small_cnn"):
        build_backbone("vgg", 3, 32)


def test_weights_load_from_a_local_state_dict_with_or_without_prefix(tmp_path):
    source = build_backbone("resnet18", 3, 16)
    plain = tmp_path / "plain.pt"
    torch.save(source.net.state_dict(), plain)  # torchvision layout, no "net." prefix
    target = load_backbone_weights(build_backbone("resnet18", 3, 16), plain)
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key]), key


def test_mismatched_stem_is_skipped_and_foreign_file_is_refused(tmp_path):
    colour = build_backbone("resnet18", 3, 16)
    path = tmp_path / "colour.pt"
    torch.save(colour.state_dict(), path)
    gray = load_backbone_weights(build_backbone("resnet18", 1, 16), path)  # 1-channel stem
    assert torch.equal(
        gray.state_dict()["net.layer1.0.conv1.weight"],
        colour.state_dict()["net.layer1.0.conv1.weight"],
    )
    foreign = tmp_path / "foreign.pt"
    torch.save({"something.else": torch.zeros(3)}, foreign)
    with pytest.raises(InvalidInput, match="no tensor"):
        load_backbone_weights(build_backbone("small_cnn", 1, 16), foreign)


def test_resnet_keeps_the_imagenet_stem_for_large_inputs_only():
    large = build_backbone("resnet18", 3, 224).net
    small = build_backbone("resnet18", 3, 64).net
    assert large.conv1.stride == (2, 2) and isinstance(large.maxpool, torch.nn.MaxPool2d)
    assert small.conv1.stride == (1, 1) and isinstance(small.maxpool, torch.nn.Identity)
    gray = build_backbone("resnet18", 1, 224).eval()
    with torch.no_grad():
        assert gray(torch.randn(1, 1, 160, 160)).shape == (1, 512)


def test_a_small_cnn_process_never_imports_torchvision():
    """A Ray worker or CLI call training small_cnn is spared torchvision's 1.5 s import."""
    code = (
        "import sys; from recsys.engines import ray_train; from recsys.vision import backbones; "
        "backbones.build_backbone('small_cnn', 3, 16); print('torchvision' in sys.modules)"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "False"

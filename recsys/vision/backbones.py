"""Backbones shared by every self-supervised method: image batch in, feature vector out.

Every backbone maps ``(B, C, S, S)`` float images to ``(B, out_dim)`` features and carries
``out_dim``. Nothing is downloaded: weights come from random init or a local checkpoint.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch
from torch import nn

from recsys.errors import InvalidInput, InvalidSettings

log = logging.getLogger(__name__)

BACKBONES = ("small_cnn", "resnet18", "resnet50", "vit_tiny")


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
    return [conv, nn.BatchNorm2d(c_out), nn.ReLU()]


class SmallCNN(nn.Module):
    """A VGG-style CNN that is fast on a 2-core CPU.

    A stride-2 stem (on a CPU a full-resolution first stage costs as much as the rest of the
    network), then one stage at 1/2 and two at 1/4 of the input size, widths ``width``,
    ``2*width``, ``4*width``. The output is the global average of the last stage concatenated
    with its global max (a cheap way to keep peaky features): ``8 * width`` dimensions.
    """

    def __init__(self, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_conv_bn(in_channels, w, stride=2),  # (B, w, S/2, S/2)
            *_conv_bn(w, 2 * w),
            nn.MaxPool2d(2),  # (B, 2w, S/4, S/4)
            *_conv_bn(2 * w, 4 * w),
            *_conv_bn(4 * w, 4 * w),
        )
        self.out_dim = 8 * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)  # (B, 4w, S/4, S/4)
        return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)  # (B, 8w)


# Inputs at least this large keep ResNet's ImageNet stem (7x7 stride 2 + max-pool, 1/4 of the
# input); smaller ones get a 3x3 stride-1 stem and no max-pool, which at 224 px would cost 16x.
RESNET_IMAGENET_STEM_FROM = 96


class _TorchvisionResNet(nn.Module):
    """torchvision ResNet; for small images a 3x3 stride-1 stem and no max-pool."""

    def __init__(self, net: nn.Module, in_channels: int, input_size: int) -> None:
        super().__init__()
        if input_size < RESNET_IMAGENET_STEM_FROM:
            net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.out_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, out_dim)


class _ViT(nn.Module):
    """A tiny ViT (patch 4, 6 layers, width 192) for small images; any channel count."""

    def __init__(self, in_channels: int, input_size: int) -> None:
        super().__init__()
        if input_size % 4:
            raise InvalidSettings(f"vit_tiny needs an input_size divisible by 4, got {input_size}")
        from torchvision.models.vision_transformer import VisionTransformer  # see build_backbone

        net = VisionTransformer(input_size, 4, 6, 3, 192, 768)
        net.conv_proj = nn.Conv2d(in_channels, 192, 4, stride=4)
        net.heads = nn.Identity()
        self.out_dim = 192
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, 192)


def build_backbone(name: str, in_channels: int, input_size: int, width: int = 32) -> nn.Module:
    """A randomly initialised backbone by name (see ``BACKBONES``).

    torchvision is imported only for its own backbones: it takes a process 1.5 s to import
    (it pulls in torch._dynamo), which a Ray worker or a CLI call on small_cnn need not pay."""
    if name == "small_cnn":
        return SmallCNN(in_channels, width)
    from torchvision.models import resnet18, resnet50

    if name == "resnet18":
        return _TorchvisionResNet(resnet18(weights=None), in_channels, input_size)
    if name == "resnet50":
        return _TorchvisionResNet(resnet50(weights=None), in_channels, input_size)
    if name == "vit_tiny":
        return _ViT(in_channels, input_size)
    raise InvalidSettings(f"backbone {name!r} is not one of {', '.join(BACKBONES)}")


def read_weights(path: str | Path) -> dict:
    """The state dict a local checkpoint holds (a recsys model file's ``backbone`` one), or
    ``InvalidInput`` saying why not: what ``--weights`` is checked by before any work."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        # not torch's message: it suggests weights_only=False, which runs what the file holds
        raise InvalidInput(
            f"{path} is not a PyTorch checkpoint of tensors ({type(exc).__name__}); give a "
            "file saved with torch.save(model.state_dict())"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("backbone"), dict):
        state = state["backbone"]
    if not isinstance(state, dict):
        raise InvalidInput(f"{path} holds no state dict; save one with torch.save(m.state_dict())")
    return state


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> nn.Module:
    """Load a local state dict (or a recsys model file) into ``backbone``, in place.

    Keys may carry a ``backbone.`` or ``net.``-less torchvision layout; tensors whose shape
    does not match (for example an ImageNet 7x7 stem on the small-image 3x3 stem) are skipped
    with a warning. Raises ``InvalidInput`` when nothing matches.
    """
    state = read_weights(path)
    own = backbone.state_dict()
    matched = _match_keys(state, own)
    if not matched:
        raise InvalidInput(f"no tensor in {path} matches backbone {type(backbone).__name__}")
    skipped = sorted(set(own) - set(matched))
    if skipped:
        log.warning(
            "%d backbone tensors not in %s kept their init: %s", len(skipped), path, skipped[:5]
        )
    backbone.load_state_dict({**own, **matched})
    return backbone


def _match_keys(state: dict, own: dict) -> dict[str, torch.Tensor]:
    """Map checkpoint keys onto ``own`` by exact name, then with ``net.`` added or removed."""
    matched = {}
    for key, value in state.items():
        for candidate in (
            key,
            f"net.{key}",
            key.removeprefix("backbone."),
            key.removeprefix("net."),
        ):
            if candidate in own and own[candidate].shape == value.shape:
                matched[candidate] = value
                break
    return matched

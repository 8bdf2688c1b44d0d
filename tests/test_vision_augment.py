"""Batched augmentation: per-sample parameters, reproducible, any channel count."""

from __future__ import annotations

import pytest
import torch

from recsys.vision.augment import AugmentConfig, BatchAugment, crop_thetas, resized_crop


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("channels", [1, 3])
def test_views_have_configured_sizes_and_differ_per_sample(channels):
    cfg = AugmentConfig(n_local=2, local_size=8, erase_p=0.5)
    aug = BatchAugment(cfg, 16, [0.5] * channels, [0.25] * channels)
    x = torch.rand(1, channels, 20, 20).expand(6, -1, -1, -1)  # one image, six times
    views = aug.views(x, _gen())
    assert [tuple(v.shape) for v in views] == [(6, channels, 16, 16)] * 2 + [
        (6, channels, 8, 8)
    ] * 2
    first = views[0]
    assert not torch.allclose(first[0], first[1])  # same image, different parameters


def test_same_generator_seed_gives_same_views():
    aug = BatchAugment(AugmentConfig(erase_p=0.5), 12, [0.5], [0.25])
    x = torch.rand(4, 1, 12, 12)
    a, b = aug.views(x, _gen(5)), aug.views(x, _gen(5))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_full_crop_without_flip_is_identity_and_flip_mirrors():
    x = torch.rand(3, 2, 10, 10)
    theta = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).repeat(3, 1, 1)
    assert torch.allclose(resized_crop(x, theta, 10), x, atol=1e-5)
    theta[:, 0, 0] = -1
    assert torch.allclose(resized_crop(x, theta, 10), x.flip(-1), atol=1e-5)


def test_crops_stay_inside_the_image():
    cfg = AugmentConfig(scale=(0.1, 1.0))
    theta = crop_thetas(1000, cfg.scale, cfg, _gen())
    half_w, half_h = theta[:, 0, 0].abs(), theta[:, 1, 1]
    assert (theta[:, 0, 2].abs() + half_w <= 1 + 1e-6).all()
    assert (theta[:, 1, 2].abs() + half_h <= 1 + 1e-6).all()
    assert (theta[:, 0, 0] < 0).any() and (theta[:, 0, 0] > 0).any()


def test_hue_jitter_turns_colours_and_keeps_greys_and_brightness():
    """Colour photos of one product in many colours: without hue jitter the encoder told
    items apart by their tint (88% of a JPEG shop's image neighbours shared it)."""
    from recsys.vision.augment import color_jitter

    colours = torch.rand(64, 3, 4, 4) * 0.3 + 0.35  # pale: turned, they stay in the gamut
    greys = colours.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1).contiguous()
    turn = AugmentConfig(brightness=0, contrast=0, saturation=0, grayscale=0, jitter_p=1, hue=0.5)

    def luma(x):
        return (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)

    turned = color_jitter(colours, turn, torch.Generator().manual_seed(0))
    assert (turned - colours).abs().amax(dim=(1, 2, 3)).median() > 0.05  # hues moved
    torch.testing.assert_close(luma(turned), luma(colours), atol=2e-3, rtol=0)
    grey = color_jitter(greys, turn, torch.Generator().manual_seed(0))
    torch.testing.assert_close(grey, greys, atol=1e-5, rtol=0)  # no colour to turn
    still = AugmentConfig(brightness=0, contrast=0, saturation=0, grayscale=0, jitter_p=1, hue=0)
    same = color_jitter(colours, still, torch.Generator().manual_seed(0))
    torch.testing.assert_close(same, colours)

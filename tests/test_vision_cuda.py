"""The same behaviour on a GPU: bf16 autocast, channels_last, augmentation on the device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.vision import ImageEncoder, ImageEncoderConfig, MethodConfig, TrainConfig
from recsys.vision.augment import AugmentConfig, BatchAugment

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_augmentation_runs_on_the_gpu():
    aug = BatchAugment(AugmentConfig(erase_p=0.5, n_local=1), 16, [0.5] * 3, [0.25] * 3)
    x = torch.rand(8, 3, 20, 20, device="cuda")
    views = aug.views(x, torch.Generator().manual_seed(0))
    assert all(v.device.type == "cuda" and torch.isfinite(v).all() for v in views)


@pytest.mark.parametrize("method", ["simclr", "byol", "dino"])
@pytest.mark.parametrize("backbone", ["small_cnn", "resnet18"])
def test_every_method_trains_and_embeds_on_cuda(method, backbone):
    images = np.random.default_rng(0).integers(0, 256, size=(64, 20, 20), dtype=np.uint8)
    cfg = ImageEncoderConfig(
        method=method,
        backbone=backbone,
        width=8,
        input_size=16,
        heads=MethodConfig(hidden_dim=64, proj_dim=32, dino_out_dim=128),
        train=TrainConfig(epochs=2, batch_size=16),
    )
    enc = ImageEncoder(cfg, device="cuda").fit(images)
    vectors = enc.transform(images)
    assert np.isfinite(enc.train_result_.loss)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-4)


def test_colour_photos_get_gpu_sizes_and_train_on_cuda(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(16):
        paths.append(tmp_path / f"{i}.jpg")
        Image.fromarray(rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)).save(paths[-1])
    cfg = ImageEncoderConfig(
        backbone="resnet18",
        heads=MethodConfig(hidden_dim=64, proj_dim=32),
        train=TrainConfig(epochs=1, batch_size=8),
    )
    enc = ImageEncoder(cfg, device="cuda").fit(paths)
    assert (enc.config_.input_size, enc.config_.train_size, enc.config_.channels) == (224, 156, 3)
    assert enc.transform(paths).shape == (16, 512)


@pytest.mark.parametrize("held_floats", [64 * 2**20, 100])
def test_cuda_embedding_keeps_order_through_pinned_double_buffers(monkeypatch, held_floats):
    from recsys.vision import encoder
    from recsys.vision.backbones import build_backbone

    monkeypatch.setattr(encoder, "_HELD_FLOATS", held_floats)  # 100: copied back every batch
    images = torch.from_numpy(
        np.random.default_rng(0).integers(0, 256, size=(203, 3, 24, 24), dtype=np.uint8)
    )
    backbone = build_backbone("small_cnn", 3, 24, 16)
    args = ([0.5] * 3, [0.25] * 3)
    on_gpu = encoder.embed_tensor(backbone, images, *args, torch.device("cuda"), batch_size=32)
    on_cpu = encoder.embed_tensor(backbone, images, *args, torch.device("cpu"), batch_size=32)
    resident = encoder.embed_tensor(backbone, images.cuda(), *args, torch.device("cuda"), 32)
    assert (resident * on_gpu).sum(axis=1).min() > 0.999  # images already on the GPU
    assert on_gpu.shape == on_cpu.shape == (203, on_cpu.shape[1])
    cosine = (on_gpu * on_cpu).sum(axis=1)  # bf16 on the GPU, fp32 on the CPU
    assert cosine.min() > 0.99

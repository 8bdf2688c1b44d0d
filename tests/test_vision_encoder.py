"""ImageEncoder and the training loop on tiny data: every method trains, embeds, resumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.exceptions import NotFittedError

from recsys.vision import AugmentConfig, ImageEncoder, ImageEncoderConfig, MethodConfig, TrainConfig
from recsys.vision.augment import BatchAugment
from recsys.vision.backbones import build_backbone
from recsys.vision.data import as_image_tensor
from recsys.vision.encoder import apply_whitening, fit_whitening
from recsys.vision.methods import build_method
from recsys.vision.train import Trainer, lr_factor

TINY_HEADS = MethodConfig(hidden_dim=32, proj_dim=16, dino_out_dim=64)


def tiny_config(method: str = "simclr", **train) -> ImageEncoderConfig:
    return ImageEncoderConfig(
        method=method,
        backbone="small_cnn",
        width=4,
        input_size=12,
        heads=TINY_HEADS,
        train=TrainConfig(**{"epochs": 2, "batch_size": 8, "seed": 3, **train}),
    )


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(20, 14, 14), dtype=np.uint8)


@pytest.mark.parametrize("method", ["simclr", "byol", "dino"])
def test_every_method_fits_and_transforms_to_unit_vectors(method, images):
    enc = ImageEncoder(tiny_config(method), device="cpu").fit(images)
    vectors = enc.transform(images)
    assert vectors.shape == (20, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert np.isfinite(enc.train_result_.loss)
    assert enc.train_result_.steps == 4  # 2 epochs of 20 // 8 batches


def test_dino_trains_with_local_crops(images):
    cfg = tiny_config("dino")
    cfg = ImageEncoderConfig(**{**cfg.__dict__, "augment": AugmentConfig(n_local=2, local_size=8)})
    assert ImageEncoder(cfg, device="cpu").fit(images).transform(images[:3]).shape == (3, 32)


def test_same_seed_gives_identical_vectors_on_cpu(images):
    a = ImageEncoder(tiny_config(), device="cpu").fit(images).transform(images)
    b = ImageEncoder(tiny_config(), device="cpu").fit(images).transform(images)
    np.testing.assert_array_equal(a, b)


def test_transform_before_fit_raises(images):
    with pytest.raises(NotFittedError):
        ImageEncoder(tiny_config()).transform(images)


def test_colour_arrays_and_image_files_give_the_same_vectors(images, tmp_path):
    rgb = np.repeat(images[..., None], 3, axis=3)  # (N, H, W, 3)
    enc = ImageEncoder(tiny_config(epochs=1), device="cpu").fit(rgb)
    assert enc.config_.channels == 3
    paths = []
    for i, img in enumerate(rgb[:4]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(img).save(paths[-1])
    from_files = enc.transform(paths)
    np.testing.assert_allclose(from_files, enc.transform(rgb[:4]), atol=0.05)


def test_save_and_load_round_trip(images, tmp_path):
    enc = ImageEncoder(tiny_config("byol"), device="cpu").fit(images)
    enc.save(tmp_path / "model")
    state = torch.load(tmp_path / "model" / "model.pt", weights_only=True)
    assert state["config"]["method"] == "byol"
    loaded = ImageEncoder.load(tmp_path / "model", device="cpu")
    np.testing.assert_array_equal(loaded.transform(images), enc.transform(images))


def _trainer(checkpoint, cfg: ImageEncoderConfig) -> Trainer:
    torch.manual_seed(cfg.train.seed)
    backbone = build_backbone(cfg.backbone, 1, cfg.input_size, cfg.width)
    method = build_method(cfg.method, backbone, cfg.heads)
    augment = BatchAugment(cfg.augment, cfg.input_size, [0.5], [0.25])
    return Trainer(method, augment, cfg.train, torch.device("cpu"), checkpoint, {"v": 1})


@pytest.mark.parametrize("method", ["simclr", "dino"])
def test_resumed_training_equals_uninterrupted(method, images, tmp_path):
    cfg = tiny_config(method, epochs=3)
    data = torch.as_tensor(images[:, None, 1:13, 1:13]).contiguous()  # (N, 1, 12, 12)
    whole = _trainer(None, cfg)
    whole.fit(data)
    interrupted = _trainer(tmp_path / "ckpt.pt", cfg)
    for _ in range(2):  # two steps, then the process "dies" after a checkpoint
        interrupted.train_step(data)
    interrupted.save_checkpoint()
    resumed = _trainer(tmp_path / "ckpt.pt", cfg)
    result = resumed.fit(data)
    assert result.steps == 6
    for key, value in whole.method.state_dict().items():
        torch.testing.assert_close(resumed.method.state_dict()[key], value, msg=key)


def test_time_budget_stops_training(images):
    enc = ImageEncoder(tiny_config(time_budget=0.5, epochs=1000), device="cpu").fit(images)
    assert 0.5 <= enc.train_result_.elapsed < 5


def test_warmup_then_cosine_schedule():
    cfg = TrainConfig(warmup=0.1, min_lr_ratio=0.0)
    assert lr_factor(0.05, cfg) == pytest.approx(0.5)
    assert lr_factor(0.1, cfg) == pytest.approx(1.0)
    assert lr_factor(0.55, cfg) == pytest.approx(0.5)
    assert lr_factor(1.0, cfg) == pytest.approx(0.0, abs=1e-9)


def test_flip_averaged_vectors_are_mirror_invariant(images):
    cfg = ImageEncoderConfig(**{**tiny_config().__dict__, "embed_flip": True})
    enc = ImageEncoder(cfg, device="cpu").fit(images)
    crops = images[:, 1:13, 1:13]  # already input_size: no resampling
    mirrored = np.ascontiguousarray(crops[:, :, ::-1])
    np.testing.assert_allclose(enc.transform(crops), enc.transform(mirrored), atol=1e-5)


def test_full_whitening_gives_identity_covariance_and_square_root_halves_the_spread():
    rng = np.random.default_rng(1)
    mixing = rng.normal(size=(6, 6)) * np.array([5.0, 2.0, 1.0, 0.5, 0.2, 0.1])  # (6, 6)
    vectors = (rng.normal(size=(4000, 6)) @ mixing.T + 3.0).astype(np.float32)
    mean, projection = fit_whitening(vectors, power=1.0, shrink=0.0)
    white = (vectors - mean) @ projection
    np.testing.assert_allclose(np.cov(white, rowvar=False), np.eye(6), atol=1e-3)
    mean, projection = fit_whitening(vectors, power=0.5, shrink=0.0)
    spread = np.linalg.eigvalsh(np.cov((vectors - mean) @ projection, rowvar=False))
    original = np.linalg.eigvalsh(np.cov(vectors, rowvar=False))
    np.testing.assert_allclose(spread, np.sqrt(original), rtol=1e-3)  # variances -> their roots
    out = apply_whitening(vectors, (mean, projection))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_whitening_needs_twice_as_many_vectors_as_dimensions():
    vectors = np.random.default_rng(2).normal(size=(11, 6)).astype(np.float32)
    assert fit_whitening(vectors, 0.5, 0.01) is None
    assert fit_whitening(np.ones((50, 6), np.float32), 0.5, 0.01) is None  # no spread at all
    assert fit_whitening(np.vstack([vectors] * 2), 0.0, 0.01) is None  # switched off


def test_encoder_whitens_with_enough_images_and_keeps_it_on_save(tmp_path):
    images = np.random.default_rng(3).integers(0, 256, size=(80, 14, 14), dtype=np.uint8)
    enc = ImageEncoder(tiny_config(epochs=1), device="cpu").fit(images)  # 80 >= 2 x 32 dims
    assert enc.whitening_ is not None
    vectors = enc.transform(images)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    # whitened training vectors are centred: their mean is much shorter than without whitening
    unwhitened = enc._embed(as_image_tensor(images, 12, 1))
    assert np.linalg.norm(vectors.mean(0)) < 0.5 * np.linalg.norm(unwhitened.mean(0))
    enc.save(tmp_path / "model")
    loaded = ImageEncoder.load(tmp_path / "model", device="cpu")
    np.testing.assert_array_equal(loaded.transform(images), vectors)
    off = ImageEncoderConfig(**{**tiny_config(epochs=1).__dict__, "whiten": 0.0})
    assert ImageEncoder(off, device="cpu").fit(images).whitening_ is None


def test_simclr_contrasts_local_views_with_both_global_views():
    """With multi-crop views, SimCLR's loss is the mean NT-Xent of the global pair and of
    every (global, local) pair (it once dropped the local views); with two views it is the
    plain pair's."""
    from recsys.vision.losses import nt_xent_loss

    torch.manual_seed(0)
    method = build_method("simclr", build_backbone("small_cnn", 1, 12, width=4), TINY_HEADS).eval()
    views = [torch.randn(6, 1, s, s) for s in (12, 12, 8, 8)]
    with torch.no_grad():
        z = [method.projector(method.backbone(v)) for v in views]
        plain = nt_xent_loss(z[0], z[1], method.cfg.temperature)
        pairs = [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3)]
        mean = torch.stack([nt_xent_loss(z[a], z[b], method.cfg.temperature) for a, b in pairs])
        assert float(method(views[:2])) == pytest.approx(float(plain), rel=1e-5)
        assert float(method(views)) == pytest.approx(float(mean.mean()), rel=1e-6)
        assert float(mean.mean()) != pytest.approx(float(plain), rel=1e-6)  # the test can tell


def test_simclr_trains_with_local_crops(images):
    cfg = tiny_config("simclr")
    cfg = ImageEncoderConfig(**{**cfg.__dict__, "augment": AugmentConfig(n_local=2, local_size=8)})
    assert ImageEncoder(cfg, device="cpu").fit(images).transform(images[:3]).shape == (3, 32)


def test_cuda_embedding_batches_hold_about_16_mb_of_small_images():
    from recsys.vision.encoder import embedding_batch

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert embedding_batch(1024, (1, 28, 28), cuda) == 8192  # capped
    assert embedding_batch(1024, (3, 72, 72), cuda) == 1078  # 16 MB of 72 px colour
    assert embedding_batch(1024, (3, 224, 224), cuda) == 1024  # never below the caller's
    assert embedding_batch(1024, (1, 28, 28), cpu) == 1024  # the CPU keeps the caller's


def test_epochs_count_images_when_the_catalog_is_not_a_whole_number_of_batches():
    """30 images in batches of 16 (one whole batch a pass): --epochs 4 sees each image about
    4 times, not 2."""
    images = np.random.default_rng(0).integers(0, 256, size=(30, 16, 16), dtype=np.uint8)
    config = ImageEncoderConfig(width=8, train=TrainConfig(epochs=4, batch_size=16))
    result = ImageEncoder(config, device="cpu").fit(images).train_result_
    assert result.steps == 8 and 4 <= result.epochs < 4.5

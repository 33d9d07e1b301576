import pickle

import pytest
import torch
from safetensors.torch import save_file

from captioning.api import load_caption_model
from captioning.core.checkpoint import (
    checkpoint_skips,
    load_training_state,
    read_checkpoint,
    save_checkpoint,
    save_training_state,
)
from captioning.core.errors import UserError
from captioning.core.vocab import Vocabulary
from captioning.model import CaptionModel
from tests.conftest import tiny_config


def test_round_trip_keeps_config_vocab_extra_and_weights(trained, tmp_path):
    ckpt, _, _, vocab, model = trained
    path = save_checkpoint(tmp_path / "m.safetensors", model, kind="caption", config=model.cfg.to_json(),
                           vocab=vocab.to_json(), extra={"note": "x"})
    loaded = read_checkpoint(path, kind="caption")
    assert loaded.vocab == vocab.to_json() and loaded.extra == {"note": "x"}
    assert loaded.config == model.cfg.to_json()
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict[k], v)


def test_fp16_checkpoint_loads_into_fp32_model(trained, tmp_path):
    _, _, _, vocab, model = trained
    path = save_checkpoint(tmp_path / "half.safetensors", model, kind="caption", config=model.cfg.to_json(),
                           vocab=vocab.to_json(), dtype=torch.float16)
    half, _, _ = load_caption_model(path)
    w = dict(half.named_parameters())["decoder.fc.weight"]
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, model.decoder.fc.weight.detach().half().float())


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"\x80\x04K\x01."])
def test_garbage_is_refused(tmp_path, content):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(content)
    with pytest.raises(UserError, match="not a valid checkpoint"):
        read_checkpoint(p)


def test_foreign_safetensors_and_wrong_kind_are_refused(trained, tmp_path):
    p = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(p))
    with pytest.raises(UserError, match="not a show-attend-answer"):
        read_checkpoint(p)
    with pytest.raises(UserError, match="expected a 'vqa'"):
        read_checkpoint(trained[0], kind="vqa")
    with pytest.raises(UserError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "missing.safetensors")


def test_weights_that_do_not_fit_the_config_are_refused(trained, tmp_path):
    ckpt, _, _, vocab, model = trained
    cfg = model.cfg.to_json()
    cfg["decoder"]["hidden_dim"] = 99
    p = save_checkpoint(tmp_path / "m.safetensors", model, kind="caption", config=cfg, vocab=vocab.to_json())
    with pytest.raises(UserError, match="do not fit"):
        load_caption_model(p)


class Boom:
    def __reduce__(self):
        return (print, ("pwned",))


def test_training_state_never_runs_a_pickle(tmp_path, capsys):
    p = tmp_path / "evil.state.pt"
    torch.save({"x": Boom()}, p)  # torch.save pickles arbitrary objects; loading must refuse it
    with pytest.raises(UserError, match="refused") as e:
        load_training_state(p)
    assert "pwned" not in capsys.readouterr().out
    # torch's own message advises re-running with weights_only=False, i.e. running the pickle
    assert "weights_only" not in str(e.value) and "\n" not in str(e.value)
    assert "Python objects beyond tensors" in str(e.value)
    p2 = tmp_path / "raw.pt"
    p2.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(UserError):
        load_training_state(p2)
    good = tmp_path / "good.state.pt"
    save_training_state(good, {"a": torch.ones(2), "n": 3})
    assert load_training_state(good)["n"] == 3


def test_save_is_atomic(trained, tmp_path, monkeypatch):
    ckpt, _, _, vocab, model = trained
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, kind="caption", config=model.cfg.to_json(), vocab=vocab.to_json())
    before = path.read_bytes()

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("captioning.core.checkpoint.save_file", crash)
    with pytest.raises(OSError):
        save_checkpoint(path, model, kind="caption", config=model.cfg.to_json(), vocab=vocab.to_json())
    assert path.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["m.safetensors"]


def test_fine_tuned_registry_cnn_stores_only_its_trained_blocks(tmp_path):
    """A CNN fine-tuned from its registry weights: the checkpoint holds the trained blocks
    only, and loading takes the frozen rest from the registry, giving back the same model."""
    vocab = Vocabulary.build(["a red circle"], min_count=1)
    cfg = tiny_config(len(vocab))
    cfg.encoder.fine_tune_blocks, cfg.encoder.in_checkpoint = 2, False  # the head and _blocks.15
    model = CaptionModel(cfg)
    with torch.no_grad():  # as training would: the trained blocks leave the registry weights
        model.encoder._conv_head.weight.mul_(1.5)
        model.encoder._blocks[15]._project_conv.weight.add_(0.01)
    path = save_checkpoint(tmp_path / "ft.safetensors", model, kind="caption", config=cfg.to_json(),
                           vocab=vocab.to_json(), skip=checkpoint_skips(model))
    stored = {k for k in read_checkpoint(path).state_dict if k.startswith("encoder.")}
    assert stored and all(k.startswith(("encoder._blocks.15.", "encoder._conv_head.", "encoder._bn1.")) for k in stored)
    assert "encoder._bn1.running_var" in stored  # a trained block's BatchNorm statistics move too
    loaded, _, _ = load_caption_model(path)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_a_training_folder_means_its_best_else_last_checkpoint(trained, tmp_path):
    """--checkpoint runs/coco used to look for model.safetensors, which training never writes."""
    from captioning.core.checkpoint import resolve, resolve_checkpoint, state_path

    ckpt, *_ = trained
    run = ckpt.parent
    assert resolve_checkpoint(run, ckpt)[0] == run / "best.safetensors"
    assert resolve(run, ("last.safetensors",)) == run / "last.safetensors"
    assert state_path(run) == run / "last.state.pt"
    only_last = tmp_path / "only_last"
    only_last.mkdir()
    (only_last / "last.safetensors").write_bytes((run / "last.safetensors").read_bytes())
    assert read_checkpoint(only_last).path == only_last / "last.safetensors"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="looked for best.safetensors and last.safetensors"):
        read_checkpoint(empty)

"""captioning.scst: self-critical training on the tiny shapes.

The improvement test trains directly with the objective (no validation between steps, which
would cost more than the steps): a partly trained captioner's greedy CIDEr-D on its training
images, with the toolkit's document frequencies (captioning.cider equals pycocoevalcap),
must go up under SCST with either baseline.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from captioning.core.checkpoint import read_checkpoint
from captioning.core.trainer import fit
from captioning.data import CaptionDataset, collate_captions, references
from captioning.model import CaptionModel
from captioning.scst import ScstObjective, sequence_logprob, sequences
from captioning.search import greedy, sample
from captioning.training import CaptionTask, caption_loss

from ..conftest import IMAGE_SIZE, tiny_config, tiny_train_config

ROOT = Path(__file__).resolve().parents[2]


def features_of(model, records, vocab):
    batch = collate_captions([CaptionDataset(records, vocab, IMAGE_SIZE)[i] for i in range(len(records))])
    with torch.no_grad():
        return model.encode(batch.images.float() / 255), batch


def test_rescoring_gives_the_log_probability_of_what_was_sampled(shapes):
    """Sampled without autograd, rescored by teacher forcing: the same sum of log-probabilities
    (words and <end>, or the words alone for a caption the length limit cut)."""
    records, vocab, *_ = shapes
    torch.manual_seed(0)
    model = CaptionModel(tiny_config(len(vocab), dropout=0.5, max_length=6)).eval()
    feats, _ = features_of(model, records, vocab)
    hyps = sample(model.decoder, feats.repeat_interleave(3, 0), max_length=6)
    assert any(not h.finished for h in hyps) and any(h.finished for h in hyps)
    captions, lengths = sequences(hyps, feats.device)
    logits, _ = model.decoder(feats, captions, lengths, torch.arange(len(records)).repeat_interleave(3))
    got = sequence_logprob(logits, captions, lengths)
    expected = torch.tensor([h.score * (len(h.tokens) + h.finished) for h in hyps], dtype=torch.float32)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def greedy_cider(model, objective, feats, ids) -> float:
    model.eval()
    with torch.no_grad():
        hyps = greedy(model.decoder, feats, model.cfg.decoder.max_length)
    return float(objective.rewards(ids, [h.tokens for h in hyps]).mean())


@pytest.mark.parametrize("baseline", ["mean", "greedy"])
def test_scst_raises_the_greedy_cider_of_a_partly_trained_model(shapes, baseline):
    records, vocab, *_ = shapes
    torch.manual_seed(0)
    model = CaptionModel(tiny_config(len(vocab)))
    feats, batch = features_of(model, records, vocab)
    objective = ScstObjective(vocab, references(records), samples=5, baseline=baseline)
    ids = batch.image_ids
    opt = torch.optim.Adam(model.decoder.parameters(), lr=3e-3)
    for _ in range(20):  # cross-entropy, stopped early: the captions are partly right
        logits, alphas = model.decoder(feats, batch.captions, batch.lengths, batch.image_index)
        loss, _, _ = caption_loss(logits, alphas, batch.captions, 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    before = greedy_cider(model, objective, feats, ids)
    assert before < 0.6 * float(objective.rewards(ids, [c[1:-1] for c in batch.captions[::2].tolist()]).mean())
    opt = torch.optim.Adam(model.decoder.parameters(), lr=3e-4)
    logs = []
    model.train()
    for _ in range(60):
        loss, log = objective.loss(model, feats, ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
        logs.append(log)
    assert model.decoder.training  # the objective samples in eval mode and restores the mode
    after = greedy_cider(model, objective, feats, ids)
    assert after > before + 1.0, (before, after)
    # The baselines are what they say: the mean of the other samples averages to the mean
    # sample reward; the greedy one is the greedy caption's reward.
    for log in logs:
        other = log["reward"] if baseline == "mean" else log["greedy_cider"]
        assert log["baseline"] == pytest.approx(other, abs=1e-9)


def _run(records, vocab, out, epochs, resume=None, seed=0, baseline="mean"):
    torch.manual_seed(123)  # the model's init; fit() seeds everything after it
    model = CaptionModel(tiny_config(len(vocab), dropout=0.3))
    ds = CaptionDataset(records[:12], vocab, IMAGE_SIZE)
    cfg = tiny_train_config(epochs=epochs, seed=seed, scst=True, scst_from_epoch=1, scst_lr=1e-3,
                            scst_samples=3, scst_baseline=baseline)
    task = CaptionTask(model, vocab, ds, None, {}, cfg)
    return model, fit(task, cfg, out, resume=resume)


def test_sampling_is_reproducible_and_resume_mid_scst_equals_an_uninterrupted_run(shapes, tmp_path):
    """1 cross-entropy epoch, then SCST at its own learning rate; the run stopped after
    epoch 2 (mid-SCST) and resumed equals the straight run: same samples (rewards), losses
    and weights. The run before its resume is itself a second run with the same seed."""
    records, vocab, *_ = shapes
    model_a, a = _run(records, vocab, tmp_path / "a", epochs=3)
    _, first = _run(records, vocab, tmp_path / "b", epochs=2)
    model_b, b = _run(records, vocab, tmp_path / "b", epochs=3, resume=tmp_path / "b" / "last.safetensors")
    assert "train_reward" not in a.history[0] and "train_reward" in a.history[1]
    assert a.history[0]["lr"] == 3e-3 and a.history[1]["lr"] == 1e-3
    keys = ("train_loss", "train_reward", "train_baseline", "train_greedy_cider")
    assert [[row.get(k) for k in keys] for row in first.history] == [[row.get(k) for k in keys] for row in a.history[:2]]
    assert [row["train_loss"] for row in b.history] == pytest.approx([row["train_loss"] for row in a.history], rel=1e-5)
    assert [row["train_reward"] for row in b.history[1:]] == [row["train_reward"] for row in a.history[1:]]
    for k, v in model_a.state_dict().items():
        torch.testing.assert_close(model_b.state_dict()[k], v, rtol=1e-5, atol=1e-6, msg=k)
    _, other_seed = _run(records, vocab, tmp_path / "c", epochs=2, seed=1)
    assert other_seed.history[1]["train_reward"] != a.history[1]["train_reward"]


def test_train_caption_scst_from_a_fine_tuned_checkpoint_with_cached_features(trained, shapes, tmp_path):
    """scripts/train_caption.py --scst --init-from a checkpoint whose last CNN block was
    fine-tuned, that block frozen and its features cached: the features are keyed on the
    loaded weights (not the registry's, which have the same name and flags), and the SCST
    checkpoints keep storing the block, unchanged; resuming such a run keeps the CNN frozen."""
    ckpt, _, _, _, _ = trained
    _, _, ann, img_dir = shapes
    common = ["--images", img_dir, "--captions", ann, "--image-size", str(IMAGE_SIZE), "--epochs", "1",
              "--batch-size", "6", "--num-workers", "0", "--progress", "false"]

    def train(*args, out):
        r = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_caption.py"), *common, *args, "--out", out],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        return read_checkpoint(Path(out) / "last.safetensors")

    tuned = train("--init-from", ckpt, "--fine-tune-encoder", "1", "--encoder-lr", "1e-2", out=tmp_path / "ft")
    cache = tmp_path / "cache"
    train("--init-from", ckpt, "--cache-features", cache, "--scst", "--scst-samples", "2", out=tmp_path / "registry")
    scst = train("--init-from", tmp_path / "ft" / "last.safetensors", "--cache-features", cache, "--scst",
                 "--scst-samples", "2", "--scst-baseline", "greedy", out=tmp_path / "scst")
    assert len(list(cache.glob("train-*.npy"))) == 2  # two CNNs, two caches
    common[common.index("--epochs") + 1] = "2"
    resumed = train("--resume", tmp_path / "scst" / "last.safetensors", "--cache-features", cache, "--scst",
                    "--scst-samples", "2", "--scst-baseline", "greedy", out=tmp_path / "scst")
    assert resumed.extra["epoch"] == 2 and len(list(cache.glob("train-*.npy"))) == 2
    encoder = {k: v for k, v in tuned.state_dict.items() if k.startswith("encoder.")}
    assert encoder and {k for k in scst.state_dict if k.startswith("encoder.")} == set(encoder)
    for k, v in encoder.items():
        assert torch.equal(scst.state_dict[k], v), k
    assert any(not torch.equal(scst.state_dict[k], tuned.state_dict[k]) for k in tuned.state_dict if k.startswith("decoder."))
    assert scst.extra["train_config"]["scst"] is True
    assert {"train_reward", "train_baseline", "train_greedy_cider"} <= set(scst.extra["metrics"])


def test_bad_scst_settings_are_user_errors():
    """A typo in --scst-baseline or too few samples is one line from the CLI, not a traceback."""
    from captioning.core.errors import UserError
    from captioning.core.vocab import Vocabulary
    from captioning.scst import ScstObjective

    vocab = Vocabulary.build(["a red square"])
    with pytest.raises(UserError, match="--scst-baseline must be one of mean, greedy"):
        ScstObjective(vocab, {1: ["a red square"]}, 5, "median")
    with pytest.raises(UserError, match="needs --scst-samples 2 or more"):
        ScstObjective(vocab, {1: ["a red square"]}, 1, "mean")

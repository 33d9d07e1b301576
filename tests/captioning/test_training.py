"""The tiny shapes run: real COCO JSON through pycocotools, real Lite0 features, real fit()."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from captioning.api import Captioner, caption_dataset
from captioning.core.checkpoint import read_checkpoint
from captioning.core.errors import UserError
from captioning.core.trainer import fit
from captioning.data import CaptionDataset, references
from captioning.model import CaptionModel
from captioning.training import CaptionTask

from ..conftest import IMAGE_SIZE, tiny_config, tiny_train_config

ROOT = Path(__file__).resolve().parents[2]


def test_loss_goes_down_and_greedy_captions_match_the_references(trained):
    ckpt, state, records, vocab, model = trained
    losses = [row["train_ce"] for row in state.history]
    assert losses[-1] < 0.25 * losses[0]
    ds = CaptionDataset(records, vocab, IMAGE_SIZE)
    caps = caption_dataset(model, vocab, ds, beam_size=1)
    refs = references(records)
    hits = sum(caps[i] in refs[i] for i in refs)
    assert hits / len(refs) >= 0.9, caps
    assert state.best >= state.history[0]["val_CIDEr"]


def test_log_and_checkpoints_are_written(trained):
    ckpt, state, *_ = trained
    out = ckpt.parent
    assert (out / "best.safetensors").exists() and (out / "last.safetensors").exists() and (out / "last.state.pt").exists()
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert len(rows) == len(state.history) and {"train_loss", "val_CIDEr", "val_Bleu_4", "lr"} <= set(rows[0])


def test_save_reload_captions_identically(trained, shapes):
    ckpt, _, records, vocab, model = trained
    captioner = Captioner.from_pretrained(ckpt)
    paths = [r.path for r in records[:6]]
    again = Captioner.from_pretrained(ckpt)(paths, beam_size=3)
    first = captioner(paths, beam_size=3)
    assert [r.caption for r in first] == [r.caption for r in again]
    assert [r.score for r in first] == [r.score for r in again]
    assert captioner.extra["trained_on"] == "test shapes"


def _run(records, vocab, out, epochs, resume=None, **decoder):
    torch.manual_seed(123)  # the model's init; fit() seeds everything after that itself
    model = CaptionModel(tiny_config(len(vocab), dropout=0.3, **decoder))
    ds = CaptionDataset(records[:12], vocab, IMAGE_SIZE)
    cfg = tiny_train_config(epochs=epochs, augment=0.5)
    task = CaptionTask(model, vocab, ds, None, {}, cfg)
    return fit(task, cfg, out, resume=resume)


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(shapes, tmp_path):
    records, vocab, *_ = shapes
    straight = _run(records, vocab, tmp_path / "a", epochs=3)
    _run(records, vocab, tmp_path / "b", epochs=1)
    resumed = _run(records, vocab, tmp_path / "b", epochs=3, resume=tmp_path / "b" / "last.safetensors")
    a = [row["train_loss"] for row in straight.history]
    b = [row["train_loss"] for row in resumed.history]
    assert len(b) == 3
    assert a == pytest.approx(b, rel=1e-5)


@pytest.mark.parametrize("variant", [{"attention": "hard"}, {"cell": "gru", "layers": 2, "attention": "hard"}],
                         ids=["lstm/1/hard", "gru/2/hard"])
def test_resume_restores_the_hard_attention_baseline_and_gives_the_same_losses(shapes, tmp_path, variant):
    # Hard attention draws cells and its minibatches' sample-or-expectation choice from the
    # RNG, and its REINFORCE baseline is a buffer of the decoder: resume must restore both.
    records, vocab, *_ = shapes
    straight = _run(records, vocab, tmp_path / "a", 3, **variant)
    _run(records, vocab, tmp_path / "b", 1, **variant)
    resumed = _run(records, vocab, tmp_path / "b", 3, resume=tmp_path / "b" / "last.safetensors", **variant)
    for key in ("train_loss", "train_reinforce", "train_baseline", "train_entropy"):
        assert [r[key] for r in straight.history] == pytest.approx([r[key] for r in resumed.history], rel=1e-5), key
    rows = list(csv.DictReader(open(tmp_path / "b" / "log.csv")))
    assert {"train_reinforce", "train_baseline", "train_entropy"} <= set(rows[0])
    baseline = read_checkpoint(tmp_path / "b" / "last.safetensors").state_dict["decoder.reinforce_baseline"]
    assert float(baseline) > 0  # a moving average of positive NLLs, from 0


def test_init_from_starts_a_fine_tuning_run_from_a_frozen_one(trained, shapes, tmp_path):
    """scripts/train_caption.py --init-from: the new run starts from the checkpoint's decoder
    and vocabulary (with both learning rates 0 it ends exactly there) and, fine-tuning a
    registry CNN, stores only the block it trains."""
    ckpt, _, _, vocab, _ = trained
    _, _, ann, img_dir = shapes
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_caption.py"), "--images", img_dir,
                        "--captions", ann, "--init-from", ckpt, "--fine-tune-encoder", "1",
                        "--image-size", str(IMAGE_SIZE), "--lr", "0", "--encoder-lr", "0", "--epochs", "1",
                        "--batch-size", "6", "--num-workers", "0", "--progress", "false", "--out", tmp_path],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    before, after = read_checkpoint(ckpt), read_checkpoint(tmp_path / "last.safetensors")
    assert after.vocab == before.vocab and after.config["decoder"] == before.config["decoder"]
    assert after.config["encoder"]["fine_tune_blocks"] == 1
    decoder = [k for k in before.state_dict if k.startswith("decoder.")]
    assert decoder
    for k in decoder:
        assert torch.equal(after.state_dict[k], before.state_dict[k]), k
    assert {k.split(".")[1] for k in after.state_dict if k.startswith("encoder.")} == {"_conv_head", "_bn1"}


def test_amp_trains_in_bf16_exactly_where_the_device_has_it(shapes):
    """--amp (on by default) autocasts the training step to bf16 on a CPU with native bf16
    (and on CUDA), never where bf16 would be emulated; --amp false stays fp32."""
    from captioning.core.precision import native_bf16
    from captioning.core.trainer import LoopState, default_param_groups, train_one_epoch, uses_bf16
    from captioning.data import collate_captions

    records, vocab, *_ = shapes
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = CaptionModel(tiny_config(len(vocab)))
    batch = collate_captions([CaptionDataset(records[:4], vocab, IMAGE_SIZE)[i] for i in range(4)])
    seen = []
    model.decoder.fc.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    for amp in (True, False):
        cfg = tiny_train_config(amp=amp)
        assert uses_bf16(cfg, cpu) == (amp and native_bf16(cpu))
        task = CaptionTask(model, vocab, None, None, {}, cfg)
        seen.clear()
        train_one_epoch(task, model, [batch], torch.optim.Adam(default_param_groups(model, cfg)), cfg, cpu, LoopState())
        assert set(seen) == {torch.bfloat16 if uses_bf16(cfg, cpu) else torch.float32}


@pytest.mark.slow
def test_compile_with_static_shapes_trains_like_eager(shapes, tmp_path):
    # fit() with --compile --static-shapes: padded teacher-forcing steps, compiled for static
    # shapes (CUDA graphs on a GPU), and the compiled decoding step in validation.
    records, vocab, _, _ = shapes
    ds = CaptionDataset(records, vocab, IMAGE_SIZE)
    histories = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = CaptionModel(tiny_config(len(vocab)))
        cfg = tiny_train_config(epochs=2, compile=compiled, static_shapes=compiled)
        state = fit(CaptionTask(model, vocab, ds, ds, references(records), cfg), cfg, tmp_path / str(compiled))
        assert model.decoder.padded_steps == compiled
        histories.append([row[k] for row in state.history for k in ("train_ce", "val_CIDEr")])
    assert len(histories[1]) == 4
    assert histories[1] == pytest.approx(histories[0], rel=1e-4)


def test_static_shapes_without_compile_is_refused_in_one_line(shapes, tmp_path):
    records, vocab, _, _ = shapes
    ds = CaptionDataset(records, vocab, IMAGE_SIZE)
    cfg = tiny_train_config(static_shapes=True)
    with pytest.raises(UserError, match="with --compile"):
        fit(CaptionTask(CaptionModel(tiny_config(len(vocab))), vocab, ds, ds, references(records), cfg), cfg, tmp_path)
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_hard_stacked_gru_trains_evaluates_and_captions_end_to_end(trained, shapes, tmp_path):
    """The variant flags through scripts/train_caption.py (saved in the checkpoint), from
    cached features, then evaluate_caption.py in both hard decodings and the CLI's --html;
    and hard attention started from a soft model (--init-from, --attention hard)."""
    from captioning.cli import main as caption_main

    _, _, ann, img_dir = shapes
    common = ["--images", img_dir, "--captions", ann, "--image-size", str(IMAGE_SIZE), "--epochs", "2",
              "--batch-size", "6", "--num-workers", "0", "--progress", "false"]
    out = tmp_path / "gru2hard"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_caption.py"), *common, "--val-captions", ann,
                        "--cell", "gru", "--layers", "2", "--attention", "hard", "--hard-decode", "argmax",
                        "--embed-dim", "16", "--hidden-dim", "24", "--attention-dim", "16",
                        "--cache-features", tmp_path / "cache", "--out", out], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    ckpt = read_checkpoint(out / "last.safetensors")
    dec = ckpt.config["decoder"]
    assert (dec["cell"], dec["layers"], dec["attention"], dec["hard_decode"]) == ("gru", 2, "hard", "argmax")
    assert {"train_reinforce", "train_baseline", "train_entropy"} <= set(ckpt.extra["metrics"])
    for decode in ("expect", "argmax"):
        r = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate_caption.py"), "--captions", ann,
                            "--images", img_dir, "--checkpoint", out / "last.safetensors", "--beam-size", "2",
                            "--hard-decode", decode, "--no-meteor", "--json", "--results-out", tmp_path / f"{decode}.json"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert "CIDEr" in json.loads(r.stdout), (r.stdout, r.stderr)
    code = caption_main([str(p) for p in sorted(img_dir.iterdir())[:2]] + ["--checkpoint", str(out / "last.safetensors"),
                         "--html", str(tmp_path / "report.html"), "--attention-map", str(tmp_path / "map.png")])
    assert code == 0 and (tmp_path / "report.html").stat().st_size > 1000, code
    assert re.search(r'"cells":\s*\[\[', (tmp_path / "report.html").read_text()) and list(tmp_path.glob("map*.png"))
    # argmax decoding: each word's context is the feature of its map's largest cell, named in cells
    from captioning.api import Captioner

    captioner = Captioner.from_pretrained(out / "last.safetensors")
    result = captioner(sorted(img_dir.iterdir())[0], beam_size=2)
    for res in [result, *result.alternatives]:
        flat = res.attention.reshape(len(res.tokens), -1)
        assert res.cells == [divmod(int(i), res.attention.shape[2]) for i in flat.argmax(1)]
    assert result.to_json()["cells"] == [list(c) for c in result.cells]
    captioner.model.decoder.cfg.hard_decode = "expect"  # the expectation chooses no cell
    assert captioner(sorted(img_dir.iterdir())[0]).cells is None
    # Hard attention from the soft model: every weight the soft one had, the attention switched.
    soft, _, _, vocab, _ = trained
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_caption.py"), *common, "--init-from", soft,
                        "--attention", "hard", "--lr", "0", "--epochs", "1", "--out", tmp_path / "fromsoft"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    hard = read_checkpoint(tmp_path / "fromsoft" / "last.safetensors")
    assert hard.config["decoder"]["attention"] == "hard"
    start = read_checkpoint(soft).state_dict
    for k, v in start.items():
        if k.startswith("decoder."):
            assert torch.equal(hard.state_dict[k], v), (k, (hard.state_dict[k] - v).abs().max(), r.stderr[-2000:])

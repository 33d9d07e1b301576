"""DDP under torchrun, two CPU processes with gloo: the processes stay identical, two
processes with batch b train exactly like one process with batch 2b, and resume works.

Why 2 x b equals 1 x 2b here: the loss is the cross-entropy averaged over the target words
of a batch plus the attention penalty averaged over its captions, and DDP averages the two
processes' gradients. The mean of two means is the mean of the union only when both halves
hold as many words and as many captions. Every shapes image has the same two captions'
lengths ("a red circle on the left", "red circle on the left": 13 target words, 2
captions), and the sampler gives both processes as many images, so the equality is exact
in theory and holds to float rounding (Adam amplifies that rounding where a gradient is
nearly 0, so weights are compared by the norm of their difference, relative to how far
they moved). (With COCO's unequal captions the DDP gradient
weights each process's words a little differently: harmless, but not equal.)
Dropout and augmentation are off in that comparison, since each process draws its own.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from captioning.core.trainer import fit
from captioning.data import CaptionDataset, references
from captioning.model import CaptionModel
from captioning.training import CaptionTask

from ..conftest import IMAGE_SIZE, tiny_config, tiny_train_config

ROOT = Path(__file__).resolve().parents[2]
B = 3  # images per process per step: 12 training images = 2 steps per epoch


@pytest.fixture(scope="module")
def ddp_run(shapes, tmp_path_factory):
    records, vocab, ann, img_dir = shapes
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "tests.captioning.ddp_worker", str(ann), str(img_dir), str(out), str(B)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    # torchrun prints the first failing rank's traceback early and its own report last: show both.
    errors = [line for line in r.stderr.splitlines() if "Error" in line]
    assert r.returncode == 0, "\n".join(errors[:20]) + "\n...\n" + r.stderr[-3000:]
    return out


def load(out: Path, run: str, rank: int):
    return load_file(str(out / run / f"rank{rank}.safetensors")), json.loads((out / run / f"rank{rank}.json").read_text())


def test_both_processes_hold_identical_weights(ddp_run):
    for run in ("straight", "a", "b"):
        w0, h0 = load(ddp_run, run, 0)
        w1, h1 = load(ddp_run, run, 1)
        assert w0.keys() == w1.keys()
        for k in w0:
            assert torch.equal(w0[k], w1[k]), (run, k)
        # Both log the loss averaged over the processes...
        assert [row["train_loss"] for row in h0] == [row["train_loss"] for row in h1]
    # ...and rank 1, which does not validate, took rank 0's metric (for its scheduler and early stop).
    (_, h0), (_, h1) = load(ddp_run, "straight", 0), load(ddp_run, "straight", 1)
    assert [row["val_CIDEr"] for row in h0] == [row["val_CIDEr"] for row in h1]
    assert "val_Bleu_4" in h0[0] and "val_Bleu_4" not in h1[0]


def test_two_processes_with_batch_b_train_like_one_with_batch_2b(ddp_run, shapes, tmp_path):
    records, vocab, *_ = shapes
    torch.manual_seed(123)
    model = CaptionModel(tiny_config(len(vocab), dropout=0.0))
    cfg = tiny_train_config(epochs=2, batch_size=2 * B, augment=0.0)
    task = CaptionTask(model, vocab, CaptionDataset(records[:12], vocab, IMAGE_SIZE),
                       CaptionDataset(records[12:16], vocab, IMAGE_SIZE), references(records[12:16]), cfg)
    state = fit(task, cfg, tmp_path)
    weights, history = load(ddp_run, "straight", 0)
    assert [row["train_loss"] for row in history] == pytest.approx([row["train_loss"] for row in state.history], rel=1e-5)
    torch.manual_seed(123)
    init, one = CaptionModel(tiny_config(len(vocab), dropout=0.0)).state_dict(), model.state_dict()
    for k, v in weights.items():
        if not k.startswith("decoder.") or k == "decoder.attention.score.bias":
            # The frozen encoder does not move. The score bias shifts every attention logit
            # alike, which softmax ignores: its true gradient is 0, and Adam's g / sqrt(v)
            # turns the rounding noise that stands in for it into full-size steps.
            continue
        moved = (one[k] - init[k]).norm()
        assert moved > 0 and (v - one[k]).norm() < 1e-3 * moved, k


def test_resume_under_ddp_equals_an_uninterrupted_run(ddp_run):
    for rank in (0, 1):
        wa, ha = load(ddp_run, "a", rank)
        wb, hb = load(ddp_run, "b", rank)
        assert len(hb) == 2
        assert [row["train_loss"] for row in ha] == pytest.approx([row["train_loss"] for row in hb], rel=1e-6)
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], rtol=1e-6, atol=1e-7, msg=k)


def test_feature_cache_is_encoded_by_one_process_and_read_by_both(ddp_run):
    r0, r1 = (json.loads((ddp_run / "cache" / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["encoded"] + r1["encoded"] == 1
    assert r0["sum"] == r1["sum"] != 0


def test_scst_under_ddp_keeps_the_processes_identical(ddp_run):
    """Each process samples its own captions and rewards them; the averaged policy gradient
    keeps both replicas equal, and the logged rewards are the mean over both processes."""
    w0, h0 = load(ddp_run, "scst", 0)
    w1, h1 = load(ddp_run, "scst", 1)
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    assert "train_reward" not in h0[0] and h0[1]["train_reward"] == h1[1]["train_reward"]
    assert h0[1]["train_baseline"] == pytest.approx(h0[1]["train_reward"])  # the mean baseline


def test_fine_tuning_under_ddp_keeps_the_processes_identical_and_moves_the_cnn(ddp_run, shapes):
    records, vocab, *_ = shapes
    w0, _ = load(ddp_run, "ft", 0)
    w1, _ = load(ddp_run, "ft", 1)
    config = tiny_config(len(vocab))
    config.encoder.fine_tune_blocks = 1
    init = CaptionModel(config)
    # Parameters, not buffers: the trained block's BatchNorms keep running statistics of each
    # process's own batches (DDP broadcasts rank 0's before every forward; rank 0 saves).
    for k, _ in init.named_parameters():
        assert torch.equal(w0[k], w1[k]), k
    trained = [n for n, p in init.named_parameters() if p.requires_grad and n.startswith("encoder.")]
    assert trained
    start = init.state_dict()
    assert all(not torch.equal(w0[k], start[k]) for k in trained)


def test_hard_attention_stacked_gru_under_ddp_keeps_the_processes_identical(ddp_run):
    w0, h0 = load(ddp_run, "hard", 0)
    w1, h1 = load(ddp_run, "hard", 1)
    assert "decoder.gru.weight_ih" in w0 and "decoder.upper.0.weight_hh" in w0
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    assert float(w0["decoder.reinforce_baseline"]) > 0
    assert h0[-1]["train_entropy"] == h1[-1]["train_entropy"] > 0  # logged as the mean over both processes

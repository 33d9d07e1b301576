"""Training step of the caption decoder variants, and of the shipped one before and after the
decoder split, in one process, interleaved (bench.benchmark.time_interleaved), CPU, fp32.

Rows:
- ``split``: lstm/1/soft, the old decoder (captioning/decoder.py of OLD_TREE, loaded as a
  module of its own) against today's (its fast teacher forcing), same weights, same batch,
  same loss and optimizer: the ratio of their median step times (old / new).
- ``variants``: every variant's step time over lstm/1/soft's (new code), at the sizes of the
  emoji comparison (docs/decoders.md): cached 5x5 Lite0 grids (C=1280), decoder 256/384/256,
  1,710 words, 128 images of one caption of 3-8 words per step.

    PYTHONPATH=. python scripts/decoder_ab.py OLD_TREE REPEATS [split,variants]
"""
import importlib.util
import json
import statistics
import sys

import torch

import captioning.decoder as new_decoder
from bench.benchmark import time_interleaved
from captioning.core.trainer import LoopState, default_param_groups, make_adam, train_one_epoch
from captioning.data import CaptionBatch
from captioning.training import CaptionTask, CaptionTrainConfig

old_tree, repeats = sys.argv[1], int(sys.argv[2])
rows = sys.argv[3].split(",") if len(sys.argv) > 3 else ["split", "variants"]
spec = importlib.util.spec_from_file_location("old_decoder", f"{old_tree}/captioning/decoder.py")
old_decoder = importlib.util.module_from_spec(spec)
sys.modules["old_decoder"] = old_decoder  # dataclasses look their module up
spec.loader.exec_module(old_decoder)
old_decoder.PackedLogits = new_decoder.PackedLogits  # so that caption_loss takes its packed rows alike

cpu = torch.device("cpu")
cfg = CaptionTrainConfig(batch_size=128, device="cpu", amp=False, progress=False, alpha_c=0.1)


class Model(torch.nn.Module):
    """The captioner from cached features: the decoder alone (CaptionTask calls model(...) and
    reads model.decoder)."""

    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, *args, **kw):
        return self.decoder(*args, **kw)


def emoji_batch(seed: int = 0) -> CaptionBatch:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(5, 11, (128,), generator=gen)  # <start> + 3-8 words + <end>
    captions = torch.zeros(128, int(lengths.max()), dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        captions[i, 0], captions[i, n - 1] = 1, 2
        captions[i, 1:n - 1] = torch.randint(4, 1710, (n - 2,), generator=gen)
    return CaptionBatch(torch.randn(128, 25, 1280, generator=gen), captions, lengths, torch.arange(128), list(range(128)))


def setup(module, **variant):
    torch.manual_seed(0)
    dec = module.AttentionDecoder(module.DecoderConfig(vocab_size=1710, feature_dim=1280, embed_dim=256, hidden_dim=384,
                                                       attention_dim=256, dropout=0.5, **variant))
    model = Model(dec)
    task = CaptionTask(model, None, None, None, {}, cfg) if module is new_decoder else OldTask(model, None, None, None, {}, cfg)
    return task, model, make_adam(default_param_groups(model, cfg), cfg, cpu)


class OldTask(CaptionTask):
    """main's CaptionTask.loss (packed teacher forcing, caption_loss)."""

    def loss(self, model, batch, device):
        from captioning.training import caption_loss

        logits, alphas = model(batch.images, batch.captions, batch.lengths, batch.image_index, packed=True)
        loss, ce, att = caption_loss(logits, alphas, batch.captions, self.cfg.alpha_c)
        return loss, {"loss": loss.detach(), "ce": ce.detach(), "att": att.detach()}


def step(task, model, opt, batch):
    return lambda: train_one_epoch(task, model, [batch], opt, cfg, cpu, LoopState())


batch = emoji_batch()
if "split" in rows:
    ways = {"old": setup(old_decoder), "new": setup(new_decoder)}
    ways["new"][1].decoder.load_state_dict(ways["old"][1].decoder.state_dict())
    times = time_interleaved({w: step(*ways[w], batch) for w in ways}, repeats)
    ratios = [o / n for o, n in zip(times["old"], times["new"])]
    print(json.dumps({"row": "split", "old_step_s": [round(x, 3) for x in times["old"]],
                      "new_step_s": [round(x, 3) for x in times["new"]],
                      "old_over_new_of_medians": round(statistics.median(times["old"]) / statistics.median(times["new"]), 3),
                      "old_over_new_per_pair_min_max": [round(min(ratios), 3), round(max(ratios), 3)]}), flush=True)
    del ways
if "variants" not in rows:
    sys.exit(0)

VARIANTS = {"lstm/1/soft": {}, "gru/1/soft": {"cell": "gru"}, "lstm/2/soft": {"layers": 2},
            "lstm/1/hard": {"attention": "hard"}, "gru/2/soft": {"cell": "gru", "layers": 2},
            "lstm/1/soft reference loop": {}}
ways = {name: setup(new_decoder, **v) for name, v in VARIANTS.items()}
ways["lstm/1/soft reference loop"][1].decoder.fast = False
times = time_interleaved({w: step(*ways[w], batch) for w in ways}, repeats)
base = times["lstm/1/soft"]
for name, t in times.items():
    ratios = [x / b for x, b in zip(t, base)]
    print(json.dumps({"row": "variants", "variant": name, "parameters": sum(p.numel() for p in ways[name][1].parameters()),
                      "step_s": [round(x, 3) for x in t],
                      "over_lstm1soft_of_medians": round(statistics.median(t) / statistics.median(base), 3),
                      "per_pair_min_max": [round(min(ratios), 3), round(max(ratios), 3)]}), flush=True)

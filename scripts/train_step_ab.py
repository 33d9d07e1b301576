"""Training step, old vs new, in one process, interleaved step by step (CPU, fp32, benchmark --quick sizes:
8 images / 40 captions, 256 px, 14x14 grid, 512-d decoder, 10k words).

new = today's code: lean teacher forcing (packed logits; the recurrent weights' gradients, and fine-tuned the
      grid's, formed once after the steps), fused Adam (CPU), clip as before on the CPU; a frozen CNN runs
      as its folded copy (BatchNorms folded into the convolutions) in chunks of EncoderSpec.cpu_chunk_pixels.
old = 20465aa's step: the step-by-step forward (verbatim in bench/baselines.py::old_forward),
      padded logits into caption_loss, torch.optim.Adam default (per-tensor loop on the CPU), default clipping;
      a frozen CNN as it was, unfolded in chunks of 8 * 160 * 160 pixels.
The CNN's modules, the loss and the loop are the same code in both.

    PYTHONPATH=. python scripts/train_step_ab.py efficientnet_lite0,resnet101 3   # encoders, repeats
    PYTHONPATH=. python scripts/train_step_ab.py resnet101 3 profile   # and where one new step's time goes

One JSON line per row (encoder x {frozen, last 3 blocks}): each way's step times and the
ratio of their medians; the README's speed table quotes it. With ``profile``, also one new
step under torch.profiler: the self time of the convolutions (forward and backward: the CNN)
and of the matrix products (mm, addmm, bmm: the decoder, its loss and its gradients)."""
import json
import statistics
import sys
import time

import torch

from bench.baselines import old_forward
from bench.benchmark import BenchConfig, build_model, synthetic_batch, time_interleaved
from captioning.core.trainer import LoopState, default_param_groups, make_adam, train_one_epoch
from captioning.core.vocab import Vocabulary
from captioning.training import CaptionTask, CaptionTrainConfig, caption_loss


class OldTask(CaptionTask):
    def loss(self, model, batch, device):
        batch = batch.to(device)
        inputs = batch.images.float().div_(255.0)
        if model.cfg.encoder.fine_tune_blocks > 0:
            features = model.encoder(inputs)
        else:  # 20465aa's encode_images for a frozen CNN
            with torch.no_grad():
                features = torch.cat([model.encoder(c) for c in inputs.split(max(1, 8 * 160 * 160 // inputs[0, 0].numel()))])
        logits, alphas = old_forward(model.decoder, features, batch.captions, batch.lengths, batch.image_index)
        loss, ce, att = caption_loss(logits, alphas, batch.captions, self.cfg.alpha_c)
        return loss, {"loss": loss.detach()}

cpu = torch.device("cpu")
cfg = BenchConfig(quick=True, amp=False)
rows = [(e, f) for e in sys.argv[1].split(",") for f in (0, 3)] if len(sys.argv) > 1 else \
    [("efficientnet_lite0", 0), ("efficientnet_lite0", 3), ("resnet101", 0), ("resnet101", 3)]
repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
out = []
for name, ft in rows:
    tcfg = CaptionTrainConfig(batch_size=8, device="cpu", amp=False, progress=False)
    runs = {}
    for way in ("old", "new"):
        model = build_model(cfg, name, ft, cpu)
        task = (OldTask if way == "old" else CaptionTask)(model, Vocabulary(), None, None, {}, tcfg)
        opt = torch.optim.Adam(default_param_groups(model, tcfg)) if way == "old" else make_adam(default_param_groups(model, tcfg), tcfg, cpu)
        runs[way] = (task, model, opt)
    batch = synthetic_batch(8, cfg.image_size, 10000, seed=0)
    times = time_interleaved({way: lambda t=task, m=model, o=opt: train_one_epoch(t, m, [batch], o, tcfg, cpu, LoopState())
                              for way, (task, model, opt) in runs.items()}, repeats)  # after one warm-up round
    t_old, t_new = times["old"], times["new"]
    ratios = [o / n for o, n in zip(t_old, t_new)]
    row = {"encoder": name, "fine_tune_blocks": ft, "captions": batch.captions.size(0),
           "old_step_s": [round(x, 2) for x in t_old], "new_step_s": [round(x, 2) for x in t_new],
           "old_captions_per_s_median": round(40 / statistics.median(t_old), 2),
           "new_captions_per_s_median": round(40 / statistics.median(t_new), 2),
           "speedup_of_medians": round(statistics.median(t_old) / statistics.median(t_new), 2),
           "speedup_per_pair_min_max": [round(min(ratios), 2), round(max(ratios), 2)]}
    if len(sys.argv) > 3 and sys.argv[3] == "profile":
        from torch.profiler import ProfilerActivity, profile
        task, model, opt = runs["new"]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            train_one_epoch(task, model, [batch], opt, tcfg, cpu, LoopState())
            row["profiled_new_step_s"] = round(time.perf_counter() - t0, 2)
        self_s = {e.key: e.self_cpu_time_total / 1e6 for e in prof.key_averages()}
        row["profiled_convolutions_s"] = round(sum(v for k, v in self_s.items() if "convolution" in k), 2)
        row["profiled_matrix_products_s"] = round(sum(self_s.get(k, 0.0) for k in ("aten::mm", "aten::addmm", "aten::bmm")), 2)
    print(json.dumps(row), flush=True)
    del runs

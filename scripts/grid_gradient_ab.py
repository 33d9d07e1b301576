"""The decoder's forward+backward with its gradients summed once after the teacher-forcing steps
(AttentionDecoder's _DeferredGradient kinds, today's default) against plain autograd's sums built up
step by step. In one process, interleaved, CPU fp32, benchmark --quick sizes (8 images / 40 captions,
14x14 grid, 10k words). Ways:

    frozen_per_step   CNN frozen (no grid gradient); the recurrent weights' gradients step by step
    frozen            CNN frozen; the recurrent weights' gradients once (_WeightGradient)
    per_step          CNN fine-tuned: the grid's and the weights' gradients step by step (before f95cca4)
    grid_once         the grid's gradient once (_GridGradient), the weights' step by step (f95cca4)
    once              both once (today)

    PYTHONPATH=. python scripts/grid_gradient_ab.py efficientnet_lite0,resnet101 6   # encoders, timed rounds

One JSON line per encoder: the largest difference of the grid's and of the parameters' gradients
between per_step and once, relative to their largest value (same dropout draws), each way's times
and medians; the README's speed table quotes it."""
import json
import statistics
import sys
from functools import partial

import torch

from bench.benchmark import BenchConfig, build_model, synthetic_batch, time_interleaved
from captioning.training import caption_loss

WAYS = {"frozen_per_step": (False, False, False), "frozen": (False, False, True),  # fine-tuned, grid once, weights once
        "per_step": (True, False, False), "grid_once": (True, True, False), "once": (True, True, True)}
cfg = BenchConfig(quick=True, amp=False)
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 6
for name in (sys.argv[1] if len(sys.argv) > 1 else "efficientnet_lite0,resnet101").split(","):
    model = build_model(cfg, name, 0, torch.device("cpu")).train()
    decoder = model.decoder
    batch = synthetic_batch(8, cfg.image_size, 10000, seed=0)
    grid = torch.randn(8, model.grid_shape()[0] * model.grid_shape()[1], model.encoder.out_channels)

    def run(way):
        fine_tuned, decoder._grid_gradient, decoder._weight_gradient = WAYS[way]
        features = grid.clone().requires_grad_(fine_tuned)
        logits, alphas = decoder(features, batch.captions, batch.lengths, batch.image_index, packed=True)
        caption_loss(logits, alphas, batch.captions, 1.0)[0].backward()
        grads = [features.grad] + [p.grad.clone() for p in decoder.parameters() if p.grad is not None]
        decoder.zero_grad(set_to_none=True)
        return grads

    torch.manual_seed(1); before = run("per_step")
    torch.manual_seed(1); once = run("once")
    def rel(a, b): return float((a - b).abs().max() / b.abs().max())
    times = time_interleaved({way: partial(run, way) for way in WAYS}, rounds)
    print(json.dumps({"encoder": name, "grid_max_relative_difference": rel(once[0], before[0]),
                      "parameters_max_relative_difference": max(rel(a, b) for a, b in zip(once[1:], before[1:])),
                      **{way + "_s": [round(x, 3) for x in t] for way, t in times.items()},
                      **{way + "_median_s": round(statistics.median(t), 3) for way, t in times.items()}}), flush=True)

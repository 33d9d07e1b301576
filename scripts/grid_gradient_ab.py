"""The decoder's forward+backward when the CNN is fine-tuned (the grid features need a gradient): the grid's
gradient formed once after the teacher-forcing steps (AttentionDecoder's _GridGradient, today's default) against
plain autograd's outer product per step added up (before), and frozen (no grid gradient) as the floor. In one
process, interleaved, CPU fp32, benchmark --quick sizes (8 images / 40 captions, 14x14 grid, 10k words).

    PYTHONPATH=. python scripts/grid_gradient_ab.py efficientnet_lite0,resnet101 6   # encoders, timed rounds

One JSON line per encoder: the grid gradients' largest difference relative to their largest value (same
dropout draws), each way's times and medians; the README's speed table quotes it."""
import json, statistics, sys, torch
from functools import partial
from captioning.tools.benchmark import BenchConfig, _build, synthetic_batch, time_interleaved
from captioning.training import caption_loss

cfg = BenchConfig(quick=True, amp=False)
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 6
for name in (sys.argv[1] if len(sys.argv) > 1 else "efficientnet_lite0,resnet101").split(","):
    model = _build(cfg, name, 0, torch.device("cpu")).train()
    decoder = model.decoder
    batch = synthetic_batch(8, cfg.image_size, 10000, seed=0)
    grid = torch.randn(8, model.grid_shape()[0] * model.grid_shape()[1], model.encoder.out_channels)

    def run(way):
        decoder._grid_gradient = way == "once"
        features = grid.clone().requires_grad_(way != "frozen")
        logits, alphas = decoder(features, batch.captions, batch.lengths, batch.image_index, packed=True)
        caption_loss(logits, alphas, batch.captions, 1.0)[0].backward()
        decoder.zero_grad(set_to_none=True)
        return features.grad

    torch.manual_seed(1); before = run("per_step")
    torch.manual_seed(1); once = run("once")
    times = time_interleaved({way: partial(run, way) for way in ("frozen", "per_step", "once")}, rounds)
    print(json.dumps({"encoder": name, "max_relative_difference": float((once - before).abs().max() / before.abs().max()),
                      **{way + "_s": [round(x, 3) for x in t] for way, t in times.items()},
                      **{way + "_median_s": round(statistics.median(t), 3) for way, t in times.items()}}), flush=True)

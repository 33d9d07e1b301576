"""torch.compile of the decoder recurrence (AttentionDecoder.compile_step) vs eager, training step, in one process,
interleaved, CPU fp32, benchmark --quick sizes, Lite0 frozen (the row where the decoder is the largest share).

Ways: eager (today's default: the batch shrinks as captions end); compiled (dynamic shapes); static (padded
steps of static shapes, what CUDA graphs need: compile_step(static=True)); padded (the same padded steps,
eager: what the padding alone costs).

    PYTHONPATH=. python scripts/compile_step_ab.py 5     # timed rounds after two warm-up steps each

Prints the warm-up steps (the first compiled one includes the compilation) and one JSON line:
each way's step times, and eager's median over each way's with the range of the per-round ratios;
the README's speed table quotes it."""
import json
import statistics
import sys
import time

import torch

from bench.benchmark import BenchConfig, build_model, synthetic_batch, time_interleaved
from captioning.core.trainer import LoopState, default_param_groups, make_adam, train_one_epoch
from captioning.core.vocab import Vocabulary
from captioning.training import CaptionTask, CaptionTrainConfig

cpu = torch.device("cpu")
cfg = BenchConfig(quick=True, amp=False)
tcfg = CaptionTrainConfig(batch_size=8, device="cpu", amp=False, progress=False)
ways = ("eager", "compiled", "static", "padded")
runs = {}
for way in ways:
    model = build_model(cfg, "efficientnet_lite0", 0, cpu)
    if way in ("compiled", "static"):
        model.decoder.compile_step(static=way == "static")
    model.decoder.padded_steps = way in ("static", "padded")
    task = CaptionTask(model, Vocabulary(), None, None, {}, tcfg)
    runs[way] = (task, model, make_adam(default_param_groups(model, tcfg), tcfg, cpu))
batch = synthetic_batch(8, cfg.image_size, 10000, seed=0)
for way in ways:  # warm-up: the compiled ones compile here
    task, model, opt = runs[way]
    for _ in range(2):
        t = time.perf_counter(); train_one_epoch(task, model, [batch], opt, tcfg, cpu, LoopState())
        print(way, "warm-up step", round(time.perf_counter() - t, 2), flush=True)
times = time_interleaved({way: lambda t=task, m=model, o=opt: train_one_epoch(t, m, [batch], o, tcfg, cpu, LoopState())
                          for way, (task, model, opt) in runs.items()},
                         int(sys.argv[1]) if len(sys.argv) > 1 else 5, warmup_rounds=0)  # warmed up above
report = {way + "_s": [round(x, 3) for x in times[way]] for way in ways}
for way in ways[1:]:
    ratios = [e / c for e, c in zip(times["eager"], times[way])]
    report["eager_over_" + way] = {"median": round(statistics.median(times["eager"]) / statistics.median(times[way]), 3),
                                   "rounds_min_max": [round(min(ratios), 3), round(max(ratios), 3)]}
report["torch"] = torch.__version__
print(json.dumps(report))

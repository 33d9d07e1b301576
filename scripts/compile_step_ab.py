"""torch.compile of the decoder recurrence (AttentionDecoder.compile_step) vs eager, training step, in one process,
interleaved, CPU fp32, benchmark --quick sizes, Lite0 frozen (the row where the decoder is the largest share).

    PYTHONPATH=. python scripts/compile_step_ab.py 5     # timed pairs after two warm-up steps each

Prints the warm-up steps (the first compiled one includes the compilation) and one JSON line:
each way's step times and the ratio of their medians; the README's speed table quotes it."""
import json, statistics, sys, time, torch
from captioning.tools.benchmark import BenchConfig, _build, synthetic_batch
from captioning.training import CaptionTask, CaptionTrainConfig
from captioning.core.trainer import LoopState, default_param_groups, make_adam, train_one_epoch
from captioning.core.vocab import Vocabulary
cpu = torch.device("cpu")
cfg = BenchConfig(quick=True, amp=False)
tcfg = CaptionTrainConfig(batch_size=8, device="cpu", amp=False, progress=False)
runs = {}
for way in ("eager", "compiled"):
    model = _build(cfg, "efficientnet_lite0", 0, cpu)
    if way == "compiled":
        model.decoder.compile_step()
    task = CaptionTask(model, Vocabulary(), None, None, {}, tcfg)
    runs[way] = (task, model, make_adam(default_param_groups(model, tcfg), tcfg, cpu))
batch = synthetic_batch(8, cfg.image_size, 10000, seed=0)
t0 = time.perf_counter()
for way in ("eager", "compiled"):  # warm-up: the compiled one compiles here
    task, model, opt = runs[way]
    for _ in range(2):
        t = time.perf_counter(); train_one_epoch(task, model, [batch], opt, tcfg, cpu, LoopState())
        print(way, "warm-up step", round(time.perf_counter() - t, 2), flush=True)
times = {"eager": [], "compiled": []}
for r in range(int(sys.argv[1]) if len(sys.argv) > 1 else 5):
    for way in (("eager", "compiled") if r % 2 == 0 else ("compiled", "eager")):
        task, model, opt = runs[way]
        t = time.perf_counter(); train_one_epoch(task, model, [batch], opt, tcfg, cpu, LoopState())
        times[way].append(time.perf_counter() - t)
ratios = [e / c for e, c in zip(times["eager"], times["compiled"])]
print(json.dumps({"eager_s": [round(x, 3) for x in times["eager"]], "compiled_s": [round(x, 3) for x in times["compiled"]],
                  "eager_over_compiled_median": round(statistics.median(times["eager"]) / statistics.median(times["compiled"]), 3),
                  "pairs_min_max": [round(min(ratios), 3), round(max(ratios), 3)], "torch": torch.__version__}))

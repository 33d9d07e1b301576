"""Benchmark training, the data path and captioning on synthetic COCO-like data.

    python scripts/benchmark.py --device cuda --out bench.json          # the full suite on a GPU
    python scripts/benchmark.py --device cpu --quick                    # a CPU run in minutes
    python scripts/benchmark.py --tiny --sections train,inference       # smoke test, seconds

Prints the report as JSON (and writes it with --out). See captioning/benchmark.py for what
each section measures.
"""

from __future__ import annotations

import argparse
import sys

from bench.benchmark import SECTIONS, BenchConfig, format_report, run_benchmarks
from captioning.core.commandline import run
from captioning.core.fileio import atomic_write


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda (latency and cpu_target always run on the CPU)")
    p.add_argument("--quick", action="store_true", help="smaller batches and counts (a CPU run in a few minutes)")
    p.add_argument("--tiny", action="store_true", help="tiny images and models: checks every code path in seconds")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--encoders", default="efficientnet_lite0,resnet101", help="encoders of the train and breakdown sections")
    p.add_argument("--infer-encoder", default="efficientnet_lite0",
                   help="encoder of the inference section and the breakdown's beam search (default efficientnet_lite0)")
    p.add_argument("--image-size", type=int, default=None, help="input side in pixels (default 256; 64 with --tiny)")
    p.add_argument("--grid-size", type=int, default=None, help="attention grid side (default 14; 2 with --tiny)")
    p.add_argument("--fine-tune-blocks", type=int, default=3, help="CNN blocks trained in the fine-tuned runs (default 3)")
    p.add_argument("--workers", type=int, default=0, help="loader and shard-writing processes (default min(8, cores))")
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast in the training runs (default: bf16 where the device has it natively)")
    p.add_argument("--compile", action="store_true", help="torch.compile the decoder step in the training runs")
    p.add_argument("--static-shapes", action="store_true",
                   help="with --compile: teacher forcing in padded steps of static shapes (CUDA graphs on CUDA)")
    p.add_argument("--precisions", default="fp32,bf16",
                   help="precisions of the inference, latency and cpu_target sections (fp32, bf16, auto; default fp32,bf16)")
    p.add_argument("--checkpoint", help="time latency and cpu_target with this trained caption checkpoint "
                   "(default: an untrained model of the benchmark's sizes)")
    p.add_argument("--out", help="also write the JSON report here")
    return p


def main(args) -> int:
    cfg = BenchConfig(device=args.device, quick=args.quick, tiny=args.tiny,
                      sections=tuple(s for s in args.sections.split(",") if s),
                      encoders=tuple(e for e in args.encoders.split(",") if e), infer_encoder=args.infer_encoder,
                      image_size=args.image_size,
                      grid_size=args.grid_size, fine_tune_blocks=args.fine_tune_blocks, workers=args.workers,
                      amp=not args.no_amp, compile=args.compile, static_shapes=args.static_shapes, checkpoint=args.checkpoint,
                      precisions=tuple(p for p in args.precisions.split(",") if p))
    report = format_report(run_benchmarks(cfg, log=lambda m: print(m, file=sys.stderr, flush=True)))
    print(report)
    if args.out:
        with atomic_write(args.out) as f:
            f.write(report + "\n")
    return 0


if __name__ == "__main__":
    parsed = get_args_parser().parse_args()
    sys.exit(run("benchmark", lambda: main(parsed)))

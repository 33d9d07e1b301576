"""Throughput and latency benchmarks on synthetic COCO-like data the suite makes itself.

Nothing is downloaded: the images are 640 x 480 JPEGs drawn here (smooth colour fields with
noise, so they compress like photographs), five captions each with COCO-like lengths, written
in the COCO captions format and read back through the same loaders as COCO. Models are
randomly initialised (weights="none"): speed does not depend on the weights, except that an
untrained captioner never says ``<end>`` and so always writes ``max_length`` words, the worst
case for decoding time.

Sections (each a list or dict in the JSON report):

- ``train``: training steps per second (images/s and captions/s) with the batch already on
  the device, for each encoder, frozen and fine-tuned, through the real ``train_one_epoch``.
- ``data``: images/s the data path delivers to the device, from JPEGs and from shards
  (``captioning.core.shards``), through the loader workers and in one process (what one worker
  can give), and the speed of writing the shards.
- ``inference``: batched captioning (encoder + greedy or beam search), images/s per batch size
  and precision (``captioning.core.precision``), with the ``infer_encoder``.
- ``breakdown``: where a training step's time goes, per training row: the CNN forward (and
  backward when fine-tuned), the decoder forward+backward, and the optimizer step (clipping
  and Adam), each timed alone, beside the whole step; and for beam search on the
  ``infer_encoder``'s grid, the whole search against its decoder steps alone (the same rows
  for the same number of steps): ``beam_overhead`` is their ratio, the search's bookkeeping.
- ``latency``: one image on the CPU, per precision: the model's time, and the whole
  ``caption`` command.
- ``cpu_target``: batched beam-3 captioning of N images against one at a time, on the CPU,
  per precision.

Times are medians over repeats after warm-up; on CUDA every timed call ends with
``torch.cuda.synchronize``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from captioning.core.checkpoint import save_checkpoint
from captioning.core.encoders import EncoderConfig
from captioning.core.trainer import (
    LoopState,
    clip_and_step,
    default_param_groups,
    make_adam,
    train_one_epoch,
    training_precision,
    uses_bf16,
)
from captioning.core.vocab import Vocabulary
from captioning.data import CaptionBatch, CaptionDataset, collate_captions, load_coco_captions
from captioning.decoder import DecoderConfig
from captioning.model import CaptionConfig, CaptionModel
from captioning.training import CaptionTask, CaptionTrainConfig

SECTIONS = ("train", "data", "inference", "breakdown", "latency", "cpu_target", "cider")
UNTRAINED = ("untrained models (random weights) never end a caption early: every caption runs to "
             "max_length words, the worst case for decoding time")


@dataclass
class BenchConfig:
    device: str = "cpu"  # cpu or cuda (latency and cpu_target always run on the CPU)
    quick: bool = False  # smaller batches and counts, so a CPU run takes minutes
    tiny: bool = False  # tiny images and models: a smoke test of every code path, in seconds
    sections: tuple[str, ...] = SECTIONS
    encoders: tuple[str, ...] = ("efficientnet_lite0", "resnet101")  # of the train and breakdown sections
    infer_encoder: str = "efficientnet_lite0"  # of the inference section and the breakdown's beam search
    image_size: int | None = None  # model input and shard side; None = 256 (64 with tiny)
    grid_size: int | None = None  # the attention grid (adaptive pooling of the CNN map); None = 14 (2 with tiny)
    fine_tune_blocks: int = 3  # blocks trained in the "fine-tuned" runs (resnet: layer2-4)
    workers: int = 0  # DataLoader / shard-writing processes; 0 = min(8, CPU cores)
    amp: bool = True  # bf16 autocast in the training runs where the device has it natively, as training does
    precisions: tuple[str, ...] = ("fp32", "bf16")  # of the inference, latency and cpu_target sections
    compile: bool = False  # torch.compile the decoder step in the training runs
    static_shapes: bool = False  # with compile: padded steps, static shapes (CUDA graphs on CUDA)
    max_length: int = 20  # words generated (untrained models always reach it)
    seed: int = 0
    checkpoint: str | None = None  # latency and cpu_target with this trained captioner instead of an untrained one

    def __post_init__(self):
        self.image_size = self.image_size or (64 if self.tiny else 256)
        self.grid_size = self.grid_size or (2 if self.tiny else 14)
        self.sections = tuple(self.sections)
        self.encoders = tuple(self.encoders)
        self.precisions = tuple(self.precisions)

    def sizes(self) -> dict:
        """Batch sizes and counts for this mode."""
        if self.tiny:
            return dict(train_batch=4, train_steps=1, warmup=1, data_images=12, data_batch=4, data_repeats=2,
                        infer_batches=(1, 4), infer_repeats=1, latency_repeats=1, target_images=3, command_repeats=1,
                        beam_batch=4)
        if self.quick:
            return dict(train_batch=8, train_steps=3, warmup=1, data_images=256, data_batch=32, data_repeats=6,
                        infer_batches=(1, 8, 32), infer_repeats=2, latency_repeats=3, target_images=64,
                        command_repeats=2, beam_batch=64)
        return dict(train_batch=128, train_steps=20, warmup=5, data_images=2048, data_batch=128, data_repeats=8,
                    infer_batches=(1, 32, 128, 512), infer_repeats=5, latency_repeats=10, target_images=64,
                    command_repeats=3, beam_batch=512)

    def decoder(self, vocab_size: int = 10000) -> DecoderConfig:
        if self.tiny:
            return DecoderConfig(vocab_size=100, embed_dim=32, hidden_dim=32, attention_dim=32, max_length=self.max_length)
        return DecoderConfig(vocab_size=vocab_size, max_length=self.max_length)  # 512-d, as trained on COCO


# -- synthetic COCO ----------------------------------------------------------------------------


def make_synthetic_coco(root: str | os.PathLike, n_images: int, seed: int = 0, size: tuple[int, int] = (640, 480),
                        captions_per_image: int = 5) -> tuple[Path, Path]:
    """``n_images`` JPEGs under root/images and root/captions.json in COCO format; returns
    (annotation file, image folder). Caption lengths follow COCO's (8-18 words, mostly 9-12)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    words = [f"w{i}" for i in range(2000)]
    images, anns = [], []
    w, h = size
    for i in range(n_images):
        coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
        field_ = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.float32)
        pixels = np.clip(field_ + rng.normal(0, 6, size=field_.shape), 0, 255).astype(np.uint8)
        name = f"{i:012d}.jpg"
        Image.fromarray(pixels).save(img_dir / name, quality=90)
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
        for _ in range(captions_per_image):
            n = int(np.clip(rng.normal(10.5, 2.0), 8, 18))
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "caption": " ".join(rng.choice(words, n))})
    ann = root / "captions.json"
    ann.write_text(json.dumps({"info": {}, "licenses": [], "images": images, "annotations": anns, "type": "captions"}))
    return ann, img_dir


def synthetic_batch(n_images: int, image_size: int, vocab_size: int, captions_per_image: int = 5,
                    seed: int = 0) -> CaptionBatch:
    """A training batch as the loader gives it: uint8 images, captions of COCO-like lengths."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n_images):
        lengths = (torch.randn(captions_per_image, generator=g) * 2.0 + 10.5).clamp(8, 18).long()
        caps = [[Vocabulary.start_id, *torch.randint(4, vocab_size, (int(n),), generator=g).tolist(), Vocabulary.end_id]
                for n in lengths]
        items.append({"image": torch.randint(0, 256, (3, image_size, image_size), dtype=torch.uint8, generator=g),
                      "captions": caps, "image_id": i})
    return collate_captions(items)


# -- timing --------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds per call of ``fn`` (after ``warmup`` untimed calls), synchronising the GPU."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def time_interleaved(calls: dict[str, Callable[[], object]], rounds: int, warmup_rounds: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each of ``calls``, taken in turns: every round calls each once, in
    the given order, then reversed in the next round, so that a shared, noisy machine's drift
    falls on all alike (old and new code compared in one process). The first ``warmup_rounds``
    are left out. CPU timing (no GPU synchronisation)."""
    names = list(calls)
    times = {name: [] for name in names}
    for r in range(warmup_rounds + rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            calls[name]()
            if r >= warmup_rounds:
                times[name].append(time.perf_counter() - t0)
    return times


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def build_model(cfg: BenchConfig, encoder: str, fine_tune: int, device: torch.device) -> CaptionModel:
    """A captioner of the benchmark's sizes with random weights (seeded by ``cfg.seed``)."""
    enc = EncoderConfig(encoder, cfg.image_size, cfg.grid_size, fine_tune)
    torch.manual_seed(cfg.seed)
    return CaptionModel(CaptionConfig(enc, cfg.decoder()), encoder_weights="none").to(device)


# -- sections ------------------------------------------------------------------------------------


def bench_train(cfg: BenchConfig, device: torch.device) -> list[dict]:
    s = cfg.sizes()
    rows = []
    for name in cfg.encoders:
        for fine_tune in (0, cfg.fine_tune_blocks):
            model = build_model(cfg, name, fine_tune, device)
            vocab = Vocabulary()  # the loss needs no words, only the decoder's vocab_size
            tcfg = CaptionTrainConfig(batch_size=s["train_batch"], device=str(device), amp=cfg.amp, progress=False,
                                      compile=cfg.compile, static_shapes=cfg.static_shapes)
            task = CaptionTask(model, vocab, None, None, {}, tcfg)
            task.prepare_model(model, device)  # as fit does: compiles the decoder step under --compile
            optimizer = make_adam(default_param_groups(model, tcfg), tcfg, device)
            batch = synthetic_batch(s["train_batch"], cfg.image_size, model.cfg.decoder.vocab_size, seed=cfg.seed).to(device)
            state = LoopState()
            times = time_calls(partial(train_one_epoch, task, model, [batch], optimizer, tcfg, device, state),
                               device, s["warmup"], s["train_steps"])
            step = _median(times)
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            rows.append({"encoder": name, "encoder_weights": "none (random; speed does not depend on them)",
                         "fine_tune_blocks": fine_tune, "image_size": cfg.image_size, "grid": list(model.grid_shape()),
                         "batch_images": batch.images.size(0), "batch_captions": batch.captions.size(0),
                         "trainable_params": trainable, "amp_bf16": uses_bf16(tcfg, device),
                         "compile": cfg.compile and ("static" if cfg.static_shapes else "dynamic"),
                         "step_seconds_median": round(step, 4),
                         "images_per_s": round(batch.images.size(0) / step, 2),
                         "captions_per_s": round(batch.captions.size(0) / step, 2)})
            del model, optimizer, task, batch
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def _loader_rate(dataset, cfg: BenchConfig, device: torch.device, workers: int) -> float:
    """Images per second the loader delivers to ``device``, in steady state.

    The loader draws ``data_repeats`` passes' worth of images at random (a real epoch, several
    times over: enough batches that worker start-up is a small part), and the clock starts
    once every worker has handed over its first batch."""
    s = cfg.sizes()
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=len(dataset) * s["data_repeats"],
                                             generator=torch.Generator().manual_seed(cfg.seed))
    loader = torch.utils.data.DataLoader(dataset, batch_size=s["data_batch"], sampler=sampler, collate_fn=collate_captions,
                                         num_workers=workers, pin_memory=device.type == "cuda",
                                         prefetch_factor=4 if workers else None)
    warm = max(workers, 1)
    n, t0 = 0, None
    for i, batch in enumerate(loader):
        batch = batch.to(device, non_blocking=True)
        if i + 1 == warm:
            _sync(device)
            t0 = time.perf_counter()
        elif t0 is not None:
            n += batch.images.size(0)
    _sync(device)
    if t0 is None or n == 0:
        raise ValueError("too few batches to time the data path: raise data_images or data_repeats")
    return n / max(time.perf_counter() - t0, 1e-9)


def _workers(cfg: BenchConfig) -> int:
    return cfg.workers or min(8, os.cpu_count() or 1)


def bench_data(cfg: BenchConfig, device: torch.device, root: Path) -> dict:
    from captioning.core.shards import ShardedImages, write_shards

    s = cfg.sizes()
    ann, img_dir = make_synthetic_coco(root / "coco", s["data_images"], cfg.seed)
    records = load_coco_captions(ann, img_dir)
    vocab = Vocabulary.build(c for r in records[:50] for c in r.captions)
    jpeg_kb = float(np.mean([r.path.stat().st_size for r in records])) / 1024
    files = CaptionDataset(records, vocab, cfg.image_size)
    workers = _workers(cfg)
    from_jpeg = _loader_rate(files, cfg, device, workers)
    t0 = time.perf_counter()
    write_shards(records, root / "shards", cfg.image_size, workers=workers)
    write_rate = len(records) / (time.perf_counter() - t0)
    shards = CaptionDataset(records, vocab, cfg.image_size, images=ShardedImages(root / "shards"))
    from_shards = _loader_rate(shards, cfg, device, workers)
    shards_in_process = _loader_rate(shards, cfg, device, 0)
    return {"images": len(records), "images_drawn": len(records) * s["data_repeats"], "jpeg_size": "640x480",
            "jpeg_mean_kb": round(jpeg_kb, 1), "image_size": cfg.image_size, "batch_images": s["data_batch"],
            "loader_workers": workers, "pin_memory": device.type == "cuda",
            "from_jpeg_images_per_s": round(from_jpeg, 1), "from_shards_images_per_s": round(from_shards, 1),
            "from_shards_in_process_images_per_s": round(shards_in_process, 1),
            "shard_writing_images_per_s": round(write_rate, 1),
            "note": "files were just written, so both read from the page cache; JPEG decoding and resizing "
                    "are the cost the shards remove. 'in process' is the loader with no worker processes: "
                    "what one worker can read, before the cost of handing batches between processes"}


def bench_inference(cfg: BenchConfig, device: torch.device) -> list[dict]:
    from captioning.search import generate

    s = cfg.sizes()
    model = build_model(cfg, cfg.infer_encoder, 0, device).eval()
    rows = []
    for precision in cfg.precisions:
        for batch_size in s["infer_batches"]:
            images = torch.randint(0, 256, (batch_size, 3, cfg.image_size, cfg.image_size), dtype=torch.uint8).to(device)
            for beam in (1, 3):
                times = time_calls(lambda: generate(model, images, beam, cfg.max_length, precision=precision),
                                   device, 1, s["infer_repeats"])
                t = _median(times)
                rows.append({"encoder": cfg.infer_encoder, "image_size": cfg.image_size, "grid": list(model.grid_shape()),
                             **_precision_row(precision, device), "decoding": "greedy" if beam == 1 else f"beam {beam}",
                             "batch_size": batch_size, "seconds_median": round(t, 4), "images_per_s": round(batch_size / t, 2)})
    return rows


def bench_breakdown(cfg: BenchConfig, device: torch.device) -> dict:
    return {"train": [_train_breakdown(cfg, name, fine_tune, device)
                      for name in cfg.encoders for fine_tune in (0, cfg.fine_tune_blocks)],
            "beam": [_beam_breakdown(cfg, precision, device) for precision in cfg.precisions]}


def _train_breakdown(cfg: BenchConfig, name: str, fine_tune: int, device: torch.device) -> dict:
    """The parts of one training step, each timed alone on the train section's batch, and the
    whole step: what the parts do not account for is the loop's own cost."""
    from captioning.core.precision import autocast
    from captioning.training import caption_loss

    s = cfg.sizes()
    model = build_model(cfg, name, fine_tune, device).train()
    tcfg = CaptionTrainConfig(batch_size=s["train_batch"], device=str(device), amp=cfg.amp, progress=False)
    precision = training_precision(tcfg, device)
    optimizer = make_adam(default_param_groups(model, tcfg), tcfg, device)
    batch = synthetic_batch(s["train_batch"], cfg.image_size, model.cfg.decoder.vocab_size, seed=cfg.seed).to(device)
    images = batch.images.float().div_(255.0)
    timed = lambda fn: _median(time_calls(fn, device, s["warmup"], s["train_steps"]))

    def cnn_forward():
        with autocast(device, precision):
            return model.encode(images)

    features = cnn_forward()
    upstream = torch.randn_like(features)

    def cnn_forward_backward():
        cnn_forward().backward(upstream)

    # Fine-tuned, the decoder's backward also forms the grid's gradient for the CNN.
    grid = features.detach().requires_grad_(bool(fine_tune))

    def decoder_forward_backward():
        optimizer.zero_grad(set_to_none=True)
        grid.grad = None
        with autocast(device, precision):
            logits, alphas = model.decoder(grid, batch.captions, batch.lengths, batch.image_index, packed=True)
            loss, _, _ = caption_loss(logits, alphas, batch.captions, tcfg.alpha_c)
        loss.backward()

    row = {"encoder": name, "fine_tune_blocks": fine_tune, "batch_images": batch.images.size(0),
           "batch_captions": batch.captions.size(0), "precision": precision,
           "cnn_forward_seconds": round(timed(cnn_forward), 4)}
    row["cnn_backward_seconds"] = round(max(timed(cnn_forward_backward) - row["cnn_forward_seconds"], 0.0), 4) \
        if fine_tune else None
    row["decoder_forward_backward_seconds"] = round(timed(decoder_forward_backward), 4)
    if fine_tune:
        cnn_forward_backward()  # the CNN's gradients too, for the optimizer to step
    row["optimizer_seconds"] = round(timed(lambda: clip_and_step(optimizer, tcfg, device)), 4)
    task = CaptionTask(model, Vocabulary(), None, None, {}, tcfg)
    row["step_seconds"] = round(timed(lambda: train_one_epoch(task, model, [batch], optimizer, tcfg, device,
                                                               LoopState())), 4)
    parts = sum(row[k] or 0.0 for k in ("cnn_forward_seconds", "cnn_backward_seconds",
                                        "decoder_forward_backward_seconds", "optimizer_seconds"))
    row["unaccounted_seconds"] = round(row["step_seconds"] - parts, 4)
    return row


def _beam_breakdown(cfg: BenchConfig, precision: str, device: torch.device, beam_size: int = 3) -> dict:
    """Beam search on random grid features of the ``infer_encoder``'s shape, against the
    decoder steps it made alone (same rows, same number of steps, no ranking or bookkeeping),
    and greedy decoding of the same images."""
    from captioning.core.precision import autocast
    from captioning.search import beam_search, greedy

    s = cfg.sizes()
    model = build_model(cfg, cfg.infer_encoder, 0, device).eval()
    decoder, b = model.decoder, s["beam_batch"]
    h, w = model.grid_shape()
    features = torch.randn(b, h * w, model.encoder.out_channels, generator=torch.Generator().manual_seed(cfg.seed))
    features = features.to(device)
    steps = []
    step = decoder.step
    decoder.step = lambda *args: (steps.append(1), step(*args))[1]  # count the search's steps
    with torch.no_grad(), autocast(device, precision):
        beam_search(decoder, features, beam_size, cfg.max_length)
    del decoder.step

    @torch.no_grad()
    def decoder_steps():
        with autocast(device, precision):
            beams_of = torch.arange(b, device=device).repeat_interleave(beam_size)
            memory = decoder.memory(features)
            hc = decoder.init_state(memory.features)
            memory, hc = memory.select(beams_of), (hc[0].index_select(0, beams_of), hc[1].index_select(0, beams_of))
            tokens = torch.full((b * beam_size,), Vocabulary.start_id, dtype=torch.long, device=device)
            for _ in steps:
                _, hc, _ = decoder.step(tokens, hc, memory)

    def search():
        with torch.no_grad(), autocast(device, precision):
            beam_search(decoder, features, beam_size, cfg.max_length)

    def greedy_search():
        with torch.no_grad(), autocast(device, precision):
            greedy(decoder, features, cfg.max_length)

    timed = lambda fn: _median(time_calls(fn, device, 1, s["infer_repeats"]))
    whole, alone, first = timed(search), timed(decoder_steps), timed(greedy_search)
    return {"encoder": cfg.infer_encoder, "grid": [h, w], **_precision_row(precision, device), "batch_size": b,
            "beam_size": beam_size, "rows": b * beam_size, "steps": len(steps),
            "search_seconds": round(whole, 4), "decoder_steps_seconds": round(alone, 4),
            "beam_overhead": round(whole / alone, 3), "search_images_per_s": round(b / whole, 2),
            "greedy_seconds": round(first, 4), "greedy_images_per_s": round(b / first, 2)}


def _sample_images(root: Path, n: int, seed: int) -> list[Path]:
    _, img_dir = make_synthetic_coco(root, n, seed)
    return sorted(img_dir.glob("*.jpg"))


def _captioner(cfg: BenchConfig):
    from captioning.api import Captioner

    if cfg.checkpoint:
        return Captioner.from_pretrained(cfg.checkpoint, device="cpu")
    model = build_model(cfg, "efficientnet_lite0", 0, torch.device("cpu")).eval()
    vocab = Vocabulary(list(Vocabulary().words) + [f"w{i}" for i in range(model.cfg.decoder.vocab_size - 4)])
    return Captioner(model, vocab)


def _precision_row(precision: str, device: torch.device | str = "cpu") -> dict:
    from captioning.core.precision import native_bf16, resolve_precision

    return {"precision": resolve_precision(precision, device), "bf16_native": native_bf16(device)}


def bench_latency(cfg: BenchConfig, root: Path) -> list[dict]:
    """One image, beam 3, on the CPU, per precision: the model (from decoded PIL image to
    caption), and the ``caption`` command as a user runs it (Python start, imports,
    checkpoint, JPEG, caption)."""
    from captioning.core.images import read_image

    s = cfg.sizes()
    cpu = torch.device("cpu")
    captioner = _captioner(cfg)
    image_path = _sample_images(root / "latency", 1, cfg.seed + 1)[0]
    pil = read_image(image_path)
    ckpt = Path(cfg.checkpoint) if cfg.checkpoint else root / "untrained.safetensors"
    if not cfg.checkpoint:
        save_checkpoint(ckpt, captioner.model, kind="caption", config=captioner.model.cfg.to_json(),
                        vocab=captioner.vocab.to_json(), extra={"trained_on": "nothing (benchmark)"})
    rows = []
    for precision in cfg.precisions:
        captioner.precision = precision
        model_times = time_calls(lambda: captioner(pil, beam_size=3, max_length=cfg.max_length), cpu, 1,
                                 s["latency_repeats"])
        cmd = [sys.executable, "-m", "captioning.cli", str(image_path), "--checkpoint", str(ckpt), "--beam-size", "3",
               "--precision", precision]
        command_times = []
        for _ in range(s["command_repeats"]):
            t0 = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            command_times.append(time.perf_counter() - t0)
            if r.returncode != 0:
                raise RuntimeError(f"caption command failed: {r.stderr.strip()[-500:]}")
        rows.append({"encoder": captioner.model.cfg.encoder.name, "image_size": captioner.model.image_size,
                     "grid": list(captioner.model.grid_shape()),
                     "decoder": {k: v for k, v in asdict(captioner.model.cfg.decoder).items() if k != "feature_dim"},
                     "beam_size": 3, "torch_threads": torch.get_num_threads(), **_precision_row(precision),
                     "model_seconds_median": round(_median(model_times), 4),
                     "command_seconds_median": round(_median(command_times), 3),
                     "checkpoint_mb": round(ckpt.stat().st_size / 2**20, 1),
                     "note": "command = new Python process: imports, checkpoint load, JPEG decode, caption, print; "
                             + (f"trained checkpoint {cfg.checkpoint}" if cfg.checkpoint else UNTRAINED)})
    return rows


def bench_cpu_target(cfg: BenchConfig, root: Path) -> list[dict]:
    s = cfg.sizes()
    captioner = _captioner(cfg)
    paths = _sample_images(root / "target", s["target_images"], cfg.seed + 2)
    cpu = torch.device("cpu")
    rows = []
    for precision in cfg.precisions:
        captioner.precision = precision
        # Each way is warmed up at its own batch size: the first call at a new shape pays for
        # oneDNN's kernel selection, which a long-running captioner pays once.
        batched = _median(time_calls(
            lambda: captioner(paths, beam_size=3, max_length=cfg.max_length, batch_size=len(paths)), cpu, 1, 1))
        captioner(paths[0], beam_size=3, max_length=cfg.max_length)
        single = _median(time_calls(lambda: [captioner(p, beam_size=3, max_length=cfg.max_length) for p in paths],
                                    cpu, 0, 1))
        rows.append({"checkpoint": cfg.checkpoint or "untrained", **_precision_row(precision), "images": len(paths),
                     "beam_size": 3, "batched_seconds": round(batched, 3), "one_at_a_time_seconds": round(single, 3),
                     "speedup": round(single / batched, 2), "batched_images_per_s": round(len(paths) / batched, 2),
                     "one_at_a_time_images_per_s": round(len(paths) / single, 2)})
    return rows


CIDER_TARGET = 20_000  # sampled captions/s on one CPU core: enough to keep a GPU's SCST step fed


def bench_cider(cfg: BenchConfig) -> dict:
    """The SCST reward (captioning.cider.CiderD) on one CPU core: COCO-like references (5 per
    image, 8-13 words, Zipf-distributed over a 10,000-word vocabulary), then batches of 50
    images x 5 sampled captions, as an SCST step scores them. Captions/s are by the process's
    CPU time, so other processes on the machine do not count against it."""
    import numpy as np

    from captioning.cider import CiderD

    rng = np.random.default_rng(cfg.seed)
    images = 200 if cfg.tiny else 2000 if cfg.quick else 20000
    batches = 2 if cfg.tiny else 20 if cfg.quick else 100

    def captions(n: int) -> list[list[int]]:
        return [np.minimum(rng.zipf(1.3, int(k)), 9999).tolist() for k in rng.integers(8, 14, n)]

    t0 = time.process_time()
    cider = CiderD({i: captions(5) for i in range(images)})
    build = time.process_time() - t0
    work = [(np.repeat(rng.integers(0, images, 50), 5).tolist(), captions(250)) for _ in range(batches)]
    cider.score(*work[0])  # warm-up
    t0 = time.process_time()
    for ids, cands in work:
        cider.score(ids, cands)
    per_s = batches * 250 / (time.process_time() - t0)
    return {"corpus_images": images, "references_per_image": 5, "batch": "50 images x 5 samples",
            "corpus_build_cpu_seconds": round(build, 2), "captions_per_cpu_second": round(per_s),
            "target_captions_per_s": CIDER_TARGET, "meets_target": per_s >= CIDER_TARGET}


def run_benchmarks(cfg: BenchConfig, log: Callable[[str], None] = lambda m: None) -> dict:
    """Run the selected sections; returns the report (JSON-serialisable)."""
    device = torch.device(cfg.device)
    from captioning.core.errors import UserError

    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: CUDA is not available on this machine")
    unknown = set(cfg.sections) - set(SECTIONS)
    if unknown:
        raise UserError(f"unknown sections {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    from captioning.core.precision import resolve_precision

    for precision in cfg.precisions:
        resolve_precision(precision, device)  # an unknown name is one line, before any work
    from captioning.core.encoders import ENCODERS

    for name in (*cfg.encoders, cfg.infer_encoder):
        if name not in ENCODERS:
            raise UserError(f"unknown encoder {name!r}; known: {', '.join(ENCODERS)}")
    report: dict = {"config": {**asdict(cfg), "sizes": cfg.sizes()}, "environment": _environment(device),
                    "notes": ["models are randomly initialised (weights='none'); speed does not depend on the weights",
                              UNTRAINED, "times are medians over repeats after warm-up"]}
    info = {}
    with tempfile.TemporaryDirectory(prefix="caption-bench-") as tmp:
        root = Path(tmp)
        runs = {"train": lambda: bench_train(cfg, device), "data": lambda: bench_data(cfg, device, root),
                "inference": lambda: bench_inference(cfg, device), "breakdown": lambda: bench_breakdown(cfg, device),
                "latency": lambda: bench_latency(cfg, root),
                "cpu_target": lambda: bench_cpu_target(cfg, root), "cider": lambda: bench_cider(cfg)}
        for name in SECTIONS:
            if name not in cfg.sections:
                continue
            log(f"benchmark: {name} ...")
            t0 = time.perf_counter()
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
            report[name] = runs[name]()
            info[name] = {
                "seconds": round(time.perf_counter() - t0, 1), "load_avg_1min_before": load,
                "load_avg_1min_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    report["section_info"] = info  # wall time and machine load: other processes make CPU timings noisy
    return report


def _environment(device: torch.device) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
           "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def format_report(report: dict) -> str:
    return json.dumps(report, indent=2)

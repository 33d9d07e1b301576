"""A frozen CNN's forward without autograd, before vs today (CPU, fp32, interleaved in one process):

before = 20465aa's encode_images: the encoder itself, in chunks of 8 * 160 * 160 input pixels.
folded = today's: its folded copy (every BatchNorm folded into its convolution, Encoder.folded), in chunks of
         the encoder's EncoderSpec.cpu_chunk_pixels (ResNets: 8 * 256 * 256).

    PYTHONPATH=. python scripts/folded_cnn_ab.py 6   # timed rounds

Rows: Lite0 (its shipped weights) at 224 px in a batch of 32 (inference: `caption` on a folder, feature
caching); Lite0 and ResNet-101 (random weights, statistics as built) at the benchmark's --quick training
sizes, 256 px, 8 images. One JSON line per row: the largest difference of the grids relative to their
largest value, each way's times, medians and their ratio; the README's speed table quotes it."""
import json
import statistics
import sys

import torch

from bench.benchmark import time_interleaved
from captioning.core.encoders import EncoderConfig, encode_images

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 6
for name, size, batch, grid in (("efficientnet_lite0", 224, 32, None), ("efficientnet_lite0", 256, 8, 14),
                                ("resnet101", 256, 8, 14)):
    encoder = EncoderConfig(name, image_size=size, grid_size=grid).build(
        weights="default" if name == "efficientnet_lite0" else None).eval()
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))

    @torch.no_grad()
    def before():
        return torch.cat([encoder(c) for c in images.split(max(1, 8 * 160 * 160 // (size * size)))])

    def folded():
        return encode_images(encoder, images, trainable=False)

    old, new = before(), (folded(), folded())[1]  # the second call folds (lazily)
    times = time_interleaved({"before": before, "folded": folded}, rounds)
    print(json.dumps({"encoder": name, "image_size": size, "batch": batch,
                      "max_relative_difference": float((new - old).abs().max() / old.abs().max()),
                      **{way + "_s": [round(x, 3) for x in t] for way, t in times.items()},
                      **{way + "_median_s": round(statistics.median(t), 3) for way, t in times.items()},
                      "speedup_of_medians": round(statistics.median(times["before"]) / statistics.median(times["folded"]), 2)}),
          flush=True)

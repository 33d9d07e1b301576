"""scripts/benchmark.py end to end on a tiny configuration: every section runs and reports."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(tmp_path, *args):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--tiny", "--workers", "1",
                        "--out", str(out), *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(out.read_text())
    assert json.loads(r.stdout) == report
    return report


def test_tiny_benchmark_reports_its_sections(tmp_path):
    report = run_benchmark(tmp_path, "--quick", "--encoders", "efficientnet_lite0",
                           "--sections", "train,data,inference,cpu_target")
    assert [(row["fine_tune_blocks"], row["batch_captions"]) for row in report["train"]] == [(0, 20), (3, 20)]
    assert all(row["images_per_s"] > 0 and row["captions_per_s"] == pytest.approx(5 * row["images_per_s"], rel=0.01)
               for row in report["train"])
    data = report["data"]
    assert data["from_jpeg_images_per_s"] > 0 and data["from_shards_images_per_s"] > 0
    assert data["from_shards_in_process_images_per_s"] > 0 and data["images_drawn"] == 2 * data["images"]  # --tiny: 2 passes
    assert {(row["precision"], row["decoding"], row["batch_size"]) for row in report["inference"]} == {
        (p, d, b) for p in ("fp32", "bf16") for d in ("greedy", "beam 3") for b in (1, 4)}
    assert [row["precision"] for row in report["cpu_target"]] == ["fp32", "bf16"]
    assert all(row["speedup"] > 0 for row in report["cpu_target"])
    assert set(report["section_info"]) == {"train", "data", "inference", "cpu_target"} and "latency" not in report


@pytest.mark.slow
def test_tiny_benchmark_with_every_section_and_encoder(tmp_path):
    report = run_benchmark(tmp_path)
    assert [row["encoder"] for row in report["train"]] == ["efficientnet_lite0"] * 2 + ["resnet101"] * 2
    assert all(row["model_seconds_median"] > 0 and row["command_seconds_median"] > 0 for row in report["latency"])
    assert set(report["section_info"]) == {"train", "data", "inference", "breakdown", "latency", "cpu_target", "cider"}


def test_breakdown_and_inference_with_another_encoder(tmp_path):
    report = run_benchmark(tmp_path, "--encoders", "efficientnet_lite0", "--infer-encoder", "resnet50",
                           "--sections", "inference,breakdown", "--precisions", "fp32")
    assert {row["encoder"] for row in report["inference"]} == {"resnet50"}
    train = report["breakdown"]["train"]
    assert [(row["encoder"], row["fine_tune_blocks"]) for row in train] == [("efficientnet_lite0", 0), ("efficientnet_lite0", 3)]
    parts = ("cnn_forward_seconds", "cnn_backward_seconds", "decoder_forward_backward_seconds", "optimizer_seconds")
    for row in train:
        assert (row["cnn_backward_seconds"] is None) == (row["fine_tune_blocks"] == 0)
        assert row["unaccounted_seconds"] == pytest.approx(row["step_seconds"] - sum(row[k] or 0 for k in parts), abs=1e-3)
    [beam] = report["breakdown"]["beam"]
    # An untrained model never ends a caption: max_length words, then the step that may only say <end>.
    assert (beam["encoder"], beam["precision"], beam["rows"], beam["steps"]) == ("resnet50", "fp32", 3 * beam["batch_size"], 21)
    # The report rounds the seconds to 4 decimals and the ratio to 3: the ratio of the rounded
    # seconds is off by up to 5e-5 s in each (2.034 against 2.0 for steps of ~3 ms).
    search, steps = beam["search_seconds"], beam["decoder_steps_seconds"]
    assert beam["beam_overhead"] == pytest.approx(search / steps, abs=5e-4 + 5e-5 * (1 + search / steps) / steps)


def test_cider_section_reports_the_reward_speed(tmp_path):
    report = run_benchmark(tmp_path, "--sections", "cider")
    assert set(report["section_info"]) == {"cider"}
    assert report["cider"]["captions_per_cpu_second"] > 0 and report["cider"]["target_captions_per_s"] == 20_000


def test_unknown_section_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--sections", "nope"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.startswith("benchmark: error: unknown sections") and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--precisions", "fp8"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.startswith("benchmark: error: precision 'fp8'") and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--infer-encoder", "vgg"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.startswith("benchmark: error: unknown encoder 'vgg'") and "Traceback" not in r.stderr


def test_latency_and_cpu_target_of_a_trained_checkpoint(tmp_path, trained):
    ckpt = trained[0]
    report = run_benchmark(tmp_path, "--quick", "--sections", "latency,cpu_target", "--checkpoint", str(ckpt),
                           "--precisions", "fp32")
    [target] = report["cpu_target"]
    assert target["checkpoint"] == str(ckpt) and target["batched_seconds"] > 0
    [lat] = report["latency"]
    # The trained model's own sizes, not the benchmark's (64 px with --tiny).
    assert lat["image_size"] == 96 and lat["grid"] == [3, 3] and lat["decoder"]["hidden_dim"] == 64
    assert str(ckpt) in lat["note"] and lat["command_seconds_median"] > 0


def test_time_interleaved_alternates_the_order_and_leaves_out_the_warm_up():
    from bench.benchmark import time_interleaved

    calls = []
    times = time_interleaved({name: (lambda n=name: calls.append(n)) for name in ("old", "new", "other")}, rounds=2)
    assert calls == ["old", "new", "other", "other", "new", "old", "old", "new", "other"]  # round 0 warms up
    assert {name: len(t) for name, t in times.items()} == {"old": 2, "new": 2, "other": 2}
    assert all(x >= 0 for t in times.values() for x in t)

"""The GPU kit's report, from logs written the way Caffe, gtest, nvidia-smi
and the PyTorch benchmark write them, against hand-computed numbers."""
from __future__ import annotations

import json

import pytest

from deconvnet.bench import gpu_kit_report

TRAIN_LOG = """I1124 10:00:00.000 solver.cpp:218] Iteration 0 (-1.4013e-45 iter/s, 3.2s/1 iters), loss = 3.04
I1124 10:00:01.000 solver.cpp:218] Iteration 2 (0.5 iter/s, 4s/2 iters), loss = 2.9
I1124 10:00:02.000 solver.cpp:218] Iteration 4 (2 iter/s, 1s/2 iters), loss = 2.5
I1124 10:00:03.000 solver.cpp:218] Iteration 6 (3 iter/s, 0.66s/2 iters), loss = 2.1
"""
TIME_LOG = """I1124 caffe.cpp:397] Average time per layer:
I1124 caffe.cpp:412] Average Forward pass: 125.5 ms.
I1124 caffe.cpp:414] Average Backward pass: 250.25 ms.
I1124 caffe.cpp:416] Average Forward-Backward: 376 ms.
"""
FOLDED_TIME_LOG = """I1124 caffe.cpp:412] Average Forward pass: 50.2 ms.
I1124 caffe.cpp:414] Average Backward pass: 0.01 ms.
"""
GTEST_LOG = """[==========] 26 tests from 6 test suites ran. (120 ms total)
[  PASSED  ] 26 tests.
"""


def test_report_from_logs(tmp_path):
    (tmp_path / "train.log").write_text(TRAIN_LOG)
    (tmp_path / "time_forward_b50.log").write_text(TIME_LOG)
    (tmp_path / "time_train_b8.log").write_text(TIME_LOG)
    (tmp_path / "time_forward_b50_folded.log").write_text(FOLDED_TIME_LOG)
    (tmp_path / "memory_forward_b50_folded.csv").write_text("memory.used [MiB]\n 600\n 4700\n 3000\n")
    (tmp_path / "gtest.log").write_text(GTEST_LOG)
    (tmp_path / "gpu.txt").write_text("NVIDIA H100 80GB HBM3, 580.65.06\n")
    (tmp_path / "memory_train.csv").write_text("500\n9000\n12500\n12000\n")
    (tmp_path / "torch.json").write_text(json.dumps(
        {"train_samples_per_s": 160.0, "forward_50_s": 0.1, "forward_50_fused_s": 0.0753, "peak_mib": 9000,
         "version": "2.9.0"}))
    assert gpu_kit_report.main([str(tmp_path)]) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    # Iteration 0 and the first interval (cuDNN's search) are left out:
    # mean(2, 3) = 2.5 iter/s of 64 samples.
    samples = 2.5 * 64
    assert report["caffe"]["train_samples_per_s"] == pytest.approx(samples)
    assert report["caffe"]["forward_50_proposals_ms"] == pytest.approx(125.5)
    assert report["caffe"]["time_b8_ms"] == {"forward": 125.5, "backward": 250.25}
    assert report["caffe"]["peak_mib_train"] == 12000        # 12500 - the idle 500
    assert report["caffe"]["peak_mib_forward_50"] is None    # no samples
    assert report["caffe"]["forward_50_folded_ms"] == pytest.approx(50.2)
    assert report["caffe"]["peak_mib_forward_50_folded"] == 4100   # 4700 - the idle 600; the header skipped
    assert report["pytorch"]["forward_50_fused_ms"] == pytest.approx(75.3)
    assert report["gtest_unpooling"] == {"ran": 26, "passed": 26, "failed": []}
    assert report["gpu"] == "NVIDIA H100 80GB HBM3, 580.65.06"
    assert report["ratios"]["caffe_train_vs_paper_titan_x"] == pytest.approx(samples / 7.4)
    assert report["ratios"]["caffe_train_vs_pytorch"] == pytest.approx(samples / 160)
    assert report["ratios"]["caffe_forward_50_vs_pytorch_speed"] == pytest.approx(100 / 125.5)
    assert report["ratios"]["caffe_folded_50_vs_pytorch_fused_speed"] == pytest.approx(1.5)
    assert report["ratios"]["caffe_folded_50_vs_unfolded_speed"] == pytest.approx(2.5)
    table = (tmp_path / "results.md").read_text()
    assert f"| training samples/s | {samples:.1f} | 160.0 | {samples / 160:.2f}x |" in table
    assert "Unpooling GPU gtest: 26 passed" in table
    assert "| forward of 50 proposals, folded / fused (ms) | 50.2 | 75.3 | 1.50x |" in table
    assert "proposals 2.50x as fast" in table


def test_report_without_logs_says_not_available(tmp_path):
    report = gpu_kit_report.collect(tmp_path)
    assert report["caffe"]["train_samples_per_s"] is None and report["pytorch"] is None
    text = gpu_kit_report.markdown(report)
    assert "| training samples/s | n/a | n/a | n/a |" in text and "gtest: not run" in text
    assert "| forward of 50 proposals, folded / fused (ms) | n/a | n/a | n/a |" in text


def test_gtest_failures_are_named():
    log = ("[==========] 2 tests from 1 test suite ran.\n[  PASSED  ] 1 test.\n"
           "[  FAILED  ] UnpoolingLayerTest/1.TestGradient, where TypeParam = ...\n")
    assert gpu_kit_report.gtest_summary(log) == {"ran": 2, "passed": 1, "failed": ["UnpoolingLayerTest/1.TestGradient"]}


def test_python_pipeline_figures(tmp_path):
    """tools/train.py's records, one per update, and tools/infer.py's
    --timings files, against hand-computed rates."""
    (tmp_path / "train.log").write_text(TRAIN_LOG)   # C++ DummyData: 2.5 iter/s of 64 samples
    stage = tmp_path / "train_python" / "stage2"
    stage.mkdir(parents=True)
    # Updates 1 and 2 are left out; from update 3 (t=14) to 6 (t=20): 3 updates in 6 s.
    times = {1: 10.0, 2: 12.5, 3: 14.0, 4: 16.0, 5: 18.0, 6: 20.0}
    records = [{"event": "train", "iter": i, "loss": 3.0, "time": t} for i, t in times.items()]
    records.append({"event": "done", "iter": 6, "time": 25.0})
    (stage / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for name, seconds, images in (("infer_gpu", 0.5, 20), ("infer_cpu", 6.0, 3)):
        per = {"proposals": 0.05, "forward": seconds - 0.25, "aggregation": 0.05, "crf": 0.15}
        (tmp_path / f"{name}.json").write_text(json.dumps(
            {"images": images, "seconds_per_image": dict(per, total=seconds)}))
    (tmp_path / "proposals_on_the_kit_builder.json").write_text(
        json.dumps({"seconds_per_image_on_the_kit_builder": 0.6}))
    assert gpu_kit_report.main([str(tmp_path)]) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["python"]["train_samples_per_s"] == pytest.approx(0.5 * 64)
    assert report["ratios"]["python_data_layer_train_vs_dummydata"] == pytest.approx(0.5 / 2.5)
    assert report["ratios"]["infer_gpu_vs_cpu_speed"] == pytest.approx(12.0)
    text = (tmp_path / "results.md").read_text()
    assert "crop LMDB: 32.0, 0.20x the C++ DummyData rate" in text
    assert "| forward | 0.250 | 5.750 |" in text and "| total | 0.500 | 6.000 |" in text
    assert "20 on the GPU, 3 on the CPU; the GPU is 12.0x as fast" in text and "(0.60 s per image there)" in text
    assert "GPU batch chosen from the free memory: n/a" in text


def test_pipelined_infer_figures(tmp_path):
    """With --workers the wall time per image, not the steps' sum, gives the
    ratio; the batch chosen and the peak memory come from the GPU run."""
    for name, busy, wall in (("infer_gpu", 3.0, 0.25), ("infer_cpu", 9.0, 7.5)):
        (tmp_path / f"{name}.json").write_text(json.dumps(
            {"images": 4, "seconds_per_image": {"crf": busy, "total": busy}, "wall_seconds_per_image": wall}))
    (tmp_path / "infer_gpu.log").write_text("infer: 15 workers; ...\nbatch 50: 138 MiB per proposal; ...\n")
    (tmp_path / "memory_infer_gpu.csv").write_text("1200\n9800\n4100\n")
    assert gpu_kit_report.main([str(tmp_path)]) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["ratios"]["infer_gpu_vs_cpu_speed"] == pytest.approx(30.0)   # 7.5 / 0.25, not 9 / 3
    assert report["python"]["infer_gpu_batch"] == 50
    assert report["python"]["peak_mib_infer_gpu"] == 9800 - 1200   # above the first (idle) sample
    text = (tmp_path / "results.md").read_text()
    assert "| wall, per image (--workers overlaps the steps) | 0.250 | 7.500 |" in text
    assert "50 proposals a pass; peak GPU memory of the run 8600 MiB" in text


def test_python_training_rate_needs_two_timed_updates():
    """Fewer records than the skipped ones plus two give no rate, not a
    rate from the warm-up."""
    log = "".join(json.dumps({"event": "train", "iter": i, "time": float(i)}) + "\n" for i in (1, 2, 3))
    assert gpu_kit_report.python_train_updates_per_s(log) is None
    assert gpu_kit_report.python_train_updates_per_s(log, skip=1) == pytest.approx(1.0)

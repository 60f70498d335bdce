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

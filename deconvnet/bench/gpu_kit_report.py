"""The GPU kit's report (scripts/gpu_kit.sh, run.sh inside the kit): reads
the logs run.sh leaves in its results folder and writes ``results.json``
and ``results.md`` with training samples/s, the forward time of 50
proposals, peak GPU memory, the GPU model, and the ratios to the paper's
Titan X and to PyTorch on the same GPU.

Files read (absent ones give null): ``gpu.txt`` (nvidia-smi's name),
``gtest.log``, ``time_train_b8.log``, ``time_forward_b50.log`` and
``time_forward_b50_folded.log`` (caffe time), ``train.log`` (caffe train),
``memory_*.csv`` (nvidia-smi samples of memory.used in MiB, the first one
idle) and ``torch.json``
(deconvnet.bench.torch_benchmark); for the Python pipeline,
``train_python/stage2/log.jsonl`` (tools/train.py's records, one per
update), ``infer_gpu.json`` and ``infer_cpu.json`` (tools/infer.py
--timings) and ``proposals_on_the_kit_builder.json``. Stdlib and the kit's
copy of deconvnet.common only: it runs with whatever Python the GPU machine
has."""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from deconvnet.common.constants import INPUT_SIZE, TEST_PROPOSALS
from deconvnet.common.recipes import RELEASE

# The paper's Titan X: 20K iterations of 64 crops in about 2 days, so about
# 7.4 samples/s (docs/PAPER.md, section 3).
PAPER_TITAN_X_SAMPLES_PER_S = 7.4
# What the kit times: the release recipe's batch per pass and iter_size, and
# one image's proposals.
BATCH, ITER_SIZE, PROPOSALS = RELEASE.batch_per_pass, RELEASE.iter_size, TEST_PROPOSALS


def _read(path: Path) -> str | None:
    return path.read_text(errors="replace") if path.exists() else None


def caffe_time_ms(log: str | None) -> dict[str, float] | None:
    """Average forward and backward ms of one pass, from ``caffe time``."""
    if log is None:
        return None
    found = {key: re.search(rf"Average {label}: ([0-9.]+) ms", log)
             for key, label in (("forward", "Forward pass"), ("backward", "Backward pass"))}
    if found["forward"] is None:
        return None
    return {key: float(m.group(1)) for key, m in found.items() if m is not None}


def caffe_train_iter_per_s(log: str | None) -> float | None:
    """Mean of the iter/s Caffe reports per display, without the display
    of iteration 0 (always 0 iter/s) and the next one, which holds cuDNN's
    algorithm search and the first allocations."""
    if log is None:
        return None
    # Iteration 0's rate is 0 divided by a time, which glog prints as e.g. -1.4013e-45.
    rates = [float(r) for r in re.findall(r"Iteration \d+ \((\S+) iter/s", log)][2:]
    return sum(rates) / len(rates) if rates else None


def gtest_summary(log: str | None) -> dict[str, Any] | None:
    if log is None:
        return None
    passed = re.search(r"\[  PASSED  \] (\d+) tests?", log)
    failed = re.findall(r"\[  FAILED  \] ([\w/.]+)", log)
    ran = re.search(r"(\d+) tests? from \d+ test (?:suites?|cases?) ran", log)
    return {"ran": int(ran.group(1)) if ran else None, "passed": int(passed.group(1)) if passed else 0,
            "failed": sorted(set(failed))}


def peak_mib(csv: str | None) -> float | None:
    """Peak memory.used above the first (idle) sample."""
    if csv is None:
        return None
    values = [float(v) for v in re.findall(r"^\s*([0-9.]+)\s*$", csv, flags=re.MULTILINE)]
    return max(values) - values[0] if len(values) > 1 else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def python_train_updates_per_s(log: str | None, skip: int = 2) -> float | None:
    """Updates per second from tools/train.py's log.jsonl (--log-interval 1),
    leaving out the first ``skip`` updates (cuDNN's algorithm search, the
    data layer's prefetch starting)."""
    if not log:
        return None
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    train = [r for r in records if r.get("event") == "train"]
    if len(train) < skip + 2:
        return None
    first, last = train[skip], train[-1]
    seconds = last["time"] - first["time"]
    return (last["iter"] - first["iter"]) / seconds if seconds > 0 else None


def infer_seconds(text: str | None) -> dict[str, Any] | None:
    """tools/infer.py --timings: images and seconds per image by step."""
    return json.loads(text) if text else None


def chosen_batch(text: str | None) -> int | None:
    """The batch tools/infer.py chose from the card's free memory (its log)."""
    match = re.search(r"^batch (\d+): ", text or "", re.M)
    return int(match.group(1)) if match else None


def wall_per_image(record: dict[str, Any] | None) -> float | None:
    """Wall seconds per image (with --workers, less than the steps' sum);
    the sum where the record predates the wall time."""
    if not record:
        return None
    return record.get("wall_seconds_per_image") or record["seconds_per_image"]["total"]


def collect(results: Path) -> dict[str, Any]:
    train_rate = caffe_train_iter_per_s(_read(results / "train.log"))
    forward = caffe_time_ms(_read(results / "time_forward_b50.log"))
    folded = caffe_time_ms(_read(results / "time_forward_b50_folded.log"))
    torch_text = _read(results / "torch.json")
    torch = json.loads(torch_text) if torch_text else None
    caffe_samples = train_rate * BATCH * ITER_SIZE if train_rate is not None else None
    caffe_forward_50 = forward["forward"] if forward else None
    caffe_folded_50 = folded["forward"] if folded else None
    torch_samples = torch["train_samples_per_s"] if torch else None
    torch_forward_50 = torch["forward_50_s"] * 1000 if torch else None
    torch_fused_50 = torch["forward_50_fused_s"] * 1000 if torch and "forward_50_fused_s" in torch else None
    gpu = _read(results / "gpu.txt")
    python_rate = python_train_updates_per_s(_read(results / "train_python" / "stage2" / "log.jsonl"))
    python_samples = python_rate * BATCH * ITER_SIZE if python_rate is not None else None
    infer_gpu = infer_seconds(_read(results / "infer_gpu.json"))
    infer_cpu = infer_seconds(_read(results / "infer_cpu.json"))
    proposals_text = _read(results / "proposals_on_the_kit_builder.json")
    return {
        "gpu": gpu.strip().splitlines()[0] if gpu and gpu.strip() else None,
        "gtest_unpooling": gtest_summary(_read(results / "gtest.log")),
        "caffe": {
            "train_samples_per_s": caffe_samples,
            "time_b8_ms": caffe_time_ms(_read(results / "time_train_b8.log")),
            "forward_50_proposals_ms": caffe_forward_50,
            "peak_mib_train": peak_mib(_read(results / "memory_train.csv")),
            "peak_mib_forward_50": peak_mib(_read(results / "memory_forward_b50.csv")),
            "forward_50_folded_ms": caffe_folded_50,
            "peak_mib_forward_50_folded": peak_mib(_read(results / "memory_forward_b50_folded.csv")),
        },
        "pytorch": None if torch is None else {
            "version": torch.get("version"),
            "train_samples_per_s": torch_samples,
            "forward_50_proposals_ms": torch_forward_50,
            "forward_50_fused_ms": torch_fused_50,
            "peak_mib": torch.get("peak_mib"),
        },
        "python": {
            "train_samples_per_s": python_samples,
            "peak_mib_train": peak_mib(_read(results / "memory_train_python.csv")),
            "infer_gpu": infer_gpu,
            "infer_gpu_batch": chosen_batch(_read(results / "infer_gpu.log")),
            "peak_mib_infer_gpu": peak_mib(_read(results / "memory_infer_gpu.csv")),
            "infer_cpu": infer_cpu,
            "proposals_on_the_kit_builder": json.loads(proposals_text) if proposals_text else None,
        },
        "ratios": {
            "python_data_layer_train_vs_dummydata": _ratio(python_samples, caffe_samples),
            "infer_gpu_vs_cpu_speed": _ratio(wall_per_image(infer_cpu), wall_per_image(infer_gpu)),
            "caffe_train_vs_paper_titan_x": _ratio(caffe_samples, PAPER_TITAN_X_SAMPLES_PER_S),
            "caffe_train_vs_pytorch": _ratio(caffe_samples, torch_samples),
            "caffe_forward_50_vs_pytorch_speed": _ratio(torch_forward_50, caffe_forward_50),
            "caffe_folded_50_vs_pytorch_fused_speed": _ratio(torch_fused_50, caffe_folded_50),
            "caffe_folded_50_vs_unfolded_speed": _ratio(caffe_forward_50, caffe_folded_50),
        },
        "setting": {"batch": BATCH, "iter_size": ITER_SIZE, "proposals": PROPOSALS, "input": INPUT_SIZE,
                    "paper_titan_x_samples_per_s": PAPER_TITAN_X_SAMPLES_PER_S},
    }


def _fmt(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def markdown(report: dict[str, Any]) -> str:
    caffe, torch, ratios = report["caffe"], report["pytorch"] or {}, report["ratios"]
    gtest = report["gtest_unpooling"]
    gtest_text = "not run" if gtest is None else (
        f"{gtest['passed']} passed" + (f", failed: {', '.join(gtest['failed'])}" if gtest["failed"] else ""))
    lines = [
        f"Full DeconvNet (224x224) on {report['gpu'] or 'an unknown GPU'}; training batch {BATCH} x "
        f"iter_size {ITER_SIZE}; PyTorch {torch.get('version', 'n/a')}. Unpooling GPU gtest: {gtest_text}.",
        "",
        "| measure | Caffe | PyTorch | Caffe / PyTorch |",
        "|---|---|---|---|",
        f"| training samples/s | {_fmt(caffe['train_samples_per_s'])} | {_fmt(torch.get('train_samples_per_s'))} "
        f"| {_fmt(ratios['caffe_train_vs_pytorch'], '.2f', 'x')} |",
        f"| forward of {PROPOSALS} proposals (ms) | {_fmt(caffe['forward_50_proposals_ms'])} "
        f"| {_fmt(torch.get('forward_50_proposals_ms'))} "
        f"| {_fmt(ratios['caffe_forward_50_vs_pytorch_speed'], '.2f', 'x')} |",
        f"| forward of {PROPOSALS} proposals, folded / fused (ms) | {_fmt(caffe['forward_50_folded_ms'])} "
        f"| {_fmt(torch.get('forward_50_fused_ms'))} "
        f"| {_fmt(ratios['caffe_folded_50_vs_pytorch_fused_speed'], '.2f', 'x')} |",
        f"| peak GPU memory, training (MiB) | {_fmt(caffe['peak_mib_train'], '.0f')} "
        f"| {_fmt(torch.get('peak_mib'), '.0f')} | |",
        f"| peak GPU memory, forward of {PROPOSALS} (MiB) | {_fmt(caffe['peak_mib_forward_50'], '.0f')} | | |",
        f"| peak GPU memory, folded forward of {PROPOSALS} (MiB) "
        f"| {_fmt(caffe['peak_mib_forward_50_folded'], '.0f')} | | |",
        "",
        f"Folding makes Caffe's forward of {PROPOSALS} proposals "
        f"{_fmt(ratios['caffe_folded_50_vs_unfolded_speed'], '.2f', 'x')} as fast. "
        "Ratios are speed: above 1, Caffe is faster.",
        f"Caffe's training is {_fmt(ratios['caffe_train_vs_paper_titan_x'], '.1f', 'x')} the paper's Titan X "
        f"(about {PAPER_TITAN_X_SAMPLES_PER_S} samples/s).",
    ]
    return "\n".join(lines + python_lines(report)) + "\n"


def python_lines(report: dict[str, Any]) -> list[str]:
    """The Python pipeline's part of results.md."""
    python, ratios = report["python"], report["ratios"]
    lines = [
        "",
        "Python pipeline (pycaffe, tools/train.py and tools/infer.py):",
        "",
        f"- training samples/s with the Python data layer reading the crop LMDB: "
        f"{_fmt(python['train_samples_per_s'])}, "
        f"{_fmt(ratios['python_data_layer_train_vs_dummydata'], '.2f', 'x')} the C++ DummyData rate; "
        f"peak GPU memory {_fmt(python['peak_mib_train'], '.0f')} MiB",
        "",
        f"| seconds per image (folded net, {PROPOSALS} proposals, dense CRF) | GPU | CPU |",
        "|---|---|---|",
    ]
    gpu = (python["infer_gpu"] or {}).get("seconds_per_image", {})
    cpu = (python["infer_cpu"] or {}).get("seconds_per_image", {})
    for step in ("proposals", "forward", "aggregation", "crf", "writing", "total"):
        lines.append(f"| {step} | {_fmt(gpu.get(step), '.3f')} | {_fmt(cpu.get(step), '.3f')} |")
    lines.append(f"| wall, per image (--workers overlaps the steps) | "
                 f"{_fmt(wall_per_image(python['infer_gpu']), '.3f')} | "
                 f"{_fmt(wall_per_image(python['infer_cpu']), '.3f')} |")
    lines += ["", f"GPU batch chosen from the free memory: {_fmt(python['infer_gpu_batch'], 'd')} proposals a pass; "
                  f"peak GPU memory of the run {_fmt(python['peak_mib_infer_gpu'], '.0f')} MiB"]
    images = [(python[k] or {}).get("images") for k in ("infer_gpu", "infer_cpu")]
    lines += ["", f"Images: {images[0] or 'n/a'} on the GPU, {images[1] or 'n/a'} on the CPU; the GPU is "
                  f"{_fmt(ratios['infer_gpu_vs_cpu_speed'], '.1f', 'x')} as fast per image. 'proposals' is the "
                  "crops' preparation: Edge Boxes ran when the kit was built"]
    built = python["proposals_on_the_kit_builder"]
    if built:
        lines[-1] += f" ({built['seconds_per_image_on_the_kit_builder']:.2f} s per image there)."
    else:
        lines[-1] += "."
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="the folder run.sh wrote its logs to")
    args = parser.parse_args(argv)
    report = collect(args.results)
    (args.results / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.results / "results.md").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

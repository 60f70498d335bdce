"""Training and forward timings of the PyTorch twin of DeconvNet
(``torch_reference``) on one device: the reference side of
tools/benchmarks/gpu.py and of the offline GPU kit (scripts/gpu_kit.sh).

Training is the solvers' schedule: SGD with momentum, batch x iter_size
passes per update, train-mode BatchNorm, random data. The forward time is
that of one image's 50 proposals as one batch, in eval mode, then again
with BatchNorm fused into the convolutions. Needs torch
(not in requirements.txt). ``python -m deconvnet.bench.torch_benchmark --help``."""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from deconvnet.common.constants import INPUT_SIZE, TEST_PROPOSALS
from deconvnet.common.recipes import RELEASE


def run(device_name: str, batch: int = RELEASE.batch_per_pass, iter_size: int = RELEASE.iter_size,
        iterations: int = 5, width_divisor: int = 1, proposals: int = TEST_PROPOSALS,
        forward: bool = True) -> dict[str, Any]:
    """Samples/s of training, seconds per forward of ``proposals`` crops
    (unless not ``forward``), and the peak memory PyTorch reserved on a CUDA
    device (0 on the CPU)."""
    import torch

    from deconvnet.net.architecture import Size
    from deconvnet.net.torch_reference import DeconvNet, fuse_batchnorm

    device = torch.device(device_name)
    cuda = device.type == "cuda"
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    net = DeconvNet(Size(INPUT_SIZE, width_divisor)).to(device).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9, weight_decay=0.0005)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)
    x = torch.randn(batch, 3, INPUT_SIZE, INPUT_SIZE, device=device)
    y = torch.randint(0, 21, (batch, INPUT_SIZE, INPUT_SIZE), device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        for _ in range(iter_size):
            loss_fn(net(x), y).backward()
        opt.step()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    step()  # warm-up: cuDNN's algorithm search
    sync()
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    sync()
    result: dict[str, Any] = {
        "train_samples_per_s": iterations * batch * iter_size / (time.perf_counter() - start),
        "version": torch.__version__, "device": torch.cuda.get_device_name(device) if cuda else "CPU"}
    if not forward:
        return result
    net.eval()
    crops = torch.randn(proposals, 3, INPUT_SIZE, INPUT_SIZE, device=device)

    def seconds_per_forward() -> float:
        with torch.no_grad():
            net(crops)  # warm-up
            sync()
            start = time.perf_counter()
            for _ in range(iterations):
                net(crops)
            sync()
        return (time.perf_counter() - start) / iterations

    result["forward_50_s"] = seconds_per_forward()
    # The same with BatchNorm fused into the convolutions: the counterpart of
    # Caffe's folded deploy net (tools/fold_bn.py).
    fuse_batchnorm(net)
    result["forward_50_fused_s"] = seconds_per_forward()
    result["peak_mib"] = torch.cuda.max_memory_reserved(device) / 2**20 if cuda else 0
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda:0", help="a torch device (default: cuda:0)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iter-size", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=5, help="timed updates and forwards")
    parser.add_argument("--width-divisor", type=int, default=1, help="reduced widths (smoke tests)")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)
    result = run(args.device, args.batch, args.iter_size, args.iterations, args.width_divisor)
    text = json.dumps(result)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

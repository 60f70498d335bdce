"""The machine and device a tool runs on."""
from __future__ import annotations

import ctypes
import math
import os
import platform
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from deconvnet.common.cli import ToolError

# The CUDA driver's first release that runs the runtime this project builds with (CUDA 13.0).
DRIVER_FOR = {13000: "580"}


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it, for benchmark records."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


class DeviceError(ToolError):
    """The GPU asked for cannot be used; the message says why and what to do."""


def loaded_libraries() -> list[str]:
    """Paths of the shared libraries mapped into this process."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    return sorted({line.split(None, 5)[5] for line in lines if len(line.split(None, 5)) == 6 and ".so" in line})


def _version(number: int) -> str:
    return f"{number // 1000}.{number % 1000 // 10}"


def driver_version(proc_file: Path = Path("/proc/driver/nvidia/version")) -> str | None:
    """The NVIDIA kernel driver's version (such as 550.54.14), from the file
    the driver writes; None where there is none."""
    try:
        text = proc_file.read_text()
    except OSError:
        return None
    match = re.search(r"Kernel Module\s+(?:for \S+\s+)?(\d+\.\d+(?:\.\d+)?)", text)
    return match.group(1) if match else None


def gpu_problem(gpu: int, libraries: list[str], load: Callable[[str], object] = ctypes.CDLL,
                driver_file: Path = Path("/proc/driver/nvidia/version")) -> str | None:
    """Why Caffe cannot run on GPU ``gpu`` (None when it can), from the
    libraries pycaffe loaded and the driver's answers: a CPU-only build (no
    CUDA library among them), no driver, a driver older than the CUDA
    runtime, no device, or no device of that number. Checked before Caffe
    is asked, since Caffe aborts the process on each of these."""
    # Wheels carry the CUDA libraries renamed (auditwheel: libcudart-1a2b3c4d.so.13).
    runtime = next((path for path in libraries if Path(path).name.startswith("libcudart")), None)
    if runtime is None and not any(Path(path).name.startswith("libcublas") for path in libraries):
        return ("this Caffe is a CPU-only build; leave out --gpu to run on the CPU, or set up the CUDA build "
                "(scripts/setup.sh --use-cuda)")
    try:
        driver = load("libcuda.so.1")
    except OSError:
        return ("no NVIDIA driver: libcuda.so.1 cannot be loaded. Install the driver (or, in Docker, start the "
                "container with --gpus all), or leave out --gpu to run on the CPU")
    need = ctypes.c_int(0)
    if runtime is not None:
        load(runtime).cudaRuntimeGetVersion(ctypes.byref(need))  # type: ignore[attr-defined]
    have = ctypes.c_int(0)
    driver.cuDriverGetVersion(ctypes.byref(have))  # type: ignore[attr-defined]
    if need.value and have.value < need.value:
        installed = driver_version(driver_file)
        return (f"the NVIDIA driver{' ' + installed if installed else ''} supports CUDA {_version(have.value)}, "
                f"but this Caffe was built with CUDA {_version(need.value)}, which needs driver "
                f"{DRIVER_FOR.get(need.value // 1000 * 1000, 'a newer one')} or newer; update the driver, or "
                "leave out --gpu")
    status, count = _driver_device_count(driver)
    if status != 0:
        return (f"no usable NVIDIA GPU (the driver answered error {status}); check nvidia-smi, or leave out --gpu "
                "to run on the CPU")
    if not 0 <= gpu < count:
        return f"--gpu {gpu}: this machine has {count} GPU(s), numbered from 0"
    return None


def _driver_device_count(driver: Any) -> tuple[int, int]:
    """(the driver's error status, its device count): CUDA_VISIBLE_DEVICES applies."""
    status = driver.cuInit(0)
    count = ctypes.c_int(0)
    if status == 0:
        status = driver.cuDeviceGetCount(ctypes.byref(count))
    return status, count.value if status == 0 else 0


def gpu_count(load: Callable[[str], object] = ctypes.CDLL) -> int:
    """GPUs this process can use, from the driver (0 without one); no CUDA
    context is made, so worker processes can still be started after."""
    try:
        driver = load("libcuda.so.1")
    except OSError:
        return 0
    return _driver_device_count(driver)[1]


def use_device(gpu: int | None) -> None:
    """Caffe on GPU ``gpu``, or on the CPU when it is None; DeviceError
    when the GPU cannot be used."""
    import caffe

    if gpu is None:
        caffe.set_mode_cpu()
        return
    problem = gpu_problem(gpu, loaded_libraries())
    if problem:
        raise DeviceError(f"cannot use --gpu {gpu}: {problem}")
    caffe.set_device(gpu)
    caffe.set_mode_gpu()


def cgroup_path(controller: str, v1_mounts: tuple[str, ...], proc_cgroup: Path = Path("/proc/self/cgroup"),
                root: Path = Path("/sys/fs/cgroup")) -> Iterator[tuple[bool, Path]]:
    """Every cgroup on this process's own path (/proc/self/cgroup) that may
    limit `controller`, from its group up to its hierarchy's root, as
    (cgroup v2?, folder). A v1 hierarchy is mounted at the first of
    `v1_mounts` under `root` that exists. A Slurm job's limit sits on a
    group deep below the root (/system.slice/slurmstepd.scope/job_42),
    which the root's files know nothing of."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, own = parts
        v2 = hierarchy == "0" and controllers == ""
        if v2:
            base = root
        elif controller in controllers.split(","):
            base = next((root / m for m in v1_mounts if (root / m).is_dir()), root / v1_mounts[-1])
        else:
            continue
        folder = base / own.strip().lstrip("/")
        while True:
            yield v2, folder
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent


def _cgroup_cpu_quota(proc_cgroup: Path, root: Path) -> float | None:
    """The least CPU quota (cores) on this process's cgroup path: cgroup v2's
    cpu.max ("200000 100000" is 2 cores, "max 100000" none) or v1's
    cpu.cfs_quota_us / cpu.cfs_period_us; None when no level limits it."""
    least = None
    for v2, folder in cgroup_path("cpu", ("cpu,cpuacct", "cpu"), proc_cgroup, root):
        try:
            if v2:
                quota_text, period_text = (folder / "cpu.max").read_text().split()[:2]
            else:
                quota_text = (folder / "cpu.cfs_quota_us").read_text().strip()
                period_text = (folder / "cpu.cfs_period_us").read_text().strip()
            quota, period = (None if quota_text in ("max", "-1") else int(quota_text)), int(period_text)
        except (OSError, ValueError):
            quota = period = None
        if quota and period:
            least = quota / period if least is None else min(least, quota / period)
    return least


def usable_cores(environ: Mapping[str, str] | None = None, proc_cgroup: Path = Path("/proc/self/cgroup"),
                 cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may use: its CPU affinity, lowered by a cgroup
    CPU quota (a container's --cpus) and by Slurm's SLURM_CPUS_PER_TASK."""
    environ = os.environ if environ is None else environ
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_cpu_quota(proc_cgroup, cgroup_root)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    slurm = environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        cores = min(cores, int(slurm))
    return max(cores, 1)


def peak_gflops(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[float, str]:
    """(this machine's float32 peak in GFLOP/s, how it was counted): usable
    cores x the clock /proc/cpuinfo reports x 64 float operations a cycle
    with AVX-512, 32 with AVX2 FMA, 16 otherwise (two FMA units assumed)."""
    text = cpuinfo.read_text()
    mhz = max(float(m) for m in re.findall(r"cpu MHz\s*:\s*([\d.]+)", text))
    flags = set(re.findall(r"\b\w+\b", text.split("flags", 1)[1].split("\n", 1)[0])) if "flags" in text else set()
    per_cycle = 64 if "avx512f" in flags else 32 if "fma" in flags else 16
    cores = usable_cores()
    return cores * mhz / 1e3 * per_cycle, f"{cores} cores x {mhz / 1e3:.2f} GHz x {per_cycle} flops/cycle"

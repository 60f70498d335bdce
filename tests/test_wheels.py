"""The pip wheels (scripts/build_wheel.sh) and the offline GPU kit
(scripts/gpu_kit.sh): built here, checked with ldd against the manylinux
policy, then installed and run in bare Debian 12 containers (debootstrap's
minbase plus python3 and python3-venv) with no network: pip takes only our
wheel and its PyPI dependencies from a local folder.

The CUDA wheel and the kit share the run's one CUDA compile: where the run
builds the Docker image (DECONVNET_TESTS=all: tests/test_docker.py builds
it first, and here the same `docker build` finds every layer cached), the
image's build, for every pinned architecture, copied out of it; in CI's
run, which leaves the image out, a build for sm_90 alone on the host."""
from __future__ import annotations

import os
import re
import subprocess
import zipfile
from pathlib import Path

import pytest

from docker_engine import DockerEngine, build_project_image, copy_cuda_build, ensure_base_image
from helpers import ROOT, VENV_BIN, docker_image_tier

pytestmark = pytest.mark.slow

WHEELHOUSE = ROOT / ".cache" / "wheelhouse"
PYTHON_IMAGE = "deconvnet-python:bookworm"
KIT_MAX_BYTES = 60 * 2**20
# The libraries a manylinux_2_36 wheel may load from the system, as PEP 600
# and the manylinux policy list them (glibc's, libstdc++, libgcc_s and the
# few others every distribution has), by soname.
MANYLINUX_ALLOWED = {
    "ld-linux-x86-64.so.2", "linux-vdso.so.1", "libc.so.6", "libm.so.6", "libmvec.so.1", "libdl.so.2",
    "librt.so.1", "libpthread.so.0", "libresolv.so.2", "libutil.so.1", "libnsl.so.1", "libanl.so.1",
    "libstdc++.so.6", "libgcc_s.so.1", "libatomic.so.1", "libz.so.1", "libexpat.so.1",
}
# minbase has no xz; Python's tarfile reads .tar.xz.
UNPACK_KIT = "python3 -c \"import tarfile; tarfile.open('/dist/deconvnet-gpu-kit.tar.xz').extractall('/tmp')\""
NVIDIA_SONAMES = re.compile(r"^lib(cudart|cublas|cublasLt|curand|cudnn\w*|nccl)\.so")


def build(*args: str, timeout: float = 3600, env: dict[str, str] | None = None) -> Path:
    out = subprocess.run(["bash", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                         env=dict(os.environ, **(env or {})))
    assert out.returncode == 0, f"{' '.join(args)} failed:\n{out.stderr[-5000:]}"
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cpu_wheel() -> Path:
    return build("scripts/build_wheel.sh")


@pytest.fixture(scope="module")
def cuda_build(request, engine) -> tuple[list[str], dict[str, str]]:
    """(the build scripts' arguments, their environment): the Docker image's
    CUDA build (CAFFE_CUDA_PREFIX, CAFFE_CUDA_LIBS) where this run builds the
    image, else a compile of sm_90 alone here."""
    if not docker_image_tier(request.config):
        return ["--arch", "90"], {}
    tag, _ = build_project_image(engine)
    prefix, libs = copy_cuda_build(engine, tag, ROOT / ".cache" / "image-cuda")
    return [], {"CAFFE_CUDA_PREFIX": str(prefix), "CAFFE_CUDA_LIBS": str(libs)}


@pytest.fixture(scope="module")
def cuda_wheel(cuda_build) -> Path:
    args, env = cuda_build
    return build("scripts/build_wheel.sh", "--cuda", *args, env=env)


@pytest.fixture(scope="module")
def gpu_kit(cuda_build, cuda_wheel) -> Path:   # after the wheel: the same build, already done
    args, env = cuda_build
    return build("scripts/gpu_kit.sh", *args, env=env)


def metadata(wheel: Path) -> tuple[list[str], str]:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        return names, z.read(meta).decode()


def entry_points(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as z:
        return z.read(next(n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt"))).decode()


@pytest.mark.parametrize("kind", ["cpu", "cuda"])
def test_wheel_name_and_metadata(kind, request):
    wheel = request.getfixturevalue(f"{kind}_wheel")
    dist = "deconvnet_caffe" if kind == "cpu" else "deconvnet_caffe_cu13"
    # PEP 427: {distribution}-{version}-{python}-{abi}-{platform}.whl, for
    # CPython 3.11 (Debian 12's). The platform tags (a compressed set)
    # include Debian 12's glibc, 2.36, and none newer; auditwheel adds the
    # oldest glibc whose symbol versions suffice.
    # +sm90: the host's build of sm_90 alone; the image's has every pinned architecture.
    version = r"1\.0\.0\.post20180821" + ("" if kind == "cpu" or docker_image_tier(request.config) else r"\+sm90")
    found = re.fullmatch(rf"{dist}-{version}-cp311-cp311-([\w.]+)\.whl", wheel.name)
    assert found, wheel.name
    platforms = found.group(1).split(".")
    assert "manylinux_2_36_x86_64" in platforms
    assert all(re.fullmatch(r"manylinux_2_(\d+)_x86_64", p) and int(p.split("_")[2]) <= 36 for p in platforms)
    names, meta = metadata(wheel)
    assert "caffe/_caffe.so" in names and "caffe/libcaffe_tool.so" in names and "caffe/pycaffe.py" in names
    assert any(re.search(r"\.libs/libcaffe[-.]", n) for n in names), "libcaffe is not bundled"
    assert "caffe = caffe._command:main" in entry_points(wheel)
    requires = re.findall(r"^Requires-Dist: (.+)$", meta, flags=re.MULTILINE)
    assert {"numpy<3,>=2.0", "six>=1.16"} <= set(requires)
    nvidia = sorted(r for r in requires if r.startswith("nvidia-"))
    bundled_cuda = [n for n in names if NVIDIA_SONAMES.match(Path(n).name)]
    if kind == "cpu":
        assert nvidia == [] and bundled_cuda == []
    else:
        assert [re.split("[<>=]", r)[0] for r in nvidia] == [
            "nvidia-cublas", "nvidia-cuda-runtime", "nvidia-cudnn-cu13", "nvidia-curand", "nvidia-nccl-cu13"]
        # Ranges within CUDA 13, cuDNN 9 and NCCL 2, from the pinned builds' versions up.
        assert nvidia == sorted(lowest_bound_ranges()), nvidia
        assert "nvidia-cudnn-cu13>=9.13.0.50,<10" in nvidia and "nvidia-cublas>=13.0.2.14,<14" in nvidia
        assert bundled_cuda == [], f"CUDA libraries bundled: {bundled_cuda}"
    # Caffe was built without OpenCV (and its GDAL, codecs, ...).
    assert not [n for n in names if "opencv" in n or "gdal" in n]


def ldd_outside(site: Path) -> list[str]:
    """Every library an ELF file under site resolves outside site and the
    manylinux allowance, or does not resolve."""
    bad = []
    for path in sorted(site.rglob("*")):
        if not path.is_file() or path.read_bytes()[:4] != b"\x7fELF" or "nvidia" in path.parts:
            continue
        out = subprocess.run(["ldd", str(path)], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
        for line in out.stdout.splitlines():
            parts = line.split()
            soname = parts[0]
            if "not found" in line:
                bad.append(f"{path.name}: {soname} not found")
            elif len(parts) >= 3 and parts[1] == "=>" and not parts[2].startswith(str(site) + "/") \
                    and soname not in MANYLINUX_ALLOWED:
                bad.append(f"{path.name}: {soname} => {parts[2]}")
    return bad


@pytest.mark.parametrize("kind", ["cpu", "cuda"])
def test_every_library_resolves_in_the_wheel_or_the_allowed_set(kind, request, tmp_path):
    wheel = request.getfixturevalue(f"{kind}_wheel")
    site = tmp_path / "site-packages"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    if kind == "cuda":
        # The nvidia-* wheels as pip installs them beside ours.
        (site / "nvidia").symlink_to(ROOT / ".cache" / "cuda-wheels" / "nvidia")
    assert ldd_outside(site) == []
    # The check can fail: without the nvidia-* wheels the CUDA libraries do not resolve.
    if kind == "cuda":
        (site / "nvidia").unlink()
        assert any("libcudnn.so.9 not found" in line for line in ldd_outside(site))


@pytest.fixture(scope="module")
def python_image(engine: DockerEngine) -> str:
    """debian:bookworm (debootstrap minbase) plus python3 and python3-venv, nothing else."""
    ensure_base_image(engine)
    dockerfile = ("FROM debian:bookworm\n"
                  "RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv "
                  "&& rm -rf /var/lib/apt/lists/*\n")
    built = subprocess.run([engine.client, "build", "--network", "host", "-t", PYTHON_IMAGE, "-"],
                           input=dockerfile, env=engine.env, capture_output=True, text=True, timeout=1200)
    assert built.returncode == 0, built.stderr[-3000:]
    return PYTHON_IMAGE


def pinned(variable: str) -> list[str]:
    """A list of engine/pins.sh, as the build scripts read it."""
    out = subprocess.run(["bash", "-c", f'source engine/pins.sh && echo "${variable}"'], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


def lowest_bound_ranges() -> list[str]:
    """The CUDA wheel's requirements as its METADATA states them: name>=pin,<major+1."""
    ranges = []
    for pin in pinned("CAFFE_CUDA_RUNTIME_WHEELS"):
        name, version = pin.split("==")
        ranges.append(f"{name}>={version},<{int(version.split('.')[0]) + 1}")
    return ranges


def lowest_bounds(folder: Path) -> Path:
    """A constraints file holding each nvidia-* requirement at its lowest bound."""
    path = folder / "lowest-bounds.txt"
    path.write_text("".join(f"{pin}\n" for pin in pinned("CAFFE_CUDA_RUNTIME_WHEELS")))
    return path


def wheelhouse(*requirements: str) -> Path:
    """Our wheels and what pip resolves for them, downloaded here (cached),
    so that the containers install with --no-index and no network. The
    nvidia-* wheels are taken at the CUDA wheel's lowest bounds."""
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([str(VENV_BIN / "python"), "-m", "pip", "download", "-q", "--only-binary", ":all:",
                          "-c", str(lowest_bounds(WHEELHOUSE)), "-d", str(WHEELHOUSE), *requirements],
                         capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stderr[-3000:]
    return WHEELHOUSE


@pytest.fixture(scope="module")
def cpu_container(engine, python_image, cpu_wheel) -> subprocess.CompletedProcess:
    """The CPU wheel in a fresh virtualenv, then pycaffe, the caffe command
    and the engine tests (Unpooling against numpy, caffe train of a tiny
    net, with the native and the Python unpooling layer) against it."""
    house = wheelhouse(str(cpu_wheel), "pytest", "h5py")
    script = f"""set -e
python3 -m venv /v
/v/bin/pip install -q --no-index --find-links /wheelhouse /dist/{cpu_wheel.name} pytest h5py
cd /tmp
/v/bin/python -c "import caffe; print('LAYERS', ' '.join(caffe.layer_type_list()))"
/v/bin/caffe --version 2>&1 | sed 's/^/VERSION /'
ldd /v/lib/python3*/site-packages/caffe/_caffe.so | grep -c '=> /v/' | sed 's/^/BUNDLED /'
cp -r /repo/tests /tmp/tests
PYTHONPATH=/repo DECONVNET_CAFFE_COMMAND=/v/bin/caffe /v/bin/python -m pytest -p no:cacheprovider -q \\
  --rootdir /tmp/tests /tmp/tests/test_unpooling_layer.py /tmp/tests/test_caffe_train_cli.py 2>&1 | tail -n 15
"""
    return engine.run_container(python_image, script, f"{cpu_wheel.parent}:/dist:ro", f"{house}:/wheelhouse:ro",
                                f"{ROOT}:/repo:ro", timeout=1800)


def test_cpu_wheel_imports_with_the_unpooling_layer(cpu_container):
    assert cpu_container.returncode == 0, cpu_container.stdout[-3000:] + cpu_container.stderr[-3000:]
    layers = next(line for line in cpu_container.stdout.splitlines() if line.startswith("LAYERS")).split()
    assert "Unpooling" in layers and "Python" in layers


def test_cpu_wheel_caffe_command(cpu_container):
    assert "VERSION caffe version 1.0.0" in cpu_container.stdout, cpu_container.stdout[-3000:]


def test_engine_tests_pass_against_the_installed_wheel(cpu_container):
    out = cpu_container.stdout
    passed = re.search(r"(\d+) passed", out)
    assert passed and int(passed.group(1)) >= 10 and not re.search(r"\d+ (failed|errors?)\b", out), out[-3000:]
    # _caffe.so loads its libraries from the wheel in the virtualenv.
    assert int(re.search(r"BUNDLED (\d+)", out).group(1)) >= 5, out[-3000:]


UNPOOL_ON_CPU = """
import caffe

caffe.set_mode_cpu()
print("LAYERS", " ".join(caffe.layer_type_list()))
with open("net.prototxt", "w") as f:
    f.write('input: "x" input_shape { dim: 1 dim: 1 dim: 4 dim: 4 } '
            'layer { name: "p" type: "Pooling" bottom: "x" top: "p" top: "m" '
            '        pooling_param { pool: MAX kernel_size: 2 stride: 2 } } '
            'layer { name: "u" type: "Unpooling" bottom: "p" bottom: "m" top: "u" '
            '        unpooling_param { unpool_size: 4 } }')
net = caffe.Net("net.prototxt", caffe.TEST)
net.blobs["x"].data.flat[:] = range(16)
print("UNPOOLED", net.forward()["u"].ravel().astype(int).tolist())
"""


@pytest.fixture(scope="module")
def cuda_container(engine, python_image, cuda_wheel, gpu_kit, tmp_path_factory) -> subprocess.CompletedProcess:
    """The CUDA wheel with its nvidia-* dependencies on a machine without a
    GPU, then the GPU kit run with that virtualenv's Python."""
    house = wheelhouse(str(cuda_wheel))
    check = tmp_path_factory.mktemp("check")
    (check / "unpool_on_cpu.py").write_text(UNPOOL_ON_CPU)
    script = f"""set -e
python3 -m venv /v
/v/bin/pip install -q --no-index --find-links /wheelhouse -c /wheelhouse/lowest-bounds.txt /dist/{cuda_wheel.name}
/v/bin/pip list --format=freeze | grep '^nvidia-' | sed 's/^/INSTALLED /'
cd /tmp
/v/bin/python /check/unpool_on_cpu.py
set +e
/v/bin/caffe device_query -gpu 0 > dq.log 2>&1
echo "DEVICE_QUERY_STATUS $?"
sed 's/^/DEVICE_QUERY /' dq.log
{UNPACK_KIT}
/tmp/deconvnet-gpu-kit/run.sh --python /v/bin/python > kit.log 2>&1
echo "KIT_STATUS $?"
sed 's/^/KIT /' kit.log
"""
    return engine.run_container(python_image, script, f"{cuda_wheel.parent}:/dist:ro", f"{house}:/wheelhouse:ro",
                                f"{check}:/check:ro", timeout=1800)


def test_cuda_wheel_installs_at_the_lowest_bounds_of_its_ranges(cuda_container):
    installed = {line.split()[1] for line in cuda_container.stdout.splitlines() if line.startswith("INSTALLED ")}
    assert set(pinned("CAFFE_CUDA_RUNTIME_WHEELS")) <= installed, sorted(installed)


def test_cuda_wheel_imports_and_runs_on_the_cpu(cuda_container):
    out = cuda_container.stdout
    assert cuda_container.returncode == 0, out[-3000:] + cuda_container.stderr[-3000:]
    layers = next(line for line in out.splitlines() if line.startswith("LAYERS")).split()
    assert "Unpooling" in layers
    # Max pooling of 0..15 (4x4) keeps 5, 7, 13, 15; unpooling puts them back.
    expected = [0] * 16
    for i in (5, 7, 13, 15):
        expected[i] = i
    assert f"UNPOOLED {expected}" in out, out[-3000:]


def test_cuda_wheel_device_query_without_a_gpu_fails_clearly(cuda_container):
    out = cuda_container.stdout
    assert "DEVICE_QUERY_STATUS 1" in out, out[-3000:]
    assert "no usable NVIDIA GPU" in out and "Check failed" not in out, out[-3000:]


def test_gpu_kit_is_small(gpu_kit):
    assert gpu_kit.name == "deconvnet-gpu-kit.tar.xz"
    assert gpu_kit.stat().st_size <= KIT_MAX_BYTES


def test_gpu_kit_stops_clearly_at_the_first_gpu_call(cuda_container):
    kit = "\n".join(line[4:] for line in cuda_container.stdout.splitlines() if line.startswith("KIT "))
    assert "KIT_STATUS 1" in cuda_container.stdout, kit[-3000:]
    # It found the CUDA wheels' libraries and loaded every library of the kit ...
    assert "CUDA libraries from /v/lib/python3.11/site-packages/nvidia/" in kit, kit[-3000:]
    # ... and stopped at device_query, saying why.
    assert "stopped at the first GPU call" in kit and "no usable NVIDIA GPU" in kit, kit[-3000:]
    assert "Unpooling gtest" not in kit


def test_gpu_kit_names_missing_cuda_wheels(engine, python_image, gpu_kit):
    """Without the nvidia-* wheels, run.sh names the ones to install."""
    script = f"python3 -m venv /v && {UNPACK_KIT} && /tmp/deconvnet-gpu-kit/run.sh --python /v/bin/python"
    out = engine.run_container(python_image, script, f"{gpu_kit.parent}:/dist:ro", timeout=600)
    assert out.returncode == 1, out.stderr[-3000:]
    for wheel in ("nvidia-cuda-runtime", "nvidia-cublas", "nvidia-curand", "nvidia-cudnn-cu13", "nvidia-nccl-cu13"):
        assert wheel in out.stderr, out.stderr[-3000:]

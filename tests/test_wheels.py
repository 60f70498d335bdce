"""The pip wheels (scripts/build_wheel.sh) and the offline GPU kit
(scripts/gpu_kit.sh): built here, checked with ldd against the manylinux
policy, then installed and run in bare Debian 12 containers with no network:
pip takes only our wheel and its PyPI dependencies from a local folder. The
container of CPython 3.11 is debootstrap's minbase plus Debian's python3 and
python3-venv; for the other Pythons it is minbase plus the shared libraries
their standard library loads, with the interpreter mounted (as a
python:3.12 image holds one in /usr/local).

Each wheel is made for one CPython. This run builds those of
DECONVNET_WHEEL_PYTHONS (CPU; default "3.11 3.12") and
DECONVNET_CUDA_WHEEL_PYTHONS (CUDA; default "3.11"); scripts/wheel_matrix.sh
sets both to every Python of engine/pins.sh.

The CUDA wheel and the kit share the run's one CUDA compile: where the run
builds the Docker image (DECONVNET_TESTS=all: tests/test_docker.py builds
it first, and here the same `docker build` finds every layer cached), the
image's build, for every pinned architecture, copied out of it; in CI's
run, which leaves the image out, a build for sm_90 alone on the host."""
from __future__ import annotations

import os
import re
import subprocess
import tarfile
import zipfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest

from docker_engine import DockerEngine, build_project_image, copy_cuda_build, ensure_base_image
from helpers import ROOT, docker_image_tier, run_find_python

pytestmark = pytest.mark.slow

WHEELHOUSE = ROOT / ".cache" / "wheelhouse"
PYTHON_IMAGE = "deconvnet-python:bookworm"
RUNTIME_IMAGE = "deconvnet-cpython-runtime:bookworm"
SYSTEM_PYTHON = "3.11"   # Debian 12's python3, which PYTHON_IMAGE installs from apt
KIT_PYTHON = "3.12"      # the lent GPU machine's python3
CPU_PYTHONS = os.environ.get("DECONVNET_WHEEL_PYTHONS", "3.11 3.12").split()
CUDA_PYTHONS = os.environ.get("DECONVNET_CUDA_WHEEL_PYTHONS", "3.11").split()
WHEELS = [("cpu", v) for v in CPU_PYTHONS] + [("cuda", v) for v in CUDA_PYTHONS]
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


@cache
def find_python(version: str) -> Path:
    """The interpreter engine/find_python.sh finds for X.Y, as the wheel
    script does."""
    out = run_find_python(version)
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip())


@pytest.fixture(scope="module")
def wheel_for(request) -> Callable[[str, str], Path]:
    """wheel_for(kind, X.Y): the wheel, built on first use (each Python's
    adds only pycaffe to the variant's one core build)."""
    built: dict[tuple[str, str], Path] = {}

    def wheel(kind: str, python: str) -> Path:
        if (kind, python) not in built:
            if kind == "cpu":
                built[kind, python] = build("scripts/build_wheel.sh", "--python", python)
            else:
                args, env = request.getfixturevalue("cuda_build")
                built[kind, python] = build("scripts/build_wheel.sh", "--cuda", *args, "--python", python, env=env)
        return built[kind, python]
    return wheel


@pytest.fixture(scope="module")
def cpu_wheel(wheel_for) -> Path:
    return wheel_for("cpu", SYSTEM_PYTHON)


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
def cuda_wheel(wheel_for) -> Path:
    return wheel_for("cuda", SYSTEM_PYTHON)


@pytest.fixture(scope="module")
def gpu_kit(cuda_build, wheel_for) -> Path:   # after a wheel: the same build, already done
    wheel_for("cuda", SYSTEM_PYTHON)
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


@pytest.mark.parametrize("kind, python", WHEELS)
def test_wheel_name_and_metadata(kind, python, wheel_for, request):
    wheel = wheel_for(kind, python)
    dist = "deconvnet_caffe" if kind == "cpu" else "deconvnet_caffe_cu13"
    # PEP 427: {distribution}-{version}-{python}-{abi}-{platform}.whl, for
    # one CPython. The platform tags (a compressed set) include Debian 12's
    # glibc, 2.36, and none newer; auditwheel adds the oldest glibc whose
    # symbol versions suffice.
    # +sm90: the host's build of sm_90 alone; the image's has every pinned architecture.
    version = r"1\.0\.0\.post20180821" + ("" if kind == "cpu" or docker_image_tier(request.config) else r"\+sm90")
    tag = "cp" + python.replace(".", "")
    found = re.fullmatch(rf"{dist}-{version}-{tag}-{tag}-([\w.]+)\.whl", wheel.name)
    assert found, wheel.name
    platforms = found.group(1).split(".")
    assert "manylinux_2_36_x86_64" in platforms
    assert all(re.fullmatch(r"manylinux_2_(\d+)_x86_64", p) and int(p.split("_")[2]) <= 36 for p in platforms)
    names, meta = metadata(wheel)
    # The module carries its interpreter's suffix (PEP 3149).
    assert f"caffe/_caffe.cpython-{tag[2:]}-x86_64-linux-gnu.so" in names, names
    assert "caffe/libcaffe_tool.so" in names and "caffe/pycaffe.py" in names
    assert f"Requires-Python: =={python}.*" in meta
    # boost.python for this Python, from our pinned build, is bundled.
    assert any(re.search(rf"\.libs/libboost_python{tag[2:]}[-.]", n) for n in names), names
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


@pytest.mark.parametrize("kind, python", WHEELS)
def test_every_library_resolves_in_the_wheel_or_the_allowed_set(kind, python, wheel_for, tmp_path):
    wheel = wheel_for(kind, python)
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


def wheelhouse(python: str, *requirements: str) -> Path:
    """Our wheels and what pip resolves for them for CPython X.Y, downloaded
    here (cached), so that the containers install with --no-index and no
    network. The nvidia-* wheels are taken at the CUDA wheel's lowest bounds."""
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    # That Python's own pip: it evaluates the requirements' markers (pytest's
    # exceptiongroup and tomli below 3.11) for that version.
    out = subprocess.run([str(find_python(python)), "-m", "pip", "download", "-q", "--only-binary", ":all:",
                          "-c", str(lowest_bounds(WHEELHOUSE)),
                          "-d", str(WHEELHOUSE), *requirements],
                         capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stderr[-3000:]
    return WHEELHOUSE


def system_packages_loaded_by(prefix: Path) -> list[str]:
    """The Debian packages of the shared libraries that an interpreter
    installed under prefix (its libpython and standard-library modules)
    loads from the system, as this machine resolves them."""
    paths = set()
    for elf in [*prefix.glob("lib/libpython3*.so*"), *prefix.glob("lib/python3*/lib-dynload/*.so")]:
        out = subprocess.run(["ldd", str(elf)], capture_output=True, text=True)
        for line in out.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] == "=>" and parts[2].startswith("/") \
                    and not parts[2].startswith(str(prefix)):
                paths.add(parts[2])
    packages = set()
    for path in sorted(paths):
        for candidate in (path, os.path.realpath(path), "/usr" + path):
            owner = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
            if owner.returncode == 0:
                packages.add(owner.stdout.split(":")[0])
                break
    return sorted(packages)


def interpreter_prefix(python: str) -> Path:
    """The installation folder (sys.base_prefix) of the CPython X.Y that the
    wheel script builds for, mounted read-only into the containers."""
    out = subprocess.run([str(find_python(python)), "-c", "import sys; print(sys.base_prefix)"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


@pytest.fixture(scope="module")
def runtime_image(engine: DockerEngine) -> str:
    """debian:bookworm (minbase) plus the shared libraries this run's
    non-Debian interpreters load (libssl3, libffi8, ...): no Python."""
    ensure_base_image(engine)
    pythons = sorted(set(CPU_PYTHONS + CUDA_PYTHONS + [KIT_PYTHON]) - {SYSTEM_PYTHON})
    packages = sorted({p for v in pythons for p in system_packages_loaded_by(interpreter_prefix(v))})
    dockerfile = ("FROM debian:bookworm\n"
                  f"RUN apt-get update && apt-get install -y --no-install-recommends {' '.join(packages)} "
                  "&& rm -rf /var/lib/apt/lists/*\n")
    built = subprocess.run([engine.client, "build", "--network", "host", "-t", RUNTIME_IMAGE, "-"],
                           input=dockerfile, env=engine.env, capture_output=True, text=True, timeout=1200)
    assert built.returncode == 0, built.stderr[-3000:]
    return RUNTIME_IMAGE


def bare_python(python: str, request) -> tuple[str, str, list[str]]:
    """(image, the command that makes the virtualenv /v, mounts) of a bare
    container of CPython X.Y: Debian's python3 for 3.11, else the runtime
    image with the interpreter mounted where it was built."""
    if python == SYSTEM_PYTHON:
        return request.getfixturevalue("python_image"), "python3 -m venv /v", []
    prefix = interpreter_prefix(python)
    return (request.getfixturevalue("runtime_image"), f"{prefix}/bin/python{python} -m venv /v",
            [f"{prefix}:{prefix}:ro"])


@pytest.fixture(scope="module")
def cpu_container(engine, wheel_for, request) -> Callable[[str], subprocess.CompletedProcess]:
    """cpu_container(X.Y): the CPU wheel of that Python in a fresh
    virtualenv of a bare container, then pycaffe, the caffe command and the
    engine tests (Unpooling against numpy, caffe train of a tiny net, with
    the native and the Python unpooling layer) against it."""
    @cache
    def run(python: str) -> subprocess.CompletedProcess:
        wheel = wheel_for("cpu", python)
        image, make_venv, mounts = bare_python(python, request)
        house = wheelhouse(python, str(wheel), "pytest", "h5py")
        script = f"""set -e
{make_venv}
/v/bin/pip install -q --no-index --find-links /wheelhouse /dist/{wheel.name} pytest h5py
cd /tmp
/v/bin/python -c "import sys, caffe; print('PYTHON', *sys.version_info[:2]); print('LAYERS', *caffe.layer_type_list())"
/v/bin/caffe --version 2>&1 | sed 's/^/VERSION /'
ldd /v/lib/python3*/site-packages/caffe/_caffe*.so | grep -c '=> /v/' | sed 's/^/BUNDLED /'
cp -r /repo/tests /tmp/tests
PYTHONPATH=/repo DECONVNET_CAFFE_COMMAND=/v/bin/caffe /v/bin/python -m pytest -p no:cacheprovider -q \\
  --rootdir /tmp/tests /tmp/tests/test_unpooling_layer.py /tmp/tests/test_caffe_train_cli.py 2>&1 | tail -n 15
"""
        return engine.run_container(image, script, f"{wheel.parent}:/dist:ro", f"{house}:/wheelhouse:ro",
                                    f"{ROOT}:/repo:ro", *mounts, timeout=1800)
    return run


@pytest.mark.parametrize("python", CPU_PYTHONS)
def test_cpu_wheel_imports_with_the_unpooling_layer(python, cpu_container):
    container = cpu_container(python)
    assert container.returncode == 0, container.stdout[-3000:] + container.stderr[-3000:]
    assert f"PYTHON {python.replace('.', ' ')}" in container.stdout
    layers = next(line for line in container.stdout.splitlines() if line.startswith("LAYERS")).split()
    assert "Unpooling" in layers and "Python" in layers


@pytest.mark.parametrize("python", CPU_PYTHONS)
def test_cpu_wheel_caffe_command(python, cpu_container):
    assert "VERSION caffe version 1.0.0" in cpu_container(python).stdout, cpu_container(python).stdout[-3000:]


@pytest.mark.parametrize("python", CPU_PYTHONS)
def test_engine_tests_pass_against_the_installed_wheel(python, cpu_container):
    out = cpu_container(python).stdout
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
def cuda_container(engine, wheel_for, request, tmp_path_factory) -> Callable[[str], subprocess.CompletedProcess]:
    """cuda_container(X.Y): the CUDA wheel of that Python with its nvidia-*
    dependencies in a bare container without a GPU: import, Unpooling on
    the CPU, and the caffe command's first GPU call."""
    check = tmp_path_factory.mktemp("check")
    (check / "unpool_on_cpu.py").write_text(UNPOOL_ON_CPU)

    @cache
    def run(python: str) -> subprocess.CompletedProcess:
        wheel = wheel_for("cuda", python)
        image, make_venv, mounts = bare_python(python, request)
        house = wheelhouse(python, str(wheel))
        script = f"""set -e
{make_venv}
/v/bin/pip install -q --no-index --find-links /wheelhouse -c /wheelhouse/lowest-bounds.txt /dist/{wheel.name}
/v/bin/pip list --format=freeze | grep '^nvidia-' | sed 's/^/INSTALLED /'
cd /tmp
/v/bin/python /check/unpool_on_cpu.py
set +e
/v/bin/python -c 'import caffe; print("NCCL_UID", caffe.has_nccl(), len(caffe.NCCL.new_uid()))'
/v/bin/caffe device_query -gpu 0 > dq.log 2>&1
echo "DEVICE_QUERY_STATUS $?"
sed 's/^/DEVICE_QUERY /' dq.log
"""
        return engine.run_container(image, script, f"{wheel.parent}:/dist:ro", f"{house}:/wheelhouse:ro",
                                    f"{check}:/check:ro", *mounts, timeout=1800)
    return run


@pytest.mark.parametrize("python", CUDA_PYTHONS)
def test_cuda_wheel_installs_at_the_lowest_bounds_of_its_ranges(python, cuda_container):
    out = cuda_container(python).stdout
    installed = {line.split()[1] for line in out.splitlines() if line.startswith("INSTALLED ")}
    assert set(pinned("CAFFE_CUDA_RUNTIME_WHEELS")) <= installed, sorted(installed)


@pytest.mark.parametrize("python", CUDA_PYTHONS)
def test_cuda_wheel_imports_and_runs_on_the_cpu(python, cuda_container):
    container = cuda_container(python)
    out = container.stdout
    assert container.returncode == 0, out[-3000:] + container.stderr[-3000:]
    layers = next(line for line in out.splitlines() if line.startswith("LAYERS")).split()
    assert "Unpooling" in layers and "Python" in layers
    # Max pooling of 0..15 (4x4) keeps 5, 7, 13, 15; unpooling puts them back.
    expected = [0] * 16
    for i in (5, 7, 13, 15):
        expected[i] = i
    assert f"UNPOOLED {expected}" in out, out[-3000:]


@pytest.mark.parametrize("python", CUDA_PYTHONS)
def test_cuda_wheel_nccl_id_is_whole(python, cuda_container):
    """Patch 0017: NCCL's unique id is 128 bytes (NCCL_UNIQUE_ID_BYTES in
    nccl.h), most of them zero; unpatched, pycaffe cut it at the first zero
    (after about 9 bytes, as ncclGetUniqueId through ctypes shows). No GPU
    is needed to make one."""
    out = cuda_container(python).stdout
    assert "NCCL_UID True 128" in out, out[-3000:]


@pytest.mark.parametrize("python", CUDA_PYTHONS)
def test_cuda_wheel_device_query_without_a_gpu_fails_clearly(python, cuda_container):
    out = cuda_container(python).stdout
    assert "DEVICE_QUERY_STATUS 1" in out, out[-3000:]
    assert "no usable NVIDIA GPU" in out and "Check failed" not in out, out[-3000:]


def test_gpu_kit_is_small(gpu_kit):
    assert gpu_kit.name == "deconvnet-gpu-kit.tar.xz"
    assert gpu_kit.stat().st_size <= KIT_MAX_BYTES


@pytest.fixture(scope="module")
def kit_container(engine, gpu_kit, request) -> subprocess.CompletedProcess:
    """The kit in a bare CPython 3.12 container with no network, as the lent
    GPU machine is: a Python holding the nvidia-* wheels and the packages
    that machine has (the kit's ASSUMED_PACKAGES), nothing else; run.sh then
    installs the kit's wheels and stops at the first GPU call."""
    image, make_venv, mounts = bare_python(KIT_PYTHON, request)
    assumed = kit_file(gpu_kit, "ASSUMED_PACKAGES").split()
    house = wheelhouse(KIT_PYTHON, *pinned("CAFFE_CUDA_RUNTIME_WHEELS"), *assumed)
    script = f"""set -e
{make_venv}
/v/bin/pip install -q --no-index --find-links /wheelhouse -c /wheelhouse/lowest-bounds.txt \\
  {' '.join(pinned("CAFFE_CUDA_RUNTIME_WHEELS"))} {' '.join(assumed)}
{UNPACK_KIT.replace("python3", "/v/bin/python")}
set +e
/tmp/deconvnet-gpu-kit/run.sh --python /v/bin/python --cpu-images 1 > kit.log 2>&1
echo "KIT_STATUS $?"
sed 's/^/KIT /' kit.log
"""
    return engine.run_container(image, script, f"{gpu_kit.parent}:/dist:ro", f"{house}:/wheelhouse:ro", *mounts,
                                timeout=1800)


def kit_file(kit: Path, name: str) -> str:
    """A file of the kit archive, as text."""
    with tarfile.open(kit) as tar:
        member = tar.extractfile(f"deconvnet-gpu-kit/{name}")
        assert member is not None, name
        return member.read().decode()


def test_gpu_kit_stops_clearly_at_the_first_gpu_call(kit_container):
    kit = "\n".join(line[4:] for line in kit_container.stdout.splitlines() if line.startswith("KIT "))
    assert "KIT_STATUS 1" in kit_container.stdout, kit[-3000:] + kit_container.stderr[-3000:]
    # It found the CUDA wheels' libraries, installed its own wheels and
    # imported the pipeline's modules with them, prepared its inputs ...
    assert f"CUDA libraries from /v/lib/python{KIT_PYTHON}/site-packages/nvidia/" in kit, kit[-3000:]
    assert "installed the kit's wheels" in kit and "imports: caffe" in kit, kit[-3000:]
    assert "with its Python layer, pydensecrf, lmdb" in kit, kit[-3000:]
    # ... read a batch of the full net's crops through the Python data
    # layer, and segmented an image on the CPU, the steps timed ...
    assert "Python data layer: one batch, data (8, 3, 224, 224), label (8, 1, 224, 224)" in kit, kit[-3000:]
    assert re.search(r"CPU per image: wall [\d.]+s; busy proposals [\d.]+s, forward [\d.]+s, aggregation [\d.]+s, "
                     r"crf [\d.]+s, writing [\d.]+s", kit), kit[-3000:]
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

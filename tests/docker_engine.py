"""A Docker engine for the image test: the running daemon if one answers,
else a daemon of our own, started from Debian's docker.io package on its own
socket, and stopped again by the process id we recorded.

Our daemon keeps its images and layer cache in a data root outside the clone
(``DECONVNET_DOCKER_ROOT``, default /var/cache/deconvnet-docker), so a second
run reuses the cache. It runs with the options these machines need: no
iptables, no bridge (builds and runs use --network host or none) and the vfs
storage driver, which works inside containers and on any file system."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from helpers import ROOT, apt_install

DATA_ROOT = Path(os.environ.get("DECONVNET_DOCKER_ROOT", "/var/cache/deconvnet-docker"))
RUN_DIR = Path("/run/deconvnet-docker")   # short: the socket path must stay under 108 bytes
BASE_IMAGE = "debian:bookworm"
LABEL = "deconvnet-test=1"   # on every container the tests start


@dataclass
class DockerEngine:
    client: str
    env: dict[str, str]
    process: subprocess.Popen | None = None   # set when we started the daemon

    def run(self, *args: str, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess:
        result = subprocess.run([self.client, *args], env=self.env, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed ({result.returncode}):\n"
                               f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def run_container(self, image: str, command: str, *mounts: str, timeout: float = 900,
                      network: str = "none") -> subprocess.CompletedProcess:
        """Runs a shell command in a fresh container of the image, by default
        with no network; mounts are docker's HOST:CONTAINER[:ro]."""
        volumes = [arg for mount in mounts for arg in ("-v", mount)]
        return self.run("run", "--rm", "--network", network, "--label", LABEL, *volumes, image,
                        "bash", "-c", command, timeout=timeout)

    def answers(self) -> bool:
        try:
            return self.run("info", timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def stop(self) -> None:
        """Stops the daemon we started (only that one), and waits for it and
        the containerd it started to exit."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        deadline = time.monotonic() + 60
        while own_processes() and time.monotonic() < deadline:
            time.sleep(1)
        self.process = None
        # dockerd leaves its network namespace mounted under the exec root.
        for mount in reversed(own_mounts()):
            subprocess.run(["umount", mount], capture_output=True, timeout=60)
        if not own_processes() and not own_mounts():
            shutil.rmtree(RUN_DIR, ignore_errors=True)


def own_mounts() -> list[str]:
    """Mount points under our run directory, in mount order."""
    points = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    return [point for point in points if point.startswith(f"{RUN_DIR}/")]


def own_processes() -> list[int]:
    """Processes whose command line names our run directory (dockerd and its
    containerd and shims)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(RUN_DIR) in cmdline:
            pids.append(int(proc.name))
    return pids


def existing_engine() -> DockerEngine | None:
    client = shutil.which("docker")
    if client is None:
        return None
    engine = DockerEngine(client=client, env=dict(os.environ))
    return engine if engine.answers() else None


def start_engine() -> DockerEngine:
    """Starts dockerd (from docker.io, installed if missing) on a socket of
    its own, with the data root above."""
    apt_install("docker.io")
    if own_processes():
        raise RuntimeError(f"processes of an earlier test daemon still use {RUN_DIR}: {own_processes()}; "
                           "stop them (kill PID) and run again")
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    DATA_ROOT.mkdir(parents=True, exist_ok=True)
    socket = RUN_DIR / "docker.sock"
    log = DATA_ROOT / "dockerd.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            ["/usr/sbin/dockerd", "--host", f"unix://{socket}", "--data-root", str(DATA_ROOT / "data"),
             "--exec-root", str(RUN_DIR / "exec"), "--pidfile", str(RUN_DIR / "dockerd.pid"),
             "--iptables=false", "--ip6tables=false", "--bridge=none", "--storage-driver=vfs"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    # The client from the same package speaks the daemon's API version.
    engine = DockerEngine(client="/usr/bin/docker", env=dict(os.environ, DOCKER_HOST=f"unix://{socket}"),
                          process=process)
    deadline = time.monotonic() + 120
    while not engine.answers():
        if process.poll() is not None or time.monotonic() > deadline:
            engine.stop()
            raise RuntimeError(f"dockerd did not come up; its log: {log}\n{log.read_text()[-3000:]}")
        time.sleep(1)
    return engine


def ensure_base_image(engine: DockerEngine) -> str:
    """debian:bookworm: already there, pulled, or made by debootstrap."""
    if engine.run("image", "inspect", BASE_IMAGE).returncode == 0:
        return "present"
    try:
        if engine.run("pull", BASE_IMAGE, timeout=120).returncode == 0:
            return "pulled"
    except subprocess.TimeoutExpired:
        pass
    apt_install("debootstrap")
    made = subprocess.run(["bash", str(ROOT / "scripts" / "debian_base.sh"), BASE_IMAGE],
                          env=dict(engine.env, DOCKER=engine.client), capture_output=True, text=True,
                          timeout=1800)
    if made.returncode != 0:
        raise RuntimeError(f"scripts/debian_base.sh failed:\n{made.stderr[-3000:]}")
    return "debootstrap"


def copy_host_ca_bundle() -> Path | None:
    """The CA bundle that this machine's proxy needs, into the build context
    (docker/ca-certificates/, ignored by git) as one .crt file."""
    for name in ("SSL_CERT_FILE", "PIP_CERT"):
        bundle = os.environ.get(name)
        if bundle and Path(bundle).is_file():
            dest = ROOT / "docker" / "ca-certificates" / "host-ca-bundle.crt"
            text = Path(bundle).read_bytes()
            if not dest.exists() or dest.read_bytes() != text:   # unchanged: keeps the layer cache
                dest.write_bytes(text)
            return dest
    return None


PROJECT_TAG = "deconvnet:test"
BUILD_STAGE_TAG = "deconvnet:test-build-stage"
# Where the image keeps its CUDA build and the CUDA libraries' wheels.
IMAGE_CUDA_INSTALL = "/opt/deconvnet/.cache/caffe/cuda"
IMAGE_CUDA_WHEELS = "/opt/deconvnet/.cache/cuda-wheels"


def build_project_image(engine: DockerEngine) -> tuple[str, str]:
    """``docker build`` of the repository (quick when its layers are cached);
    returns the tag and a one-line record of the build."""
    start = time.monotonic()
    base = f"{ensure_base_image(engine)} in {time.monotonic() - start:.0f} s"
    copy_host_ca_bundle()
    DATA_ROOT.mkdir(parents=True, exist_ok=True)   # the build's log and times, also with a running daemon
    log = DATA_ROOT / "build.log"
    start = time.monotonic()
    with open(log, "w") as out:
        built = subprocess.run([engine.client, "build", "--network", "host", "-t", PROJECT_TAG, str(ROOT)],
                               env=engine.env, stdout=out, stderr=subprocess.STDOUT, timeout=4800)
    seconds = time.monotonic() - start
    text = log.read_text()
    if built.returncode != 0:
        raise RuntimeError(f"docker build failed (log {log}):\n{text[-5000:]}")
    size = engine.run("image", "inspect", "-f", "{{.Size}}", PROJECT_TAG, check=True).stdout.strip()
    if engine.process is not None:
        # Our daemon's data root keeps the newest build stage (tagged, so that
        # its CUDA layer stays cached) and drops older generations: with vfs
        # each one holds several GB.
        engine.run("build", "--network", "host", "--target", "build", "-t", BUILD_STAGE_TAG, str(ROOT),
                   timeout=1200, check=True)
        engine.run("image", "prune", "-f", timeout=1200, check=True)
    record = (f"{time.strftime('%Y-%m-%d %H:%M')} docker build: {seconds:.0f} s, base image {base}, "
              f"{text.count('Using cache')} cached steps, image {int(size) / 2**30:.2f} GiB")
    return PROJECT_TAG, record


def copy_cuda_build(engine: DockerEngine, tag: str, dest: Path) -> tuple[Path, Path]:
    """The image's CUDA build (its install tree, with Caffe's LICENSE beside
    it) and its CUDA library wheels, copied to ``dest``: the one CUDA compile
    of a test run, which the CUDA wheel and the GPU kit reuse."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    container = engine.run("create", tag, "true", check=True).stdout.strip()
    try:
        engine.run("cp", "-L", f"{container}:{IMAGE_CUDA_INSTALL}", str(dest / "caffe-cuda"), timeout=600,
                   check=True)
        engine.run("cp", "-L", f"{container}:{IMAGE_CUDA_WHEELS}", str(dest / "cuda-wheels"), timeout=600,
                   check=True)
    finally:
        engine.run("rm", "-f", container)
    return dest / "caffe-cuda" / "install", dest / "cuda-wheels"

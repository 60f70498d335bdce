"""tools/infer.py --workers (issue 29): the pipelined run writes the same
bytes as the serial one, survives SIGKILL at random points (a rerun
finishes the job), stops cleanly on a worker's exception, a worker's
death, Ctrl-C and SIGTERM (no orphan process, no partial file), and records
busy and wall times."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_infer_e2e import setup  # noqa: F401  (the module's fixture: synthetic images, reduced nets)

from deconvnet.common.machine import usable_cores

from helpers import ROOT

IMAGES = 12
OUTPUT_FOLDERS = ("labels", "probs", "overlays")
EXTRA = ("--crf", "--save-probs", "--overlays", "--top-k", "20")


@pytest.fixture(scope="module")
def model(setup, caffe, tmp_path_factory):  # noqa: F811
    """The reduced deploy net with He-initialised weights and random biases,
    so that its score maps, and so the labels, differ between proposals and
    pixels (the e2e fixture's fillers give all-zero scores: every output
    would be the same whatever the order or process)."""
    folder = tmp_path_factory.mktemp("workers_model")
    net = caffe.Net(str(setup / "deconvnet.prototxt"), str(setup / "deconvnet.caffemodel"), caffe.TEST)
    rng = np.random.default_rng(29)
    for name, params in net.params.items():
        if name.endswith("_bn"):
            continue
        weights = params[0].data
        fan_in = int(np.prod(weights.shape[1:])) if "deconv" not in name else weights.shape[0]
        weights[...] = rng.normal(0, np.sqrt(2 / max(fan_in, 1)), weights.shape)
        if len(params) > 1:
            params[1].data[...] = rng.normal(0, 0.5, params[1].data.shape)
    net.save(str(folder / "he.caffemodel"))
    (folder / "proposals").mkdir()
    return dict(prototxt=setup / "deconvnet.prototxt", weights=folder / "he.caffemodel",
                proposals=folder / "proposals", fcn=setup)


def infer(model, out, *extra, env=None):
    args = [sys.executable, str(ROOT / "tools" / "infer.py"), "--out", str(out), "--model", str(model["prototxt"]),
            "--weights", str(model["weights"]), "--proposal-cache", str(model["proposals"]), *map(str, extra)]
    return subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def inputs(setup, tmp_path_factory):  # noqa: F811
    """IMAGES synthetic images of a few sizes, named im00.png..."""
    folder = tmp_path_factory.mktemp("workers_in")
    source = sorted((setup / "syn" / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))
    sizes = [(320, 240), (200, 300), (256, 256)]
    for k in range(IMAGES):
        Image.open(source[k % len(source)]).resize(sizes[k % len(sizes)]).save(folder / f"im{k:02d}.png")
    return folder


@pytest.fixture(scope="module")
def serial(model, inputs, tmp_path_factory):
    """The reference: --workers 0, one image after another in one process."""
    out = tmp_path_factory.mktemp("serial") / "out"
    result = infer(model, out, inputs, "--workers", "0", *EXTRA)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{IMAGES} segmented" in result.stderr
    labels = np.concatenate([np.array(Image.open(p)).ravel() for p in (out / "labels").glob("*.png")])
    assert len(np.unique(labels)) >= 3, "the labels are nearly constant: equal outputs would prove little"
    return out


def files_of(out: Path) -> dict[str, bytes]:
    return {f"{folder}/{p.name}": p.read_bytes() for folder in OUTPUT_FOLDERS
            for p in sorted((out / folder).glob("*")) if not p.name.startswith(".")}


def part_files(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if ".part" in p.name]


def session_processes(sid: int) -> list[int]:
    """Live processes of a session (a run started with start_new_session),
    read from /proc: the run and every worker it forked."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields[3]: the session id
            found.append(int(stat.parent.name))
    return found


def start(model, out, *extra, env=None):
    args = [sys.executable, str(ROOT / "tools" / "infer.py"), "--out", str(out), "--model", str(model["prototxt"]),
            "--weights", str(model["weights"]), "--proposal-cache", str(model["proposals"]), *map(str, extra)]
    # SIGINT as a terminal's foreground job has it: a shell's background job (CI run with
    # `&`) ignores it, and Python then keeps it ignored, so Ctrl-C could not be tested.
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_labels(out: Path, proc, count: int = 1, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while len(list((out / "labels").glob("im*.png"))) < count and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def gone(sid: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while session_processes(sid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_write_the_serial_runs_bytes(model, inputs, serial, tmp_path, workers):
    out = tmp_path / "out"
    result = infer(model, out, inputs, "--workers", workers, *EXTRA)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{workers} workers; at most {workers + 1} images prepared ahead" in result.stderr
    # Caffe's BLAS leaves the workers their cores; the serial run's has them all, and the bytes still agree.
    threads = max(usable_cores() - workers, 1)
    assert f"Caffe's BLAS on {threads} thread(s), beside {workers} workers" in result.stderr
    reference, ours = files_of(serial), files_of(out)
    assert len(reference) == 3 * IMAGES and sorted(ours) == sorted(reference)
    assert [name for name in reference if ours[name] != reference[name]] == []
    assert part_files(out) == []
    # run.json records the run's busy and wall times; the stages overlap.
    timings = json.loads((out / "run.json").read_text())["timings"]["all"]
    assert timings["images"] == IMAGES and timings["workers"] == workers
    busy = timings["busy_seconds_per_image"]
    assert set(busy) == {"proposals", "forward", "aggregation", "crf", "fcn", "writing"} and busy["crf"] > 0


def test_the_comparison_sees_a_difference(model, inputs, serial, tmp_path):
    """Negative case: another aggregation (sum) changes the bytes."""
    out = tmp_path / "out"
    result = infer(model, out, inputs, "--workers", "2", "--aggregate", "sum", *EXTRA)
    assert result.returncode == 0, result.stderr[-3000:]
    reference, ours = files_of(serial), files_of(out)
    assert sorted(ours) == sorted(reference)
    assert sum(ours[name] != reference[name] for name in reference) > IMAGES


def test_the_ensemble_with_workers_writes_the_serial_bytes(model, inputs, tmp_path):
    fcn = ["--fcn-weights", model["fcn"] / "fcn.caffemodel", "--fcn-model", model["fcn"] / "fcn.prototxt",
           "--ensemble", "mean"]
    runs = {}
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        result = infer(model, out, inputs, "--workers", workers, *EXTRA, *fcn)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[workers] = files_of(out)
    assert len(runs[0]) == 3 * IMAGES and runs[0] == runs[2]


@pytest.mark.parametrize("whom", ["main", "group"])
def test_sigkill_at_random_points_then_resume(model, inputs, serial, tmp_path, whom):
    """SIGKILL of the run (its main process alone: the workers must die with
    it; or the whole process group, as the OOM killer or scancel -s KILL
    might), three times at random points, then a run to the end: every
    file is the serial run's, no partial file is left, no process survives."""
    out = tmp_path / "out"
    rng = random.Random(f"29-{whom}")
    interrupted = 0
    for _ in range(3):
        proc = start(model, out, inputs, "--workers", "2", *EXTRA)
        before = len(list((out / "labels").glob("im*.png"))) if (out / "labels").exists() else 0
        wait_for_labels(out, proc, min(before + 1, IMAGES))
        time.sleep(rng.uniform(0, 0.8))
        if whom == "main":
            os.kill(proc.pid, signal.SIGKILL)
        else:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        assert gone(proc.pid), f"processes left: {session_processes(proc.pid)}"
        done = len(list((out / "labels").glob("im*.png")))
        interrupted += done < IMAGES
        for name, data in files_of(out).items():  # what is there is whole, and the serial run's
            if name.startswith("labels/"):
                assert data == files_of(serial)[name], name
    assert interrupted, "no kill landed before the end: the test proved nothing"
    final = infer(model, out, inputs, "--workers", "2", *EXTRA)
    assert final.returncode == 0, final.stderr[-3000:]
    assert " already done" in final.stderr and f"0 segmented, {IMAGES} already" not in final.stderr
    assert files_of(out) == files_of(serial)
    assert part_files(out) == []


FAILING_RUN = """
import os, runpy, signal, sys
import deconvnet.infer.pipelined as pipelined
original = pipelined.finish_image
def finish_image(pipeline, outputs, image_id, *args, **kwargs):
    if image_id == "im05":
        if "{how}" == "raise":
            raise ValueError("injected failure")
        os.kill(os.getpid(), signal.SIGKILL)
    return original(pipeline, outputs, image_id, *args, **kwargs)
pipelined.finish_image = finish_image
sys.argv = ["infer.py"] + sys.argv[1:]
runpy.run_path({tool!r}, run_name="__main__")
"""


@pytest.mark.parametrize("how", ["raise", "die"])
def test_a_worker_failure_names_the_image_and_stops_cleanly(model, inputs, tmp_path, how):
    driver = tmp_path / "failing_infer.py"
    driver.write_text(FAILING_RUN.format(how=how, tool=str(ROOT / "tools" / "infer.py")))
    out = tmp_path / "out"
    args = [sys.executable, str(driver), "--out", str(out), "--model", str(model["prototxt"]),
            "--weights", str(model["weights"]), "--proposal-cache", str(model["proposals"]),
            str(inputs), "--workers", "2", *EXTRA]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1, stderr[-3000:]
    if how == "raise":
        assert "finishing image im05" in stderr and "ValueError: injected failure" in stderr
    else:
        assert "died (killed by signal SIGKILL) while finishing image im05" in stderr
    assert "stopped; the images written so far are done" in stderr
    assert gone(proc.pid), f"processes left: {session_processes(proc.pid)}"
    assert not (out / "labels" / "im05.png").exists()
    assert part_files(out) == []
    # Negative case of the check for leftovers: a live session is seen.
    probe = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        assert session_processes(probe.pid) == [probe.pid]
    finally:
        probe.kill()
        probe.wait()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_and_sigterm_stop_cleanly_then_resume(model, inputs, serial, tmp_path, sig):
    """Ctrl-C reaches the whole foreground process group; SIGTERM (scancel,
    kill) the main process."""
    out = tmp_path / "out"
    proc = start(model, out, inputs, "--workers", "2", *EXTRA)
    wait_for_labels(out, proc, 2)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)
    else:
        os.kill(proc.pid, sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "interrupted; the images written so far are done" in stderr
    assert gone(proc.pid), f"processes left: {session_processes(proc.pid)}"
    assert part_files(out) == []
    assert len(list((out / "labels").glob("*.png"))) < IMAGES
    final = infer(model, out, inputs, "--workers", "2", *EXTRA)
    assert final.returncode == 0, final.stderr[-3000:]
    assert files_of(out) == files_of(serial)


def test_workers_help_and_refusals(model, tmp_path):
    help_text = subprocess.run([sys.executable, str(ROOT / "tools" / "infer.py"), "--help"], capture_output=True,
                               text=True, timeout=120).stdout
    help_text = " ".join(help_text.split())
    assert "--workers" in help_text and "N+1 images ahead" in help_text
    bad = infer(model, tmp_path / "out", tmp_path, "--workers", "-1")
    assert bad.returncode == 2 and "at least 0" in bad.stderr

"""Issue 12: a hostile probe of the tools, item by item, each run as a user
would (subprocesses, real files, real kills). Items with their own homes
are tested there: 2 and 4 in test_infer_e2e.py, 8 and 15 in
test_unpooling_errors.py, 9 in test_download.py."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from deconvnet.data.crop_db import CropDB
from deconvnet.data.voc import write_indexed_png

from helpers import ROOT, synthetic_roots

BUILD = ROOT / "data_prep" / "build_dataset.py"
EVAL = ROOT / "tools" / "eval_voc.py"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return synthetic_roots(tmp_path_factory.mktemp("synthetic"), num_images=8, seed=4)


def run(*args, timeout=300, **kwargs):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          **kwargs)


# --- 3: a resumed build must read the inputs it started from ------------------

def test_resume_with_a_changed_list_starts_over(synthetic, tmp_path):
    voc_src, sbd = synthetic
    voc = tmp_path / "VOC2012"
    shutil.copytree(voc_src, voc)
    out = tmp_path / "s1"
    code = ("import sys, os, signal\n"
            "from deconvnet.data import build_crops\n"
            "real = build_crops.CropDBWriter.add_image\n"
            "def add(self, *a, **k):\n"
            "    real(self, *a, **k)\n"
            "    if self.images_done >= 2: os.kill(os.getpid(), signal.SIGKILL)\n"
            "build_crops.CropDBWriter.add_image = add\n"
            "from data_prep.build_dataset import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    args = ["--stage", "1", "--voc", voc, "--image-set", "voc:trainval", "--out", out, "--workers", "1",
            "--commit-every", "1"]
    killed = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL and (tmp_path / "s1.partial").exists()
    split = voc / "ImageSets" / "Segmentation" / "trainval.txt"
    ids = split.read_text().split()
    split.write_text("\n".join(ids[1:]) + "\n")  # the user edits the list
    rerun = run(BUILD, *args)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "the image list or input files changed" in rerun.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["images"] == len(ids) - 1
    db = CropDB(out)
    sources = {db.get(n).meta["image_id"] for n in range(db.num_records)}
    assert ids[0] not in sources, "records of the removed image survived the changed list"


# --- 7: eval_voc on empty and repeated lists, NaN, bad ground truth -----------

def pair(tmp_path, gt_values=((0, 1), (1, 0))):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    write_indexed_png(gt / "a.png", np.array(gt_values, np.uint8))
    write_indexed_png(pred / "a.png", np.array([[0, 1], [1, 0]], np.uint8))
    return gt, pred


def test_eval_refuses_empty_and_repeated_lists(tmp_path):
    gt, pred = pair(tmp_path)
    (tmp_path / "empty.txt").write_text("\n")
    empty = run(EVAL, "--gt-dir", gt, "--pred-dir", pred, "--list", tmp_path / "empty.txt",
                "--json", tmp_path / "s.json")
    assert empty.returncode == 1 and "the image list is empty" in empty.stderr
    assert not (tmp_path / "s.json").exists()
    (tmp_path / "twice.txt").write_text("a\na\n")
    twice = run(EVAL, "--gt-dir", gt, "--pred-dir", pred, "--list", tmp_path / "twice.txt")
    assert twice.returncode == 1 and "more than once (a)" in twice.stderr


def test_eval_json_is_valid_and_goes_into_new_folders(tmp_path):
    gt, pred = pair(tmp_path, gt_values=((255, 255), (255, 255)))  # all void: nothing scored
    out = tmp_path / "new" / "folder" / "s.json"
    result = run(EVAL, "--gt-dir", gt, "--pred-dir", pred, "--json", out)
    assert result.returncode == 0, result.stderr
    scores = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"JSON holds {c}"))
    assert scores["mean_iou"] is None and scores["pixel_accuracy"] is None


@pytest.mark.parametrize("case", ["truncated", "above 20"])
def test_eval_bad_ground_truth_is_named(tmp_path, case):
    gt, pred = pair(tmp_path)
    if case == "truncated":
        data = (gt / "a.png").read_bytes()
        (gt / "a.png").write_bytes(data[:len(data) // 2])
        phrase = "unreadable label PNG"
    else:
        write_indexed_png(gt / "a.png", np.array([[0, 1], [77, 0]], np.uint8))
        phrase = "values outside 0..20 and 255: [77]"
    result = run(EVAL, "--gt-dir", gt, "--pred-dir", pred)
    assert result.returncode == 1 and f"{gt / 'a.png'}" in result.stderr and phrase in result.stderr
    assert "Traceback" not in result.stderr


# --- 10: a class PNG of another size than the object PNG is skipped ----------

def test_class_and_object_png_sizes_differ(synthetic, tmp_path):
    voc_src, _ = synthetic
    voc = tmp_path / "VOC2012"
    shutil.copytree(voc_src, voc)
    first = (voc / "ImageSets" / "Segmentation" / "trainval.txt").read_text().split()[0]
    path = voc / "SegmentationClass" / f"{first}.png"
    with Image.open(path) as img:
        img.crop((0, 0, img.width - 3, img.height)).save(path)
    result = run(BUILD, "--stage", "1", "--voc", voc, "--image-set", "voc:trainval", "--out", tmp_path / "s1",
                 "--workers", "1")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    skipped = json.loads((tmp_path / "s1" / "manifest.json").read_text())["skipped"]
    assert [s["image"] for s in skipped] == [f"voc/{first}"] and "must match" in skipped[0]["reason"]


# --- 12: an empty image list is an error, not an empty "finished" database ---

def test_empty_image_list_builds_nothing(synthetic, tmp_path):
    voc_src, _ = synthetic
    voc = tmp_path / "VOC2012"
    shutil.copytree(voc_src, voc)
    (voc / "ImageSets" / "Segmentation" / "empty.txt").write_text("")
    result = run(BUILD, "--stage", "1", "--voc", voc, "--image-set", "voc:empty", "--out", tmp_path / "s1")
    assert result.returncode == 1 and "has no images" in result.stderr
    assert not (tmp_path / "s1").exists() and not (tmp_path / "s1.partial").exists()


# --- 13: outputs readable by group and others under umask 022 -----------------

def test_outputs_follow_the_umask(synthetic, tmp_path):
    voc, sbd = synthetic
    env = dict(os.environ)
    code = ("import os, sys, runpy; os.umask(0o022); sys.argv = sys.argv[1:];"
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    outputs = tmp_path / "outputs"
    build = subprocess.run([sys.executable, "-c", code, str(BUILD), "--stage", "1", "--voc", str(voc),
                            "--image-set", "voc:trainval", "--out", str(outputs / "s1"), "--limit", "2"],
                           capture_output=True, text=True, timeout=300, env=env)
    assert build.returncode == 0, build.stderr[-2000:]
    gt, pred = pair(tmp_path)
    score = subprocess.run([sys.executable, "-c", code, str(EVAL), "--gt-dir", str(gt), "--pred-dir", str(pred),
                            "--json", str(outputs / "s.json")], capture_output=True, text=True, timeout=120)
    assert score.returncode == 0, score.stderr
    files = [p for p in outputs.rglob("*") if p.is_file()]
    assert len(files) >= 4
    for path in files:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o044 == 0o044, f"{path} is {oct(mode)}: not readable by group and others"


# --- 16: temporary files of killed writers are removed -----------------------

def test_stale_temporary_files_are_cleaned(tmp_path):
    from deconvnet.common.atomic import atomic_path

    target = tmp_path / "labels" / "x.png"
    code = ("import os, signal, sys\n"
            "from pathlib import Path\n"
            "from deconvnet.common.atomic import atomic_path\n"
            "with atomic_path(Path(sys.argv[1])) as tmp:\n"
            "    tmp.write_bytes(b'half')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    killed = subprocess.run([sys.executable, "-c", code, str(target)], cwd=ROOT, timeout=60)
    assert killed.returncode == -signal.SIGKILL
    stale = list(target.parent.glob(".x.*.part.png"))
    assert len(stale) == 1
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole"
    assert list(target.parent.glob(".x.*.part.png")) == [], "the killed writer's file is still there"
    # A live writer's temporary file is left alone by another process's write.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live = target.parent / f".x.{socket.gethostname().split('.')[0]}-{sleeper.pid}.abc.part.png"
        live.write_bytes(b"in progress")
        again = ("import sys\nfrom pathlib import Path\nfrom deconvnet.common.atomic import atomic_path\n"
                 "with atomic_path(Path(sys.argv[1])) as tmp:\n    tmp.write_bytes(b'again')\n")
        assert subprocess.run([sys.executable, "-c", again, str(target)], cwd=ROOT, timeout=60).returncode == 0
        assert live.exists() and target.read_bytes() == b"again"
    finally:
        sleeper.kill()
        sleeper.wait()


# --- 14: flags that made no sense ran anyway --------------------------------------

@pytest.mark.parametrize("flag, value", [("--top-k", "-3"), ("--batch", "0")])
def test_infer_rejects_non_positive_counts(tmp_path, flag, value):
    result = run(ROOT / "tools" / "infer.py", tmp_path, "--out", tmp_path / "out", "--weights", tmp_path / "w",
                 flag, value)
    assert result.returncode == 2 and f"argument {flag}: expected a positive integer" in result.stderr


# --- 5 and 6: damaged databases stop the data layer with the database and record named ---

FORWARD = """
import json, sys, caffe
params = json.loads(sys.argv[1])
open("net.prototxt", "w").write('layer {{ name: "data" type: "Python" top: "data" top: "label" '
    'python_param {{ module: "python_layers.seg_data" layer: "SegDataLayer" param_str: %r }} }}' % json.dumps(params))
net = caffe.Net("net.prototxt", caffe.TRAIN)
for _ in range({passes}):
    net.forward()
print("FORWARD_DONE")
"""


def small_db(path, count=6, labels=None, with_crc=True):
    from deconvnet.data.crop_db import CropDBWriter, encode_record

    writer = CropDBWriter(path, dict(test=True))
    rng = np.random.default_rng(0)
    for r in range(count):
        image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        label = np.full((32, 32), r % 21, np.uint8) if labels is None else labels(r)
        value = encode_record(image, label, dict(cls=1))
        if not with_crc:  # as written before the checksum field existed
            import struct
            (length,) = struct.unpack("<I", value[4:8])
            meta = json.loads(value[8:8 + length])
            del meta["crc32"]
            header = json.dumps(meta, sort_keys=True).encode()
            value = value[:4] + struct.pack("<I", len(header)) + header + value[8 + length:]
        writer.add_image([(value, 1)])
    writer.finish(np.arange(count), dict(params=dict(stored_size=32), unique_records=count))
    return path


def forward(tmp_path, db, workers, passes=3, timeout=60):
    params = dict(source=str(db), batch_size=2, crop_size=32, workers=workers)
    return subprocess.run([sys.executable, "-c", FORWARD.format(passes=passes), json.dumps(params)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONPATH=f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"))


@pytest.mark.parametrize("workers", [0, 1])
def test_truncated_database(tmp_path, workers):
    db = small_db(tmp_path / "db", count=400)
    data = db / "data.mdb"
    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size // 2)
    started = time.monotonic()
    result = forward(tmp_path, db, workers)
    assert result.returncode == 1 and f"{db}/data.mdb is truncated" in result.stderr, result.stderr[-2000:]
    assert time.monotonic() - started < 30


def corrupt_record(db, number: int) -> None:
    import lmdb

    from deconvnet.data.crop_db import record_key

    env = lmdb.open(str(db))
    with env.begin(write=True) as txn:
        value = bytearray(txn.get(record_key(number)))
        value[-100] ^= 0x5A  # a few flipped bits inside the stored PNG / JPEG bytes
        value[-300] ^= 0x21
        txn.put(record_key(number), bytes(value))
    env.close()


@pytest.mark.parametrize("workers", [0, 1])
def test_flipped_bits_are_caught_by_the_checksum(tmp_path, workers):
    db = small_db(tmp_path / "db")
    corrupt_record(db, 3)
    result = forward(tmp_path, db, workers)
    assert result.returncode == 1 and "FORWARD_DONE" not in result.stdout
    assert f"{db}: record 3: checksum mismatch" in result.stderr, result.stderr[-2000:]


def test_label_outside_the_classes(tmp_path):
    db = small_db(tmp_path / "db", labels=lambda r: np.full((32, 32), 77 if r == 2 else 1, np.uint8))
    result = forward(tmp_path, db, 0)
    assert result.returncode == 1 and f"{db}: record 2: label values outside 0..20 and 255: [77]" in result.stderr


def kill_worker_then_forward(tmp_path, passes: int, kill: str, forwards: int, batch_size: int,
                             timeout: float) -> tuple[str, int]:
    """Runs ``passes`` forward passes, then ``kill`` (code that kills the
    prefetch worker), then up to ``forwards`` more; returns the output and
    the seconds until the layer raised (the output holds "RAISED" then)."""
    db = small_db(tmp_path / "db")
    code = FORWARD.format(passes=passes).replace('print("FORWARD_DONE")', f'''
import os, signal, time
{kill}
started = time.monotonic()
try:
    for _ in range({forwards}):
        net.forward()
except RuntimeError as err:
    print("RAISED", round(time.monotonic() - started), err)
''')
    params = dict(source=str(db), batch_size=batch_size, crop_size=32, workers=1)
    result = subprocess.run([sys.executable, "-c", code, json.dumps(params)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=timeout,
                            env=dict(os.environ, PYTHONPATH=f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"))
    assert "RAISED" in result.stdout, result.stdout + result.stderr[-2000:]
    return result.stdout, int(result.stdout.split("RAISED")[1].split()[0])


def test_a_dead_worker_is_reported_at_once(tmp_path):
    stdout, seconds = kill_worker_then_forward(tmp_path, 1, '''
worker = net.layers[0].prefetcher.procs[0]
os.kill(worker.pid, signal.SIGKILL)
worker.join()''', forwards=10, batch_size=2, timeout=120)
    assert seconds <= 5 and "died (killed by signal SIGKILL)" in stdout


def test_a_worker_killed_in_the_middle_of_a_batch_is_reported_not_waited_for(tmp_path):
    """A batch larger than a pipe's 64 KiB: the worker blocks half-way
    through sending it (nobody reads yet) and is killed there. The layer
    must report it, not wait forever for the rest of the batch (a shared
    queue, whose pipe the parent also holds open, waited)."""
    # 24 x 3 x 32 x 32 floats: 295 KB
    stdout, seconds = kill_worker_then_forward(tmp_path, 0, '''
time.sleep(2)  # the worker has filled the pipe and waits in the middle of its first batch
worker = net.layers[0].prefetcher.procs[0]
os.kill(worker.pid, signal.SIGKILL)''', forwards=1, batch_size=24, timeout=60)
    assert seconds <= 10 and "died (killed by signal SIGKILL)" in stdout


def test_databases_without_checksums_still_read(tmp_path):
    db = small_db(tmp_path / "db", with_crc=False)
    result = forward(tmp_path, db, 0)
    assert result.returncode == 0 and "FORWARD_DONE" in result.stdout, result.stderr[-2000:]
    assert result.stderr.count("read unverified") == 1


# --- 11: stage-2 datasets rebuild identically ------------------------------------

def test_gradient_edges_do_not_depend_on_buffer_alignment(synthetic):
    """OpenCV's float32 Sobel and magnitude rounded differently by alignment."""
    from deconvnet.data.proposals import EdgeBoxParams, gradient_edges
    from deconvnet.data.voc import read_image

    voc, _ = synthetic
    for path in sorted((voc / "JPEGImages").glob("*.jpg"))[:4]:
        image = read_image(path)
        results = []
        for offset in range(0, 16, 3):
            buffer = np.zeros(image.size + 32, np.uint8)
            view = buffer[offset:offset + image.size].reshape(image.shape)
            view[...] = image
            results.append(gradient_edges(view, EdgeBoxParams()))
        for edges, orientation in results[1:]:
            np.testing.assert_array_equal(edges, results[0][0], err_msg=str(path))
            np.testing.assert_array_equal(orientation, results[0][1], err_msg=str(path))


@pytest.mark.parametrize("edges", ["gradient", "structured"])
def test_two_clean_stage2_builds_are_identical(synthetic, tmp_path, edges):
    """Both edge kinds (structured: a random forest in OpenCV's model format,
    which the installed OpenCV runs), two workers each."""
    from deconvnet.data.stand_in import write_sed_model

    voc, sbd = synthetic
    flags = ["--edges", "gradient"] if edges == "gradient" else \
        ["--edge-model", write_sed_model(tmp_path / "sed_model.yml.gz")]
    for name in ("a", "b"):
        result = run(BUILD, "--stage", "2", "--voc", voc, "--sbd", sbd, "--out", tmp_path / name / "s2",
                     *flags, "--workers", "2")
        assert result.returncode == 0, result.stderr[-2000:]
        manifest = json.loads((tmp_path / name / "s2" / "manifest.json").read_text())
        assert ("sed_model" in json.dumps(manifest["edges"])) == (edges == "structured"), manifest["edges"]
    a, b = CropDB(tmp_path / "a" / "s2"), CropDB(tmp_path / "b" / "s2")
    assert a.num_records == b.num_records
    np.testing.assert_array_equal(a.index, b.index)
    for number in range(a.num_records):
        assert a.raw(number) == b.raw(number), f"record {number} differs between clean builds"
    proposals_a = sorted((tmp_path / "a" / "proposals").rglob("*.npz"))
    for path in proposals_a:
        other = tmp_path / "b" / path.relative_to(tmp_path / "a")
        with np.load(path) as x, np.load(other) as y:
            np.testing.assert_array_equal(x["boxes"], y["boxes"])


def test_a_full_disk_is_reported_as_such(synthetic, tmp_path):
    """Item 12: the build stops with a message on free space and resuming,
    not a bare "mdb_txn_commit: ..." traceback. The disk "fills" through a
    file-size limit on the build process (writes fail with EFBIG)."""
    voc, _ = synthetic
    code = ("import resource, signal, sys, runpy\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))\n"
            "sys.argv = sys.argv[1:]\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", code, str(BUILD), "--stage", "1", "--voc", str(voc),
                             "--image-set", "voc:trainval", "--out", str(tmp_path / "s1"), "--workers", "1",
                             "--commit-every", "1"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert f"writing {tmp_path / 's1.partial'} failed" in result.stderr and "free on its disk" in result.stderr
    assert "rerun the same command: the build resumes" in result.stderr

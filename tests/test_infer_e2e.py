"""tools/infer.py end to end with a reduced DeconvNet (and reduced FCN-8s)
holding random weights, on synthetic images, scored by tools/eval_voc.py;
and the figure commands."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from deconvnet.data.synthetic import SyntheticSpec, write_dataset

from helpers import ROOT, write

SPLIT = "trainval"


@pytest.fixture(scope="module")
def setup(caffe, tmp_path_factory):
    from deconvnet.net import nets

    root = tmp_path_factory.mktemp("e2e")
    write_dataset(root / "syn", SyntheticSpec(num_images=6, seed=2, voc_fraction=1.0))
    caffe.set_random_seed(1)
    deploy = write(root / "deconvnet.prototxt", str(nets.deconvnet_deploy(size=nets.Size(64, 8))))
    net = caffe.Net(str(deploy), caffe.TEST)
    for name, params in net.params.items():
        if name.endswith("_bn"):  # identity statistics
            params[0].data[...], params[1].data[...], params[2].data[...] = 0, 1, 1
    net.save(str(root / "deconvnet.caffemodel"))
    fcn = write(root / "fcn.prototxt", str(nets.fcn8s_deploy(nets.Size(500, 8))))
    fnet = caffe.Net(str(fcn), caffe.TEST)
    rng = np.random.default_rng(0)
    for params in fnet.params.values():
        for p in params:
            p.data[...] = rng.normal(0, 0.05, p.data.shape)
    fnet.save(str(root / "fcn.caffemodel"))
    fcn2014 = write(root / "fcn2014.prototxt", str(nets.fcn8s_deploy(nets.Size(500, 8), "2014")))
    fnet = caffe.Net(str(fcn2014), caffe.TEST)
    for params in fnet.params.values():
        for p in params:
            p.data[...] = rng.normal(0, 0.05, p.data.shape)
    fnet.save(str(root / "fcn2014.caffemodel"))
    return root


def infer(setup, out, *extra):
    args = [sys.executable, str(ROOT / "tools" / "infer.py"), "--out", str(out),
            "--model", str(setup / "deconvnet.prototxt"), "--weights", str(setup / "deconvnet.caffemodel"),
            "--proposal-cache", str(setup / "proposals"), *map(str, extra)]
    return subprocess.run(args, capture_output=True, text=True, timeout=600)


def evaluate(setup, pred_dir, json_path):
    voc = setup / "syn" / "VOCdevkit" / "VOC2012"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "eval_voc.py"), "--gt-dir",
                             str(voc / "SegmentationClass"), "--pred-dir", str(pred_dir), "--list",
                             str(voc / "ImageSets" / "Segmentation" / f"{SPLIT}.txt"), "--json", str(json_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    scores = json.loads(json_path.read_text())
    assert 0 <= scores["mean_iou"] <= 1 and scores["num_images"] == 6
    return scores


@pytest.mark.parametrize("extra", [[], ["--crf"], ["--fcn-weights", "FCN", "--ensemble", "mean", "--crf"],
                                   ["--fcn-weights", "FCN", "--ensemble", "product"],
                                   ["--aggregate", "sum", "--min-box-side", "40"]],
                         ids=["plain", "crf", "ensemble-mean-crf", "ensemble-product", "sum"])
def test_infer_then_eval(setup, tmp_path, extra):
    voc = setup / "syn" / "VOCdevkit" / "VOC2012"
    extra = [str(setup / "fcn.caffemodel") if e == "FCN" else e for e in extra]
    if "--fcn-weights" in extra:
        extra += ["--fcn-model", str(setup / "fcn.prototxt")]
    result = infer(setup, tmp_path / "out", "--voc-root", voc, "--split", SPLIT, "--save-probs",
                   "--overlays", "--timings", tmp_path / "timings.json", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    labels = sorted((tmp_path / "out" / "labels").glob("*.png"))
    assert len(labels) == 6
    # --timings: the mean seconds per image of each step, and their sum.
    timings = json.loads((tmp_path / "timings.json").read_text())
    per = timings["seconds_per_image"]
    assert timings["images"] == 6 and timings["device"] == "cpu"
    assert per["forward"] > 0 and (per["crf"] > 0) == ("--crf" in extra)
    assert (per["fcn"] > 0) == ("--fcn-weights" in extra)
    assert per["total"] == pytest.approx(sum(v for k, v in per.items() if k != "total"))
    first = labels[0].stem
    label = np.array(Image.open(labels[0]))
    assert Image.open(labels[0]).mode == "P" and label.max() <= 20
    image = cv2.imread(str(voc / "JPEGImages" / f"{first}.jpg"))
    assert label.shape == image.shape[:2]
    probs = np.load(tmp_path / "out" / "probs" / f"{first}.npy")
    assert probs.dtype == np.float16 and probs.shape == (21,) + image.shape[:2]
    np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1, atol=2e-2)
    assert cv2.imread(str(tmp_path / "out" / "overlays" / f"{first}.png")).shape == image.shape
    evaluate(setup, tmp_path / "out" / "labels", tmp_path / "scores.json")


def test_folder_with_bad_gray_and_small_images(setup, tmp_path):
    voc = setup / "syn" / "VOCdevkit" / "VOC2012"
    inputs = tmp_path / "in"
    inputs.mkdir()
    source = sorted((voc / "JPEGImages").glob("*.jpg"))
    Image.open(source[0]).convert("L").save(inputs / "gray.jpg")
    Image.open(source[1]).resize((40, 30)).save(inputs / "small.png")
    (inputs / "broken.jpg").write_bytes(b"not a jpeg at all")
    out = tmp_path / "out"
    result = infer(setup, out, inputs, "--voc-submission")
    assert result.returncode == 1
    assert "broken" in result.stderr and "2 segmented, 0 already done, 1 failed" in result.stderr
    assert np.array(Image.open(out / "labels" / "small.png")).shape == (30, 40)
    assert (out / "results" / "VOC2012" / "Segmentation" / "comp6_test_cls" / "gray.png").exists()
    import tarfile

    with tarfile.open(out / "results.tgz") as tar:
        assert sorted(tar.getnames()) == ["results/VOC2012/Segmentation/comp6_test_cls/gray.png",
                                          "results/VOC2012/Segmentation/comp6_test_cls/small.png"]
    # A rerun skips what is done and retries only the failure.
    again = infer(setup, out, inputs)
    assert "0 segmented, 2 already done, 1 failed" in again.stderr


@pytest.mark.parametrize("figure", ["fig4", "fig5", "fig6"])
def test_figure_commands(setup, tmp_path, figure):
    image = sorted((setup / "syn" / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))[0]
    out = tmp_path / f"{figure}.png"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "figures.py"), figure, str(image),
                             "--model", str(setup / "deconvnet.prototxt"),
                             "--weights", str(setup / "deconvnet.caffemodel"), "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    picture = cv2.imread(str(out))
    assert picture is not None and picture.shape[0] > 100 and picture.shape[1] > 300


@pytest.mark.parametrize("recipe, ensemble, min_side", [("release", "product", 112), ("paper", "mean", 0)])
def test_recipe_defaults_with_the_2014_partner(setup, tmp_path, recipe, ensemble, min_side):
    """No single flag: the recipe picks the ensemble rule, the box filter and
    the 2014 FCN-8s layout; run.json records them."""
    voc = setup / "syn" / "VOCdevkit" / "VOC2012"
    result = infer(setup, tmp_path / "out", "--voc-root", voc, "--split", SPLIT, "--recipe", recipe,
                   "--fcn-weights", setup / "fcn2014.caffemodel", "--fcn-model", setup / "fcn2014.prototxt")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((tmp_path / "out" / "labels").glob("*.png"))) == 6
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    chosen = run["recipe"]
    assert (chosen["name"], chosen["ensemble"], chosen["min_box_side"]) == (recipe, ensemble, min_side)
    assert run["fcn"]["variant"] == "2014" and run["proposals"]["edges"] in ("gradient", "structured")
    # 2014 weights in the heavy layout: Caffe would skip the score head and run it random.
    wrong = infer(setup, tmp_path / "wrong", "--voc-root", voc, "--split", SPLIT, "--recipe", recipe,
                  "--fcn-weights", setup / "fcn2014.caffemodel", "--fcn-model", setup / "fcn.prototxt")
    assert wrong.returncode == 2 and "has no weights for 6 of the" in wrong.stderr
    assert "score_fr" in wrong.stderr and not (tmp_path / "wrong" / "labels").exists()


def test_figure5_and_figure7_with_the_fcn_partner(setup, tmp_path):
    """fig5's rows and fig7's panels against what they must equal: FCN-8s's
    softmax, the mean ensemble as the average of the two rows, the label maps
    as their argmax, and EDeconvNet + CRF as tools/infer.py's labels."""
    from deconvnet.data.proposals import EdgeBoxParams, ProposalCache
    from deconvnet.data.voc import read_image
    from deconvnet.infer import figures
    from deconvnet.infer.aggregation import select_boxes, softmax
    from deconvnet.infer.models import DeconvNetModel, FCNModel

    voc = setup / "syn" / "VOCdevkit" / "VOC2012"
    path = sorted((voc / "JPEGImages").glob("*.jpg"))[0]
    image = read_image(path)  # as tools/infer.py decodes it (PIL's JPEG decoder, not OpenCV's)
    model = DeconvNetModel(setup / "deconvnet.prototxt", setup / "deconvnet.caffemodel")
    fcn = FCNModel(setup / "fcn2014.prototxt", setup / "fcn2014.caffemodel")
    result = infer(setup, tmp_path / "out", path, "--proposal-cache", tmp_path / "out" / "proposals",
                   "--recipe", "paper", "--edges", "gradient", "--crf", "--fcn-weights",
                   setup / "fcn2014.caffemodel", "--fcn-model", setup / "fcn2014.prototxt")
    assert result.returncode == 0, result.stderr[-2000:]
    # The same proposals as that run (OpenCV's Edge Boxes is not always repeatable).
    boxes = select_boxes(ProposalCache(tmp_path / "out" / "proposals", EdgeBoxParams()).get(path.stem, image)[0],
                         image.shape, 50)
    rows = figures.figure5(model, image, boxes, tmp_path / "fig5.png", fcn=fcn, rule="mean")
    assert list(rows) == ["DeconvNet", "FCN-8s", "ensemble (mean)"]
    np.testing.assert_allclose(rows["FCN-8s"], softmax(fcn.scores(image)), rtol=1e-5)
    np.testing.assert_allclose(rows["ensemble (mean)"], (rows["DeconvNet"] + rows["FCN-8s"]) / 2, rtol=1e-5,
                               atol=1e-7)
    gt = np.array(Image.open(voc / "SegmentationClass" / f"{path.stem}.png"))
    panels = figures.figure7(model, fcn, image, gt, boxes, tmp_path / "fig7.png", rule="mean")
    np.testing.assert_array_equal(panels["DeconvNet"], rows["DeconvNet"].argmax(0))
    np.testing.assert_array_equal(panels["FCN-8s"], rows["FCN-8s"].argmax(0))
    labels = np.array(Image.open(tmp_path / "out" / "labels" / f"{path.stem}.png"))
    np.testing.assert_array_equal(panels["EDeconvNet+CRF"], labels)
    for name, panels_wide in (("fig5", 4), ("fig7", 5)):
        picture = cv2.imread(str(tmp_path / f"{name}.png"))
        assert picture is not None and picture.shape[1] > 100 * panels_wide


@pytest.mark.parametrize("figure", ["fig5", "fig7"])
def test_figure_commands_with_the_fcn_partner(setup, tmp_path, figure):
    image = sorted((setup / "syn" / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))[1]
    out = tmp_path / f"{figure}.png"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "figures.py"), figure, str(image),
                             "--model", str(setup / "deconvnet.prototxt"),
                             "--weights", str(setup / "deconvnet.caffemodel"), "--fcn-weights",
                             str(setup / "fcn2014.caffemodel"), "--fcn-model", str(setup / "fcn2014.prototxt"),
                             "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    picture = cv2.imread(str(out))
    assert picture is not None and picture.shape[0] > 200 and picture.shape[1] > 500


def test_weights_must_cover_the_net(setup, tmp_path, caffe):
    """Issue 12, item 2: a 0-byte caffemodel, or one holding only conv1_1, is
    refused (Caffe would run the rest on random fillers); the flag lists and goes on."""
    from caffe.proto import caffe_pb2

    image = sorted((setup / "syn" / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))[0]
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    full = caffe_pb2.NetParameter()
    full.ParseFromString((setup / "deconvnet.caffemodel").read_bytes())
    partial = caffe_pb2.NetParameter()
    partial.layer.extend([layer for layer in full.layer if layer.name == "conv1_1"])
    only_conv = tmp_path / "conv1_1.caffemodel"
    only_conv.write_bytes(partial.SerializeToString())
    for weights in (empty, only_conv):
        args = [sys.executable, str(ROOT / "tools" / "infer.py"), str(image), "--out", str(tmp_path / weights.stem),
                "--model", str(setup / "deconvnet.prototxt"), "--weights", str(weights), "--edges", "gradient"]
        result = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert result.returncode == 2, result.stderr[-2000:]
        assert f"{weights} has no weights for" in result.stderr and "conv1_2" in result.stderr
        assert not (tmp_path / weights.stem / "labels").exists()
    allowed = subprocess.run(args + ["--allow-missing-weights"], capture_output=True, text=True, timeout=300)
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert "keep their fillers" in allowed.stderr and "conv1_2" in allowed.stderr
    # Another shape: the tool stops with both shapes, where Caffe would abort.
    wrong = caffe_pb2.NetParameter()
    wrong.CopyFrom(full)
    first = next(layer for layer in wrong.layer if layer.name == "conv1_1")
    del first.blobs[0].shape.dim[:]
    first.blobs[0].shape.dim.extend([3, 3, 3, 3])
    bad = tmp_path / "shape.caffemodel"
    bad.write_bytes(wrong.SerializeToString())
    args[args.index(str(only_conv))] = str(bad)
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "other shapes for conv1_1" in result.stderr, result.stderr[-2000:]


def test_inputs_with_one_name_get_distinct_outputs(setup, tmp_path):
    """Issue 12, item 4: same.jpg and same.png are two images, both segmented."""
    source = sorted((setup / "syn" / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))
    folder = tmp_path / "in"
    folder.mkdir()
    Image.open(source[0]).save(folder / "same.jpg")
    Image.open(source[1]).save(folder / "same.png")
    result = infer(setup, tmp_path / "out", folder, "--edges", "gradient")
    assert result.returncode == 0, result.stderr[-2000:]
    labels = sorted(p.name for p in (tmp_path / "out" / "labels").glob("*.png"))
    assert labels == ["same_jpg.png", "same_png.png"] and "share the name 'same'" in result.stderr
    shapes = {np.array(Image.open(tmp_path / "out" / "labels" / n)).shape for n in labels}
    assert shapes == {np.array(Image.open(source[0])).shape[:2], np.array(Image.open(source[1])).shape[:2]}


def test_infer_outputs_follow_the_umask(setup, tmp_path):
    """Issue 12, item 13: every file infer writes is readable by group and
    others under umask 022 (mkstemp alone made them 0600)."""
    import stat

    image = sorted((setup / "syn" / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))[0]
    code = ("import os, sys, runpy; os.umask(0o022); sys.argv = sys.argv[1:];"
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-c", code, str(ROOT / "tools" / "infer.py"), str(image), "--out",
                             str(out), "--model", str(setup / "deconvnet.prototxt"), "--weights",
                             str(setup / "deconvnet.caffemodel"), "--edges", "gradient", "--save-probs",
                             "--overlays", "--voc-submission"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.parent.name for p in files} >= {"labels", "probs", "overlays", "comp6_test_cls"}
    for path in files:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o044 == 0o044, f"{path} is {oct(mode)}"


def test_shards_write_what_one_run_writes(setup, tmp_path):
    """Two shards, one by --shard and one as a Slurm array task would run,
    into one folder: the same label files as a single run."""
    import os

    voc = setup / "syn" / "VOCdevkit" / "VOC2012"
    single = infer(setup, tmp_path / "single", "--voc-root", voc, "--split", SPLIT)
    assert single.returncode == 0, single.stderr[-2000:]
    first = infer(setup, tmp_path / "sharded", "--voc-root", voc, "--split", SPLIT, "--shard", "0/2")
    assert first.returncode == 0 and "shard 0/2: images 1 to 3 of 6" in first.stderr, first.stderr[-2000:]
    args = [sys.executable, str(ROOT / "tools" / "infer.py"), "--out", str(tmp_path / "sharded"),
            "--model", str(setup / "deconvnet.prototxt"), "--weights", str(setup / "deconvnet.caffemodel"),
            "--proposal-cache", str(setup / "proposals"), "--voc-root", str(voc), "--split", SPLIT]
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_MIN="0", SLURM_ARRAY_TASK_MAX="1",
               SLURM_ARRAY_TASK_COUNT="2")
    second = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert second.returncode == 0 and "shard 1/2: images 4 to 6 of 6" in second.stderr, second.stderr[-2000:]
    assert "3 segmented, 0 already done" in second.stderr
    names = sorted(p.name for p in (tmp_path / "single" / "labels").iterdir())
    assert len(names) == 6 and names == sorted(p.name for p in (tmp_path / "sharded" / "labels").iterdir())
    for name in names:
        assert (np.array(Image.open(tmp_path / "single" / "labels" / name))
                == np.array(Image.open(tmp_path / "sharded" / "labels" / name))).all(), name


# --- Issue 25: items 8, 9 and 10 (infer), and the input folder --------------------------------------------------

def image_folder(setup, folder, count, start=0):
    folder.mkdir(exist_ok=True)
    source = sorted((setup / "syn" / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))
    for k in range(start, start + count):
        Image.open(source[k % len(source)]).save(folder / f"im{k:02d}.png")
    return folder


def test_a_shard_of_a_grown_list_is_refused(setup, tmp_path):
    """Item 8: the folder grew between the shards; images were never
    segmented and both runs exited 0."""
    inputs = image_folder(setup, tmp_path / "in", 4)
    first = infer(setup, tmp_path / "out", inputs, "--shard", "0/2", "--top-k", "4")
    assert first.returncode == 0, first.stderr[-2000:]
    image_folder(setup, inputs, 2, start=4)
    second = infer(setup, tmp_path / "out", inputs, "--shard", "1/2", "--top-k", "4")
    assert second.returncode == 2, second.stderr[-2000:]
    assert "records shards of another image list (4 images in 2 shards; this is shard 1/2 of 6 images)" \
        in second.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "labels").iterdir()) == ["im00.png", "im01.png"]
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["shards"]["images"] == 4 and record["shards"]["run"] == [0]
    # The same list goes on (the negative case).
    image_folder(setup, tmp_path / "in2", 4)
    assert infer(setup, tmp_path / "out2", tmp_path / "in2", "--shard", "1/2", "--top-k", "4").returncode == 0
    assert infer(setup, tmp_path / "out2", tmp_path / "in2", "--shard", "0/2", "--top-k", "4").returncode == 0
    assert len(list((tmp_path / "out2" / "labels").iterdir())) == 4


def test_concurrent_shards_with_other_settings_are_refused(setup, tmp_path):
    """Item 9: run.json described all labels as CRF'd when only one shard ran the CRF."""
    inputs = image_folder(setup, tmp_path / "in", 4)
    base = [sys.executable, str(ROOT / "tools" / "infer.py"), "--out", str(tmp_path / "out"),
            "--model", str(setup / "deconvnet.prototxt"), "--weights", str(setup / "deconvnet.caffemodel"),
            "--proposal-cache", str(setup / "proposals"), str(inputs), "--top-k", "4"]
    procs = [subprocess.Popen(base + ["--shard", "0/2", "--crf"], stderr=subprocess.PIPE, text=True),
             subprocess.Popen(base + ["--shard", "1/2"], stderr=subprocess.PIPE, text=True)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    for p in procs:
        p.stderr.close()
    codes = [code for code, _ in results]
    assert sorted(codes) == [0, 2], results
    loser = results[codes.index(2)][1]
    assert "records other settings than this run's (crf differ)" in loser and "--overwrite" in loser
    winner_crf = codes.index(0) == 0
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert (record["crf"] is not None) == winner_crf
    assert len(list((tmp_path / "out" / "labels").iterdir())) == 2
    # --overwrite is the way out: the folder is redone with the new settings.
    again = infer(setup, tmp_path / "out", inputs, "--top-k", "4", "--overwrite", *([] if winner_crf else ["--crf"]))
    assert again.returncode == 0, again.stderr[-2000:]
    assert (json.loads((tmp_path / "out" / "run.json").read_text())["crf"] is not None) == (not winner_crf)


@pytest.mark.parametrize("extra, flag, why", [
    (["--ensemble", "mean"], "--ensemble", "without --fcn-weights"),
    (["--fcn-variant", "heavy"], "--fcn-variant", "without --fcn-weights"),
    (["--crf-iterations", "99"], "--crf-iterations", "without --crf"),
    (["--edges", "gradient", "--edge-model", "x.yml.gz"], "--edge-model", "with gradient edges"),
    (["--gpu", "0", "--blas-threads", "1"], "--blas-threads", "with --gpu"),
])
def test_infer_refuses_flags_without_effect(setup, tmp_path, extra, flag, why):
    """Item 10: these were accepted, ignored, and recorded in run.json."""
    inputs = image_folder(setup, tmp_path / "in", 1)
    result = infer(setup, tmp_path / "out", inputs, *extra)
    assert result.returncode == 2 and f"{flag} has no effect {why}" in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "out" / "labels").exists() and not (tmp_path / "out" / "run.json").exists()


def test_webp_and_gif_are_taken_and_other_entries_named(setup, tmp_path):
    """Small items: .webp and .gif were skipped silently in a folder; a
    folder named dir.jpg was reported as an image not found."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    source = sorted((setup / "syn" / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))
    Image.open(source[0]).save(inputs / "a.webp")
    Image.open(source[1]).convert("P").save(inputs / "b.gif")
    (inputs / "notes.txt").write_text("not an image")
    (inputs / "dir.jpg").mkdir()
    result = infer(setup, tmp_path / "out", inputs, "--top-k", "4")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 segmented, 0 already done, 0 failed" in result.stderr
    assert "skipping 2 entries that are not images" in result.stderr and "dir.jpg/, notes.txt" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "labels").iterdir()) == ["a.png", "b.png"]

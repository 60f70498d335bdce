"""tools/infer.py with any of DeconvNet, FCN-8s and DeepLab-LargeFOV
(reduced nets with random weights, synthetic images): one net alone against
its own forward pass and numpy's softmax, the mean ensembles against the
mean of the single nets' probabilities, the rules and refusals."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from deconvnet.data.synthetic import SyntheticSpec, write_dataset

from helpers import ROOT, write

IDS = 3


@pytest.fixture(scope="module")
def nets3(caffe, tmp_path_factory):
    from deconvnet.net import nets
    from deconvnet.net.architecture import Size
    from deconvnet.net.surgery import bilinear_upsampling

    root = tmp_path_factory.mktemp("ensembles")
    write_dataset(root / "syn", SyntheticSpec(num_images=IDS, seed=3, voc_fraction=1.0, val_fraction=0.0))
    rng = np.random.default_rng(0)
    caffe.set_random_seed(2)
    deconvnet = write(root / "deconvnet.prototxt", str(nets.deconvnet_deploy(size=Size(64, 8))))
    net = caffe.Net(str(deconvnet), caffe.TEST)
    for name, params in net.params.items():
        if name.endswith("_bn"):
            params[0].data[...], params[1].data[...], params[2].data[...] = 0, 1, 1
    net.save(str(root / "deconvnet.caffemodel"))
    fcn = write(root / "fcn.prototxt", str(nets.fcn8s_deploy(Size(500, 8))))
    net = caffe.Net(str(fcn), caffe.TEST)
    for params in net.params.values():
        for p in params:
            p.data[...] = rng.normal(0, 0.05, p.data.shape)
    net.save(str(root / "fcn.caffemodel"))
    deeplab = write(root / "deeplab.prototxt", str(nets.deeplab_deploy(Size(513, 8))))
    net = caffe.Net(str(deeplab), caffe.TEST)
    for params in net.params.values():
        for p in params:
            p.data[...] = rng.normal(0, np.sqrt(2.0 / np.prod(p.data.shape[1:])), p.data.shape)
    bilinear_upsampling(net, (nets.DEEPLAB_UPSAMPLE,))
    net.save(str(root / "deeplab.caffemodel"))
    return root


MEMBER = {"deconvnet": ("deconvnet", "deconvnet.caffemodel"), "fcn8s": ("fcn8s", "fcn.caffemodel"),
          "deeplab": ("deeplab-largefov", "deeplab.caffemodel")}
# Only a net that is named gets its prototxt flag: a flag without effect is refused.
PROTOTXT_FLAG = {"deconvnet": "--model", "fcn8s": "--fcn-model", "deeplab": "--deeplab-model"}


def run_members(nets3, out, names, *extra):
    args = []
    for name in names:
        member, weights = MEMBER[name]
        args += ["--ensemble-member", member, nets3 / weights]
    voc = nets3 / "syn" / "VOCdevkit" / "VOC2012"
    files = {"deconvnet": nets3 / "deconvnet.prototxt", "fcn8s": nets3 / "fcn.prototxt",
             "deeplab": nets3 / "deeplab.prototxt"}
    for name in names:
        args += [PROTOTXT_FLAG[name], files[name]]
    cmd = [sys.executable, str(ROOT / "tools" / "infer.py"), "--out", out, "--voc-root", voc, "--split", "train",
           "--proposal-cache", nets3 / "proposals", "--edges", "gradient", "--save-probs", "--workers", "0",
           *args, *extra]
    return subprocess.run(list(map(str, cmd)), capture_output=True, text=True, timeout=900)


def probs_of(out):
    return {p.stem: np.load(p).astype(np.float32) for p in sorted((out / "probs").glob("*.npy"))}


@pytest.fixture(scope="module")
def singles(nets3, tmp_path_factory):
    outs = {}
    for name in MEMBER:
        out = tmp_path_factory.mktemp(f"single_{name}")
        result = run_members(nets3, out, [name])
        assert result.returncode == 0, result.stderr[-3000:]
        outs[name] = out
    return outs


def test_deeplab_alone_is_its_net_and_a_softmax(caffe, nets3, singles):
    from deconvnet.data.voc import read_image

    out = singles["deeplab"]
    run = json.loads((out / "run.json").read_text())
    assert list(run["members"]) == ["deeplab-largefov"] and run["model"] is None and run["fcn"] is None
    assert "ensemble" not in run["recipe"]
    net = caffe.Net(str(nets3 / "deeplab.prototxt"), str(nets3 / "deeplab.caffemodel"), caffe.TEST)
    image_id = sorted(probs_of(out))[0]
    image = read_image(nets3 / "syn" / "VOCdevkit" / "VOC2012" / "JPEGImages" / f"{image_id}.jpg")
    data = (image.astype(np.float32) - np.array([104.00698793, 116.66876762, 122.67891434], np.float32))
    net.blobs["data"].reshape(1, 3, *image.shape[:2])
    net.reshape()
    net.blobs["data"].data[0] = data.transpose(2, 0, 1)
    score = net.forward()["score"][0].astype(np.float64)
    assert score.shape[1:] == image.shape[:2]
    e = np.exp(score - score.max(0))
    want = e / e.sum(0)
    np.testing.assert_allclose(probs_of(out)[image_id], want, atol=2e-3)


@pytest.mark.parametrize("names", [("deconvnet", "deeplab"), ("fcn8s", "deeplab"),
                                   ("deconvnet", "fcn8s", "deeplab")], ids=["D+L", "F+L", "D+F+L"])
def test_mean_ensembles_average_the_single_nets(nets3, singles, tmp_path, names):
    result = run_members(nets3, tmp_path / "out", names)
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["recipe"]["ensemble"] == "mean"
    assert list(run["members"]) == [MEMBER[n][0] for n in names]
    got = probs_of(tmp_path / "out")
    alone = {n: probs_of(singles[n]) for n in names}
    assert len(got) == IDS
    for image_id, probs in got.items():
        want = sum(alone[n][image_id] for n in names) / len(names)
        np.testing.assert_allclose(probs, want, atol=3e-3)   # float16 files
        # Negative: leaving one net out is a different map.
        partial = sum(alone[n][image_id] for n in names[:-1]) / (len(names) - 1)
        assert np.abs(probs - partial).max() > 1e-2


def test_deconvnet_and_fcn_keep_the_recipe_rule(nets3, tmp_path):
    result = run_members(nets3, tmp_path / "out", ("deconvnet", "fcn8s"))
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["recipe"]["ensemble"] == "product" and run["fcn"]["ensemble"] == "product"


def test_deeplab_crf_defaults_and_overrides(nets3, tmp_path):
    from deconvnet.infer.crf import DECONVNET_CRF, DEEPLAB_LARGEFOV_CRF

    result = run_members(nets3, tmp_path / "alone", ("deeplab",), "--crf", "--crf-iterations", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    crf = json.loads((tmp_path / "alone" / "run.json").read_text())["crf"]
    assert (crf["bilateral_sxy"], crf["bilateral_srgb"], crf["bilateral_compat"]) == (121, 5, 4)
    assert crf["iterations"] == 3 and DEEPLAB_LARGEFOV_CRF.iterations == 10
    result = run_members(nets3, tmp_path / "pair", ("deconvnet", "deeplab"), "--crf")
    assert result.returncode == 0, result.stderr[-3000:]
    crf = json.loads((tmp_path / "pair" / "run.json").read_text())["crf"]
    assert crf["bilateral_sxy"] == DECONVNET_CRF.bilateral_sxy != 121


@pytest.mark.parametrize("names, extra, phrase", [
    (("fcn8s", "deeplab"), ["--ensemble", "product"], "not defined for fcn8s + deeplab-largefov"),
    (("deeplab",), ["--ensemble-member", "deeplab-largefov", "x.caffemodel"], "deeplab-largefov given twice"),
    (("deeplab",), ["--ensemble-member", "segnet", "x.caffemodel"], "the nets are deconvnet, fcn8s"),
    (("deeplab",), ["--ensemble", "mean"], "without --fcn-weights or a second --ensemble-member"),
    ((), [], "no net given"),
])
def test_refusals(nets3, tmp_path, names, extra, phrase):
    result = run_members(nets3, tmp_path / "out", names, *extra)
    assert result.returncode == 2 and phrase in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "out" / "labels").exists()


def test_the_variants_of_three_nets_by_hand():
    from deconvnet.infer.crf import DECONVNET_CRF, DEEPLAB_LARGEFOV_CRF
    from deconvnet.infer.ensembles import crf_params, title, variants

    d, f, lf = "deconvnet", "fcn8s", "deeplab-largefov"
    assert variants([lf, f, d]) == [
        ((d,), "alone"), ((f,), "alone"), ((lf,), "alone"),
        ((d, f), "mean"), ((d, f), "product"), ((d, lf), "mean"), ((f, lf), "mean"),
        ((d, f, lf), "mean")]
    assert variants([lf, d]) == [((d,), "alone"), ((lf,), "alone"), ((d, lf), "mean")]
    assert title(((d, f), "product")) == "DeconvNet + FCN-8s (product)"
    assert title(((lf,), "alone")) == "DeepLab-LargeFOV"
    assert crf_params((lf,)) is DEEPLAB_LARGEFOV_CRF and crf_params((d, lf)) is DECONVNET_CRF


def test_variant_labels_follow_numpy():
    from deconvnet.infer.ensembles import variant_labels

    rng = np.random.default_rng(1)
    scores = {n: rng.normal(0, 2, (21, 6, 7)).astype(np.float32) for n in ("deconvnet", "fcn8s", "deeplab-largefov")}
    image = np.zeros((6, 7, 3), np.uint8)

    def soft(x):
        e = np.exp(x - x.max(0))
        return e / e.sum(0)
    mean3 = (soft(scores["deconvnet"]) + soft(scores["fcn8s"]) + soft(scores["deeplab-largefov"])) / 3
    got = variant_labels(image, scores, (("deconvnet", "fcn8s", "deeplab-largefov"), "mean"), crf=False)
    np.testing.assert_array_equal(got, mean3.argmax(0))
    product = soft(scores["deconvnet"] * np.maximum(scores["fcn8s"], 0))
    got = variant_labels(image, scores, (("deconvnet", "fcn8s"), "product"), crf=False)
    np.testing.assert_array_equal(got, product.argmax(0))
    assert not np.array_equal(got, mean3.argmax(0))   # the rules differ on these scores
    alone = variant_labels(image, scores, (("fcn8s",), "alone"), crf=False)
    np.testing.assert_array_equal(alone, scores["fcn8s"].argmax(0))

"""tools/fold_bn.py: BatchNorm and Scale folded into the (de)convolutions
give the unfolded net's scores (Caffe's own unfolded forward pass is the
reference), the committed folded prototxt is the fold of the deploy net,
broken models stop the tool with nothing written, and tools/infer.py labels
a test image alike with the full net folded and unfolded."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from helpers import ROOT, write

FACTOR = 0.37  # Caffe's moving-average factor: stored statistics are divided by it


def randomise(net, rng: np.random.Generator) -> None:
    """He-initialised (de)convolutions with biases, BatchNorm statistics
    stored times FACTOR, and Scale factors and shifts far from 1 and 0."""
    kinds = {name: layer.type for name, layer in zip(net._layer_names, net.layers, strict=True)}
    for name, blobs in net.params.items():
        if kinds[name] == "BatchNorm":
            channels = blobs[0].data.shape[0]
            blobs[0].data[...] = rng.normal(0, 2, channels) * FACTOR
            blobs[1].data[...] = rng.uniform(0.1, 4, channels) * FACTOR
            blobs[2].data[...] = FACTOR
        elif kinds[name] == "Scale":
            blobs[0].data[...] = rng.uniform(0.3, 3, blobs[0].data.shape) * rng.choice([-1, 1], blobs[0].data.shape)
            blobs[1].data[...] = rng.normal(0, 1, blobs[1].data.shape)
        else:
            weight = blobs[0].data
            fan_in = weight.shape[1] * np.prod(weight.shape[2:]) if kinds[name] == "Convolution" \
                else weight.shape[0] * np.prod(weight.shape[2:])
            weight[...] = rng.normal(0, np.sqrt(2 / fan_in), weight.shape)
            if len(blobs) > 1:
                blobs[1].data[...] = rng.normal(0, 0.5, blobs[1].data.shape)


def fold_tool(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "fold_bn.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def reduced(caffe, tmp_path_factory):
    """A reduced deploy net (batch 3) with random non-trivial weights."""
    from deconvnet.net import nets

    root = tmp_path_factory.mktemp("fold")
    model = write(root / "deploy.prototxt", str(nets.deconvnet_deploy(batch=3, size=nets.Size(64, 8))))
    net = caffe.Net(str(model), caffe.TEST)
    randomise(net, np.random.default_rng(5))
    net.save(str(root / "weights.caffemodel"))
    return root


def forward(caffe, model: Path, weights: Path, x: np.ndarray) -> np.ndarray:
    net = caffe.Net(str(model), str(weights), caffe.TEST)
    net.blobs["data"].data[...] = x
    return net.forward()["seg_score"].copy()


def test_folded_scores_equal_the_unfolded(caffe, reduced, tmp_path):
    result = fold_tool("--model", reduced / "deploy.prototxt", "--weights", reduced / "weights.caffemodel",
                       "--out-model", tmp_path / "folded.prototxt", "--out-weights", tmp_path / "folded.caffemodel")
    assert result.returncode == 0, result.stderr
    folded_text = (tmp_path / "folded.prototxt").read_text()
    assert 'type: "BatchNorm"' not in folded_text and 'type: "Scale"' not in folded_text
    assert 'type: "Deconvolution"' in folded_text and 'type: "Convolution"' in folded_text
    x = np.random.default_rng(1).normal(0, 60, (3, 3, 64, 64)).astype(np.float32)
    expected = forward(caffe, reduced / "deploy.prototxt", reduced / "weights.caffemodel", x)
    got = forward(caffe, tmp_path / "folded.prototxt", tmp_path / "folded.caffemodel", x)
    span = float(expected.max() - expected.min())
    assert span > 0 and np.abs(got - expected).max() <= 1e-4 * span


def test_deconvolution_factors_go_along_its_output_axis(caffe, reduced):
    """Scaling a Deconvolution's weights along axis 0, as for a
    Convolution, must be caught: the square decoder layers (64 -> 64)
    would take it silently, so the scores must then differ."""
    from google.protobuf import text_format

    from deconvnet.net.fold_bn import fold_params, plan_folds

    from caffe.proto import caffe_pb2

    param = caffe_pb2.NetParameter()
    text_format.Merge((reduced / "deploy.prototxt").read_text(), param)
    net = caffe.Net(str(reduced / "deploy.prototxt"), str(reduced / "weights.caffemodel"), caffe.TEST)
    params = {name: [b.data.copy() for b in blobs] for name, blobs in net.params.items()}
    kinds = {layer.name: layer.type for layer in param.layer}
    groups = {layer.name: 1 for layer in param.layer}
    folds = plan_folds(param)
    square = [f.conv for f in folds if kinds[f.conv] == "Deconvolution"
              and params[f.conv][0].shape[0] == params[f.conv][0].shape[1]]
    assert square, "the test needs a square Deconvolution"
    right = fold_params(params, kinds, folds, groups)
    name = square[0]
    # The hand-computed fold of that layer: output channel j is axis 1.
    bn = next(f for f in folds if f.conv == name)
    stored_factor = float(params[bn.batchnorm][2][0])  # FACTOR as float32
    mean, var = (params[bn.batchnorm][i].astype(np.float64) / stored_factor for i in (0, 1))
    gamma, beta = (params[bn.scale][i].astype(np.float64) for i in (0, 1))
    factor = gamma / np.sqrt(var + bn.eps)
    # fold_params keeps float32, as the net stores weights: equal to float32 rounding.
    np.testing.assert_allclose(right[name][0], params[name][0] * factor[None, :, None, None], rtol=2e-7)
    np.testing.assert_allclose(right[name][1], (params[name][1] - mean) * factor + beta, rtol=2e-7, atol=1e-6)
    wrong = fold_params(params, {**kinds, name: "Convolution"}, folds, groups)
    assert not np.allclose(wrong[name][0], right[name][0], rtol=1e-3)


def test_committed_folded_prototxt_is_the_fold_of_the_deploy_net(caffe):
    """tools/fold_bn.py's transformation of the committed deploy net gives
    the committed folded net, which tools/make_prototxt.py writes from its
    own NetSpec description."""
    from google.protobuf import text_format

    from deconvnet.net.fold_bn import fold_net_param
    from deconvnet.net.rewrite import plan_rewrites, rewrite_net_param

    from caffe.proto import caffe_pb2

    def read(name: str):
        param = caffe_pb2.NetParameter()
        text_format.Merge((ROOT / "prototxt" / name).read_text(), param)
        return param

    deploy = ROOT / "prototxt" / "deconvnet_deploy.prototxt"
    shapes = {name: tuple(blob.data.shape) for name, blob in caffe.Net(str(deploy), caffe.TEST).blobs.items()}
    folded, folds = fold_net_param(read(deploy.name))
    plan = plan_rewrites(folded, shapes)
    folded = rewrite_net_param(folded, plan)
    committed = read("deconvnet_deploy_folded.prototxt")
    assert len(folds) == 29 and all(f.scale for f in folds)
    # By hand: fc6, fc7 and fc6_deconv as InnerProducts; the decoder's 3x3 deconvolutions
    # whose input has at most their output's channels as convolutions.
    assert plan == {"fc6": "conv-as-fc", "fc7": "conv-as-fc", "fc6_deconv": "deconv-as-fc",
                    **{f"deconv{s}_{k}": "deconv-as-conv" for s, k in
                       ((5, 1), (5, 2), (5, 3), (4, 1), (4, 2), (3, 1), (3, 2), (2, 1), (1, 1), (1, 2))}}
    assert [str(layer) for layer in folded.layer] == [str(layer) for layer in committed.layer]
    assert folded.name == committed.name == "DeconvNet_folded"


BAD_PREDECESSOR = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "pool_bn" type: "BatchNorm" bottom: "pool" top: "pool" batch_norm_param { use_global_stats: true } }
"""


@pytest.mark.parametrize("case", ["missing-batchnorm-blobs", "zero-variance", "negative-variance",
                                  "no-statistics", "after-pooling"])
def test_broken_models_stop_the_tool_and_write_nothing(caffe, reduced, tmp_path, case):
    model, weights = reduced / "deploy.prototxt", tmp_path / "weights.caffemodel"
    message = {"missing-batchnorm-blobs": "has no weights for 29 of the", "zero-variance": "zero, negative",
               "negative-variance": "zero, negative", "no-statistics": "moving-average factor",
               "after-pooling": "written by Pooling 'pool'"}[case]
    if case == "after-pooling":
        model = write(tmp_path / "pool.prototxt", BAD_PREDECESSOR)
        net = caffe.Net(str(model), caffe.TEST)
        net.params["pool_bn"][1].data[...] = net.params["pool_bn"][2].data[...] = 1
        net.save(str(weights))
    elif case == "missing-batchnorm-blobs":
        # The trained weights with their BatchNorm layers taken out of the file.
        from caffe.proto import caffe_pb2

        param = caffe_pb2.NetParameter()
        param.ParseFromString((reduced / "weights.caffemodel").read_bytes())
        kept = [layer for layer in param.layer if layer.type != "BatchNorm"]
        del param.layer[:]
        param.layer.extend(kept)
        weights.write_bytes(param.SerializeToString())
    else:
        net = caffe.Net(str(model), str(reduced / "weights.caffemodel"), caffe.TEST)
        blobs = net.params["deconv3_2_bn"]
        if case == "no-statistics":
            blobs[2].data[...] = 0
        else:
            blobs[1].data[5] = 0 if case == "zero-variance" else -0.25
        net.save(str(weights))
    out = tmp_path / "out"
    result = fold_tool("--model", model, "--weights", weights, "--out-model", out / "folded.prototxt",
                       "--out-weights", out / "folded.caffemodel")
    assert result.returncode == 1, result.stderr
    assert message in result.stderr, result.stderr
    if case in ("zero-variance", "negative-variance", "no-statistics"):
        assert "deconv3_2_bn" in result.stderr
    assert not out.exists() or not list(out.iterdir()), list(out.iterdir())


def test_weights_of_the_other_layout_are_refused(caffe, reduced, tmp_path):
    """Unfolded weights in a folded net would run its convolutions without
    the BatchNorm they need; tools/infer.py names the right prototxt."""
    from deconvnet.net import nets
    from deconvnet.net.weights import WeightsMismatch, load_net

    folded = write(tmp_path / "folded.prototxt", str(nets.deconvnet_deploy(batch=3, size=nets.Size(64, 8),
                                                                           folded=True)))
    with pytest.raises(WeightsMismatch, match="fold them with tools/fold_bn.py"):
        load_net(folded, reduced / "weights.caffemodel", caffe.TEST)


@pytest.mark.slow
def test_full_net_infers_the_same_labels_folded(caffe, tmp_path):
    """The paper's net, random weights: tools/infer.py on one 500x375 test
    image with the folded and the unfolded model."""
    from deconvnet.data.synthetic import SyntheticSpec, render

    deploy = ROOT / "prototxt" / "deconvnet_deploy.prototxt"
    net = caffe.Net(str(deploy), caffe.TEST)
    randomise(net, np.random.default_rng(11))
    net.save(str(tmp_path / "full.caffemodel"))
    del net
    result = fold_tool("--weights", tmp_path / "full.caffemodel", "--out-model", tmp_path / "folded.prototxt",
                       "--out-weights", tmp_path / "folded.caffemodel")
    assert result.returncode == 0, result.stderr
    image = render(0, SyntheticSpec(min_side=375, max_side=375, seed=4))[0]
    cv2.imwrite(str(tmp_path / "test.png"), cv2.resize(image, (500, 375)))
    labels = {}
    for name, model, weights in (("unfolded", deploy, tmp_path / "full.caffemodel"),
                                 ("folded", ROOT / "prototxt" / "deconvnet_deploy_folded.prototxt",
                                  tmp_path / "folded.caffemodel")):
        run = subprocess.run([sys.executable, str(ROOT / "tools" / "infer.py"), str(tmp_path / "test.png"),
                              "--out", str(tmp_path / name), "--model", str(model), "--weights", str(weights),
                              "--top-k", "6", "--proposal-cache", str(tmp_path / "proposals")],
                             capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stderr[-3000:]
        labels[name] = np.array(Image.open(tmp_path / name / "labels" / "test.png"))
    assert labels["folded"].shape == (375, 500)
    assert len(np.unique(labels["unfolded"])) > 1, "random weights gave one label: the comparison would be empty"
    assert (labels["folded"] == labels["unfolded"]).mean() >= 0.999


GROUPED_OUT_OF_PLACE = """
name: "grouped"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 dim: 6 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "c"
        convolution_param { num_output: 6 kernel_size: 3 pad: 1 group: 2 } }
layer { name: "conv_bn" type: "BatchNorm" bottom: "c" top: "c_bn" batch_norm_param { eps: 0.01 } }
layer { name: "conv_scale" type: "Scale" bottom: "c_bn" top: "c_scaled" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "c_scaled" top: "c_scaled" }
layer { name: "deconv" type: "Deconvolution" bottom: "c_scaled" top: "d"
        convolution_param { num_output: 4 kernel_size: 2 stride: 2 group: 2 bias_term: false } }
layer { name: "deconv_bn" type: "BatchNorm" bottom: "d" top: "d" }
layer { name: "out" type: "Convolution" bottom: "d" top: "seg_score"
        convolution_param { num_output: 3 kernel_size: 1 } }
"""


def test_grouped_out_of_place_layers_fold(caffe, tmp_path):
    """Groups on both kinds, a Deconvolution without bias, a BatchNorm with
    no Scale, BatchNorm and Scale out of place: the folded net still gives
    the unfolded scores. A layer reading the pre-BatchNorm blob is refused."""
    model = write(tmp_path / "grouped.prototxt", GROUPED_OUT_OF_PLACE)
    net = caffe.Net(str(model), caffe.TEST)
    randomise(net, np.random.default_rng(3))
    net.save(str(tmp_path / "grouped.caffemodel"))
    result = fold_tool("--model", model, "--weights", tmp_path / "grouped.caffemodel", "--out-model",
                       tmp_path / "folded.prototxt", "--out-weights", tmp_path / "folded.caffemodel")
    assert result.returncode == 0, result.stderr
    x = np.random.default_rng(4).normal(0, 3, (2, 4, 6, 6)).astype(np.float32)
    expected = forward(caffe, model, tmp_path / "grouped.caffemodel", x)
    got = forward(caffe, tmp_path / "folded.prototxt", tmp_path / "folded.caffemodel", x)
    assert np.abs(got - expected).max() <= 1e-4 * float(expected.max() - expected.min())
    reader = GROUPED_OUT_OF_PLACE + ('layer { name: "peek" type: "ReLU" bottom: "c" top: "peek" }\n')
    result = fold_tool("--model", write(tmp_path / "peek.prototxt", reader), "--weights",
                       tmp_path / "grouped.caffemodel", "--out-model", tmp_path / "o" / "f.prototxt",
                       "--out-weights", tmp_path / "o" / "f.caffemodel")
    assert result.returncode == 1 and "peek read c," in result.stderr, result.stderr
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_infer_and_figures_take_the_folded_model(caffe, reduced, tmp_path):
    """The reduced net: tools/infer.py labels synthetic images alike with
    both models, tools/figures.py draws Figure 4 (decoder activations)
    from the folded one, and a caffemodel with the other layout's prototxt
    stops infer with the prototxt to use."""
    from deconvnet.data.synthetic import SyntheticSpec, write_dataset

    write_dataset(tmp_path / "syn", SyntheticSpec(num_images=3, seed=7, voc_fraction=1.0))
    images = tmp_path / "syn" / "VOCdevkit" / "VOC2012" / "JPEGImages"
    folded_model, folded_weights = tmp_path / "folded.prototxt", tmp_path / "folded.caffemodel"
    assert fold_tool("--model", reduced / "deploy.prototxt", "--weights", reduced / "weights.caffemodel",
                     "--out-model", folded_model, "--out-weights", folded_weights).returncode == 0

    def infer(name: str, model: Path, weights: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "tools" / "infer.py"), str(images), "--out",
                               str(tmp_path / name), "--model", str(model), "--weights", str(weights),
                               "--proposal-cache", str(tmp_path / "proposals")],
                              capture_output=True, text=True, timeout=600)

    for name, model, weights in (("unfolded", reduced / "deploy.prototxt", reduced / "weights.caffemodel"),
                                 ("folded", folded_model, folded_weights)):
        result = infer(name, model, weights)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "MiB per proposal" in result.stderr  # the CPU batch was chosen from memory
    same = total = 0
    for path in sorted((tmp_path / "unfolded" / "labels").glob("*.png")):
        a, b = (np.array(Image.open(tmp_path / side / "labels" / path.name)) for side in ("unfolded", "folded"))
        same, total = same + int((a == b).sum()), total + a.size
    assert total and same / total >= 0.999
    figure = subprocess.run([sys.executable, str(ROOT / "tools" / "figures.py"), "fig4",
                             str(sorted(images.glob("*.jpg"))[0]), "--model", str(folded_model), "--weights",
                             str(folded_weights), "--out", str(tmp_path / "fig4.png")],
                            capture_output=True, text=True, timeout=300)
    assert figure.returncode == 0, figure.stderr[-2000:]
    assert cv2.imread(str(tmp_path / "fig4.png")) is not None
    mixed = infer("mixed", reduced / "deploy.prototxt", folded_weights)
    assert mixed.returncode == 2 and "deconvnet_deploy_folded.prototxt" in mixed.stderr, mixed.stderr[-2000:]
    assert not (tmp_path / "mixed" / "labels").exists()


def test_bn_stats_fold_writes_the_folded_model(caffe, tmp_path):
    """tools/bn_stats.py --fold: the statistics re-estimated, then folded;
    its folded net scores as the deploy net with the statistics of a run
    without --fold (same seeded batches)."""
    import json

    from test_seg_data_layer import make_pattern_db

    make_pattern_db(tmp_path / "db", count=6)
    params = dict(source=str(tmp_path / "db"), batch_size=3, crop_size=32, mirror=False, shuffle=False,
                  seed=3, workers=0)
    body = "".join(
        f'layer {{ name: "{name}" type: "{kind}" bottom: "{bottom}" top: "{name}" convolution_param {{ '
        f'num_output: {n} kernel_size: 3 pad: 1 weight_filler {{ type: "msra" }} '
        'bias_filler { type: "gaussian" std: 0.1 } } }\n'
        f'layer {{ name: "{name}_bn" type: "BatchNorm" bottom: "{name}" top: "{name}" }}\n'
        f'layer {{ name: "{name}_scale" type: "Scale" bottom: "{name}" top: "{name}" scale_param {{ bias_term: true '
        'filler { type: "uniform" min: 0.5 max: 2 } bias_filler { type: "gaussian" std: 0.3 } } }\n'
        f'layer {{ name: "{name}_relu" type: "ReLU" bottom: "{name}" top: "{name}" }}\n'
        for name, kind, bottom, n in (("conv1", "Convolution", "data", 4), ("deconv1", "Deconvolution", "conv1", 6)))
    head = ('layer { name: "score" type: "Convolution" bottom: "deconv1" top: "seg_score" '
            'convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "msra" } } }\n')
    data = ('layer { name: "data" type: "Python" top: "data" top: "label" python_param { module: '
            f"\"python_layers.seg_data\" layer: \"SegDataLayer\" param_str: '{json.dumps(params)}' }} }}\n")
    train = write(tmp_path / "train.prototxt", data + body + head)
    deploy = write(tmp_path / "deploy.prototxt", 'layer { name: "data" type: "Input" top: "data" input_param { '
                   "shape { dim: 2 dim: 3 dim: 32 dim: 32 } } }\n" + body + head)
    caffe.set_random_seed(4)
    caffe.Net(str(train), caffe.TRAIN).save(str(tmp_path / "trained.caffemodel"))

    def bn_stats(*extra) -> None:
        result = subprocess.run([sys.executable, str(ROOT / "tools" / "bn_stats.py"), "--model", str(train),
                                 "--weights", str(tmp_path / "trained.caffemodel"), "--batches", "2",
                                 *map(str, extra)], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]

    bn_stats("--out", tmp_path / "stats.caffemodel")
    bn_stats("--out", tmp_path / "out" / "folded.caffemodel", "--fold", "--deploy", deploy)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["folded.caffemodel", "folded.prototxt"]
    x = np.random.default_rng(2).normal(0, 40, (2, 3, 32, 32)).astype(np.float32)
    expected = forward(caffe, deploy, tmp_path / "stats.caffemodel", x)
    got = forward(caffe, tmp_path / "out" / "folded.prototxt", tmp_path / "out" / "folded.caffemodel", x)
    assert 'type: "BatchNorm"' not in (tmp_path / "out" / "folded.prototxt").read_text()
    assert np.abs(got - expected).max() <= 1e-4 * float(expected.max() - expected.min())


# --- Issue 25, items 1 and 14: the four paths, and the outputs as a pair ------------------------------------

def _digest(path: Path) -> bytes:
    import hashlib

    return hashlib.sha256(path.read_bytes()).digest()


@pytest.mark.parametrize("collision", ["out-model=weights", "out-weights=model", "out-model=out-weights",
                                       "out-weights=weights via a link", "model=weights"])
def test_any_two_of_the_four_paths_naming_one_file_are_refused(reduced, tmp_path, collision):
    """Item 1: these went through with exit 0 and replaced a trained caffemodel
    with prototxt text, or the prototxt with weights."""
    import shutil

    model, weights = tmp_path / "deploy.prototxt", tmp_path / "weights.caffemodel"
    shutil.copy(reduced / "deploy.prototxt", model)
    shutil.copy(reduced / "weights.caffemodel", weights)
    (tmp_path / "link.caffemodel").symlink_to(weights)
    paths = {"--model": model, "--weights": weights, "--out-model": tmp_path / "folded.prototxt",
             "--out-weights": tmp_path / "folded.caffemodel"}
    a, b = collision.split(" via")[0].split("=")
    paths[f"--{a}"] = tmp_path / "link.caffemodel" if "link" in collision else paths[f"--{b}"]
    before = {p: _digest(p) for p in (model, weights)}
    result = fold_tool(*[x for flag, path in paths.items() for x in (flag, path)])
    assert result.returncode == 2, result.stderr[-2000:]
    assert "name the same file" in result.stderr and f"--{b}" in result.stderr, result.stderr
    assert {p: _digest(p) for p in (model, weights)} == before
    assert not (tmp_path / "folded.prototxt").exists() and not (tmp_path / "folded.caffemodel").exists()


def test_an_output_that_is_a_folder_stops_before_anything_is_written(reduced, tmp_path):
    """Item 14: it wrote the weights and then died with IsADirectoryError."""
    (tmp_path / "folder.prototxt").mkdir()
    result = fold_tool("--model", reduced / "deploy.prototxt", "--weights", reduced / "weights.caffemodel",
                       "--out-model", tmp_path / "folder.prototxt", "--out-weights", tmp_path / "f.caffemodel")
    assert result.returncode == 2 and "--out-model" in result.stderr and "is a folder" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.prototxt"]


def test_a_fold_killed_between_its_renames_leaves_a_pair_that_is_refused(caffe, reduced, tmp_path):
    """Item 14: a SIGKILL right after the first rename (the prototxt's) of a
    second fold into the same files: the new prototxt now stands beside the
    first fold's weights, and every reader refuses the mix by name."""
    from deconvnet.net.weights import WeightsMismatch, load_net

    out_model, out_weights = tmp_path / "f.prototxt", tmp_path / "f.caffemodel"
    first = fold_tool("--model", reduced / "deploy.prototxt", "--weights", reduced / "weights.caffemodel",
                      "--out-model", out_model, "--out-weights", out_weights)
    assert first.returncode == 0, first.stderr[-2000:]
    load_net(out_model, out_weights, caffe.TEST)                  # the pair as written loads
    # Other weights for the second fold: the same net, other BatchNorm statistics.
    net = caffe.Net(str(reduced / "deploy.prototxt"), str(reduced / "weights.caffemodel"), caffe.TEST)
    net.params["conv1_1_bn"][1].data[...] *= 2
    net.save(str(tmp_path / "other.caffemodel"))
    code = ("import os, signal, sys\n"
            "from deconvnet.common import atomic\n"
            "real = os.replace\n"
            "def replace(src, dst):\n"
            "    real(src, dst)\n"
            "    if str(dst).endswith('.prototxt'):\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\n"
            "atomic.os.replace = replace\n"
            "sys.argv = ['fold_bn.py'] + sys.argv[1:]\n"
            "from tools import fold_bn\n"
            "fold_bn.main(sys.argv[1:])\n")
    killed = subprocess.run([sys.executable, "-c", code, "--model", str(reduced / "deploy.prototxt"),
                             "--weights", str(tmp_path / "other.caffemodel"), "--out-model", str(out_model),
                             "--out-weights", str(out_weights)], cwd=ROOT, capture_output=True, text=True,
                            timeout=600, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert killed.returncode == -9, killed.stderr[-2000:]
    with pytest.raises(WeightsMismatch, match="was written by tools/fold_bn.py for other weights"):
        load_net(out_model, out_weights, caffe.TEST)
    # A rerun writes the pair again (and cleans the killed writer's temporary file).
    again = fold_tool("--model", reduced / "deploy.prototxt", "--weights", tmp_path / "other.caffemodel",
                      "--out-model", out_model, "--out-weights", out_weights)
    assert again.returncode == 0, again.stderr[-2000:]
    load_net(out_model, out_weights, caffe.TEST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.caffemodel", "f.prototxt", "other.caffemodel"]


def test_folding_twice_names_the_net_folded_once(caffe, reduced, tmp_path):
    from google.protobuf import text_format

    from caffe.proto import caffe_pb2

    once = fold_tool("--model", reduced / "deploy.prototxt", "--weights", reduced / "weights.caffemodel",
                     "--out-model", tmp_path / "a.prototxt", "--out-weights", tmp_path / "a.caffemodel")
    twice = fold_tool("--model", tmp_path / "a.prototxt", "--weights", tmp_path / "a.caffemodel",
                      "--out-model", tmp_path / "b.prototxt", "--out-weights", tmp_path / "b.caffemodel")
    assert once.returncode == twice.returncode == 0, twice.stderr[-2000:]
    names = []
    for path in (tmp_path / "a.prototxt", tmp_path / "b.prototxt"):
        param = caffe_pb2.NetParameter()
        text_format.Merge(path.read_text(), param)
        names.append(param.name)
    assert names[0] == names[1] and names[0].endswith("folded") and "folded_folded" not in names[1]

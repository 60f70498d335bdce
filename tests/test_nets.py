"""The generated networks against the paper's Table 2 (hand-copied here, so
the generator is checked against the paper, not against itself)."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import ROOT, write

PROTOTXT = ROOT / "prototxt"

# Table 2 of the paper (docs/PAPER.md, section 1): blob -> (channels, side) at 224 input.
TABLE2 = {
    "conv1_1": (64, 224), "conv1_2": (64, 224), "pool1": (64, 112),
    "conv2_1": (128, 112), "conv2_2": (128, 112), "pool2": (128, 56),
    "conv3_1": (256, 56), "conv3_2": (256, 56), "conv3_3": (256, 56), "pool3": (256, 28),
    "conv4_1": (512, 28), "conv4_2": (512, 28), "conv4_3": (512, 28), "pool4": (512, 14),
    "conv5_1": (512, 14), "conv5_2": (512, 14), "conv5_3": (512, 14), "pool5": (512, 7),
    "fc6": (4096, 1), "fc7": (4096, 1),
    "fc6_deconv": (512, 7), "unpool5": (512, 14),
    "deconv5_1": (512, 14), "deconv5_2": (512, 14), "deconv5_3": (512, 14), "unpool4": (512, 28),
    "deconv4_1": (512, 28), "deconv4_2": (512, 28), "deconv4_3": (256, 28), "unpool3": (256, 56),
    "deconv3_1": (256, 56), "deconv3_2": (256, 56), "deconv3_3": (128, 56), "unpool2": (128, 112),
    "deconv2_1": (128, 112), "deconv2_2": (64, 112), "unpool1": (64, 224),
    "deconv1_1": (64, 224), "deconv1_2": (64, 224), "seg_score": (21, 224),
}
# Unpooling layer -> (values bottom, mask bottom).
UNPOOL_INPUTS = {"unpool5": ("fc6_deconv", "pool5_mask"), "unpool4": ("deconv5_3", "pool4_mask"),
                 "unpool3": ("deconv4_3", "pool3_mask"), "unpool2": ("deconv3_3", "pool2_mask"),
                 "unpool1": ("deconv2_2", "pool1_mask")}


@pytest.fixture(scope="module")
def deploy(caffe):
    return caffe.Net(str(PROTOTXT / "deconvnet_deploy.prototxt"), caffe.TEST)


def layers_of(caffe, path):
    from google.protobuf import text_format

    net = caffe.proto.caffe_pb2.NetParameter()
    text_format.Merge(path.read_text(), net)
    return list(net.layer)


def test_committed_prototxt_matches_generator():
    from deconvnet.net.prototxt import generate, stale_files

    assert stale_files(PROTOTXT) == [], "run tools/make_prototxt.py and commit prototxt/"
    # Nothing committed under prototxt/ that the generator does not write.
    assert sorted(p.name for p in PROTOTXT.glob("*.prototxt")) == sorted(generate())


def test_deploy_blob_shapes_follow_table2(deploy):
    for blob, (channels, side) in TABLE2.items():
        assert deploy.blobs[blob].data.shape == (1, channels, side, side), blob
    for stage in range(1, 6):
        assert deploy.blobs[f"pool{stage}_mask"].data.shape == deploy.blobs[f"pool{stage}"].data.shape
    assert deploy.outputs == ["seg_score"]


def test_unpooling_uses_matching_switches(caffe):
    layers = {layer.name: layer for layer in layers_of(caffe, PROTOTXT / "deconvnet_deploy.prototxt")}
    for name, bottoms in UNPOOL_INPUTS.items():
        assert layers[name].type == "Unpooling"
        assert tuple(layers[name].bottom) == bottoms


def test_parameter_counts(deploy):
    def count(names):
        return sum(p.data.size for n in names for p in deploy.params[n])

    convs = [f"conv{s}_{k}" for s, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for k in range(1, n + 1)]
    deconvs = [n.replace("conv", "deconv") for n in convs]
    assert count(convs) == 14_714_688
    assert count(["fc6"]) == 102_764_544
    assert count(["fc7"]) == 16_781_312
    assert count(["fc6_deconv"]) == 102_760_960
    assert count(deconvs) == 14_749_376
    assert count(["seg_score"]) == 1_365
    learned = [n for n, layer in zip(deploy._layer_names, deploy.layers, strict=True)
               if layer.type in ("Convolution", "Deconvolution")]
    assert count(learned) == 251_772_245
    bns = [n for n, layer in zip(deploy._layer_names, deploy.layers, strict=True) if layer.type == "BatchNorm"]
    assert len(bns) == 29
    assert sum(deploy.params[n][0].data.size for n in bns) == 16_704


@pytest.mark.parametrize("name", ["deconvnet_deploy", "deconvnet_stage1_train", "deconvnet_stage2_test"])
def test_every_conv_has_bn_scale_relu_and_no_dropout(caffe, name):
    layers = layers_of(caffe, PROTOTXT / f"{name}.prototxt")
    types = [layer.type for layer in layers]
    assert "Dropout" not in types
    train = "train" in name
    for i, layer in enumerate(layers):
        if layer.type not in ("Convolution", "Deconvolution") or layer.name == "seg_score":
            continue
        bn, scale, relu = layers[i + 1:i + 4]
        assert (bn.type, scale.type, relu.type) == ("BatchNorm", "Scale", "ReLU"), layer.name
        assert bn.batch_norm_param.use_global_stats is (not train)
        assert scale.scale_param.bias_term
        assert list(bn.top) == list(scale.top) == list(relu.top) == [layer.name]
        assert [(p.lr_mult, p.decay_mult) for p in layer.param] == [(1, 1), (2, 0)]
        if layer.name.startswith(("deconv", "fc6_deconv")):
            assert layer.convolution_param.weight_filler.type == "gaussian"
            assert layer.convolution_param.weight_filler.std == pytest.approx(0.01)
    seg = next(layer for layer in layers if layer.name == "seg_score")
    assert seg.convolution_param.num_output == 21 and seg.convolution_param.kernel_size == [1]
    assert seg.convolution_param.weight_filler.std == pytest.approx(0.01)


@pytest.mark.parametrize("name", ["deconvnet_stage1_train", "deconvnet_stage1_test"])
def test_train_test_data_loss_accuracy(caffe, name):
    import json

    layers = {layer.name: layer for layer in layers_of(caffe, PROTOTXT / f"{name}.prototxt")}
    data = layers["data"]
    assert data.type == "Python" and data.python_param.module == "python_layers.seg_data"
    params = json.loads(data.python_param.param_str)
    assert set(params) == {"source", "batch_size", "crop_size", "mirror", "mean", "shuffle", "seed", "workers"}
    assert params["crop_size"] == 224 and params["batch_size"] == 8
    assert params["mirror"] is ("train" in name)
    assert layers["loss"].loss_param.ignore_label == 255
    if "test" in name:
        assert layers["accuracy"].accuracy_param.ignore_label == 255
    else:
        assert "accuracy" not in layers


def test_solvers_follow_the_paper(caffe):
    import json

    from google.protobuf import text_format

    for stage, stepsize, max_iter in ((1, 9000, 20000), (2, 10000, 40000)):
        s = caffe.proto.caffe_pb2.SolverParameter()
        text_format.Merge((PROTOTXT / f"stage{stage}_solver.prototxt").read_text(), s)
        # The release recipe: 0.0005 / iter_size under this Caffe's decay rule (test_weight_decay.py).
        assert (s.base_lr, s.momentum, s.weight_decay) == pytest.approx((0.01, 0.9, 0.0005 / 8))
        assert (s.lr_policy, s.gamma, s.stepsize, s.max_iter) == ("step", pytest.approx(0.1), stepsize, max_iter)
        assert s.iter_size == 8 and s.snapshot == 2000
        assert s.snapshot_prefix.startswith(f"../runs/stage{stage}/")
        # Relative paths resolve from prototxt/, where the README runs caffe.
        assert (PROTOTXT / s.snapshot_prefix).parent.is_dir()
        assert (PROTOTXT / s.train_net).is_file() and (PROTOTXT / s.test_net[0]).is_file()
        source = json.loads(layers_of(caffe, PROTOTXT / s.train_net)[0].python_param.param_str)["source"]
        assert (PROTOTXT / source).resolve() == ROOT / "data" / "lmdb" / f"stage{stage}_train"
        train_net = layers_of(caffe, PROTOTXT / s.train_net)
        batch = next(layer for layer in train_net if layer.name == "data").python_param.param_str
        assert '"batch_size": 8' in batch  # 8 x iter_size 8 = 64


def input_data(batch: int, side: int):
    from caffe import layers as L

    def data(n):
        n.data = L.Input(shape=dict(dim=[batch, 3, side, side]))
        n.label = L.Input(shape=dict(dim=[batch, 1, side, side]))

    return data


def synthetic_batch(rng, batch: int, side: int):
    data = rng.normal(0, 50, (batch, 3, side, side)).astype(np.float32)
    label = rng.integers(0, 21, (batch, 1, side, side)).astype(np.float32)
    label[:, :, :4] = 255
    return data, label


def full_size_forward_backward(caffe, tmp_path, batch: int, seed: int):
    """The full-size train net on a synthetic batch: (net, loss) after
    forward and backward."""
    from deconvnet.net import nets

    proto = nets.deconvnet_train_test(True, "unused", batch_size=batch, data=input_data(batch, 224))
    net = caffe.Net(str(write(tmp_path / "train.prototxt", str(proto))), caffe.TRAIN)
    data, label = synthetic_batch(np.random.default_rng(seed), batch, 224)
    net.blobs["data"].data[...] = data
    net.blobs["label"].data[...] = label
    loss = float(net.forward()["loss"])
    net.backward()
    return net, loss


@pytest.mark.slow
def test_full_size_train_net_forward_backward(caffe, tmp_path):
    net, loss = full_size_forward_backward(caffe, tmp_path, batch=1, seed=0)
    assert np.isfinite(loss) and loss > 0
    # With one example, BatchNorm normalises fc6 and fc7 (1x1 maps) over a
    # single value, so their output is the constant Scale bias (0): the
    # decoder sees zeros and no gradient reaches any weight. That follows
    # from BatchNorm's definition; training uses 8 examples per pass (x8).
    assert np.all(net.blobs["fc7"].data == 0)
    assert np.abs(net.params["conv1_1"][0].diff).sum() == 0
    assert np.abs(net.params["deconv1_2"][0].diff).sum() == 0


@pytest.mark.slow
def test_full_size_train_net_gradient_reaches_conv1_1(caffe, tmp_path):
    net, loss = full_size_forward_backward(caffe, tmp_path, batch=2, seed=1)
    assert np.isfinite(loss)
    assert np.abs(net.params["conv1_1"][0].diff).sum() > 0
    assert np.abs(net.params["deconv1_2"][0].diff).sum() > 0


def test_reduced_variant_overfits_a_batch(caffe, tmp_path):
    from deconvnet.net import nets

    size = nets.Size(input_size=64, width_divisor=8)
    proto = nets.deconvnet_train_test(True, "unused", batch_size=4, size=size, data=input_data(4, 64))
    net_path = write(tmp_path / "train.prototxt", str(proto))
    solver_path = write(tmp_path / "solver.prototxt", f'net: "{net_path}"\nbase_lr: 0.01\n'
                        'lr_policy: "fixed"\nmomentum: 0.9\nweight_decay: 0.0005\nsolver_mode: CPU\n'
                        "random_seed: 5\n")
    solver = caffe.SGDSolver(str(solver_path))
    assert solver.net.blobs["fc6"].data.shape == (4, 512, 1, 1)  # kernel 64/32 = 2
    assert solver.net.params["fc6"][0].data.shape == (512, 64, 2, 2)
    rng = np.random.default_rng(2)
    data, label = synthetic_batch(rng, 4, 64)
    label = np.where(label == 255, 255, label % 3)  # 3 classes present
    losses = []
    for _ in range(50):
        solver.net.blobs["data"].data[...] = data
        solver.net.blobs["label"].data[...] = label
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses


@pytest.mark.parametrize("height,width", [(375, 500), (333, 217), (224, 224)])
def test_fcn8s_output_matches_input_size(caffe, height, width):
    net = caffe.Net(str(PROTOTXT / "fcn8s_deploy.prototxt"), caffe.TEST)
    net.blobs["data"].reshape(1, 3, height, width)
    net.reshape()
    assert net.blobs["score"].data.shape == (1, 21, height, width)


def test_fcn8s_layout(caffe):
    layers = {layer.name: layer for layer in layers_of(caffe, PROTOTXT / "fcn8s_deploy.prototxt")}
    assert layers["conv1_1"].convolution_param.pad == [100]
    assert [layers[n].crop_param.offset[0] for n in ("score_pool4c", "score_pool3c", "score")] == [5, 9, 31]
    for name in ("upscore2", "upscore_pool4", "upscore8"):
        assert layers[name].type == "Deconvolution"
        assert [p.lr_mult for p in layers[name].param] == [0]
        assert not layers[name].convolution_param.bias_term
    assert layers["fc6"].type == "Convolution" and layers["fc6"].convolution_param.kernel_size == [7]
    assert {"drop6", "drop7"} <= set(layers)
    for name in ("score_fr", "score_pool4", "score_pool3"):
        assert layers[name].convolution_param.num_output == 21
    train = {layer.name: layer for layer in layers_of(caffe, PROTOTXT / "fcn8s_train.prototxt")}
    assert train["data"].python_param.module == "python_layers.fcn_data"
    assert train["loss"].loss_param.ignore_label == 255


def test_forward_macs_counts_the_caffe_net(deploy):
    """architecture.forward_macs (used for the GPU benchmark's TFLOPS)
    against a count from the Caffe net's own weights and blob shapes."""
    from deconvnet.net.architecture import forward_macs

    total = 0
    for name, layer in zip(deploy._layer_names, deploy.layers, strict=True):
        if layer.type == "Convolution":
            spatial = np.prod(deploy.blobs[deploy.top_names[name][0]].data.shape[2:])
        elif layer.type == "Deconvolution":
            spatial = np.prod(deploy.blobs[deploy.bottom_names[name][0]].data.shape[2:])
        else:
            continue
        total += deploy.params[name][0].data.size * int(spatial)
    assert forward_macs() == total


def test_size_rules():
    """Any positive input for FCN-8s; DeconvNet needs a multiple of 32."""
    from deconvnet.net import nets

    assert nets.fcn8s_deploy(nets.Size(100, 8)).layer[0].input_param.shape[0].dim == [1, 3, 100, 100]
    with pytest.raises(ValueError, match="multiple of 32"):
        nets.deconvnet_deploy(size=nets.Size(100, 8))
    with pytest.raises(ValueError, match="divide 64"):
        nets.Size(64, 3)


def test_nets_read_their_data_from_their_own_folder(tmp_path):
    """The committed stage nets name ../data/lmdb/...: relative to prototxt/,
    where plain `caffe train` runs. The tools run from anywhere and read a
    copy with the path made absolute from the net's folder (or --source's)."""
    from google.protobuf import text_format

    from deconvnet.data.layer_params import SegDataParams
    from deconvnet.net.nets import net_reading_from

    from caffe.proto import caffe_pb2

    def source_of(path):
        net = caffe_pb2.NetParameter()
        text_format.Merge(path.read_text(), net)
        return SegDataParams.from_param_str(net.layer[0].python_param.param_str).source

    committed = ROOT / "prototxt" / "deconvnet_stage1_train.prototxt"
    assert source_of(committed) == "../data/lmdb/stage1_train"
    copy = net_reading_from(committed, tmp_path / "net.prototxt")
    assert source_of(copy) == str(ROOT / "data" / "lmdb" / "stage1_train")
    assert source_of(copy) != str(tmp_path.parent / "data" / "lmdb" / "stage1_train")  # not from the cwd
    other = net_reading_from(committed, tmp_path / "other.prototxt", tmp_path / "db")
    assert source_of(other) == str(tmp_path / "db")

"""The 2014 FCN-8s partner (fcn-8s-pascal.caffemodel) in its own layout: a
random caffemodel written in that layout, from the 2014 model's own layer
table and not from our prototxt, loads into the committed deploy net,
and the ensemble with it keeps the image's size for odd sizes, both rules."""
from __future__ import annotations

import numpy as np
import pytest

from deconvnet.common.cli import PROTOTXT
from deconvnet.infer.aggregation import softmax
from deconvnet.infer.models import FCNModel, WeightsMismatch
from deconvnet.infer.pipeline import ensemble
from deconvnet.net.stand_in_weights import write_stand_in

DEPLOY = PROTOTXT / "fcn8s_2014_deploy.prototxt"


@pytest.fixture(scope="module")
def random_2014_model(tmp_path_factory):
    """A random fcn-8s-pascal.caffemodel written from the 2014 model's layer
    table (deconvnet.net.stand_in_weights: V1 format, legacy 4-D blobs),
    independently of our deploy prototxt."""
    return write_stand_in("fcn8s-pascal-2014", tmp_path_factory.mktemp("fcn2014") / "fcn-8s-pascal.caffemodel")


def test_the_stand_in_holds_the_2014_layout(random_2014_model):
    """Decoded by protobuf, not by Caffe: a V1 net (``layers``) with the 2014
    names, types and legacy blob dimensions."""
    from caffe.proto import caffe_pb2

    net = caffe_pb2.NetParameter()
    net.ParseFromString(random_2014_model.read_bytes())
    assert not net.layer and len([layer for layer in net.layers if len(layer.blobs)]) == 21
    assert [layer.name for layer in net.layers].count("crop") == 3  # the skip connections' CROP layers
    layers = {layer.name: layer for layer in net.layers if len(layer.blobs)}
    dims = {name: [(b.num, b.channels, b.height, b.width) for b in layer.blobs] for name, layer in layers.items()}
    assert dims["score2"] == [(21, 21, 4, 4), (1, 1, 1, 21)] and dims["upsample"] == [(21, 21, 16, 16)]
    assert dims["fc6"] == [(4096, 512, 7, 7), (1, 1, 1, 4096)]
    assert layers["score2"].type == caffe_pb2.V1LayerParameter.DECONVOLUTION
    assert layers["score-fr"].type == caffe_pb2.V1LayerParameter.CONVOLUTION
    assert len(layers["fc7"].blobs[0].data) == 4096 * 4096


def test_a_caffemodel_with_other_names_is_refused(caffe, tmp_path):
    """The check can fail: the heavy model's names (score_fr, upscore2) leave
    the 2014 deploy net's score layers unloaded, and loading stops."""
    from deconvnet.net.stand_in_weights import FCN8S_2014_LAYERS, write_v1_caffemodel

    renamed = tuple(layer._replace(name=layer.name.replace("score-fr", "score_fr").replace("score2", "upscore2"))
                    for layer in FCN8S_2014_LAYERS)
    path = write_v1_caffemodel(tmp_path / "other.caffemodel", "FCN-8s", renamed)
    with pytest.raises(WeightsMismatch, match="score-fr"):
        FCNModel(DEPLOY, path)


def test_layout_names_and_blobs(caffe):
    net = caffe.Net(str(DEPLOY), caffe.TEST)
    params = {name: [b.data.shape for b in blobs] for name, blobs in net.params.items()}
    # The 2014 names of the score head; only the first 2x upsampling has a bias.
    assert params["score-fr"] == [(21, 4096, 1, 1), (21,)]
    assert params["score2"] == [(21, 21, 4, 4), (21,)]
    assert params["score4"] == [(21, 21, 4, 4)] and params["upsample"] == [(21, 21, 16, 16)]
    assert params["score-pool4"] == [(21, 512, 1, 1), (21,)] and params["score-pool3"] == [(21, 256, 1, 1), (21,)]
    assert params["fc6"] == [(4096, 512, 7, 7), (4096,)] and params["conv1_1"][0] == (64, 3, 3, 3)
    assert not {"score_fr", "upscore2", "upscore8"} & set(params)


@pytest.mark.parametrize("height, width", [(75, 101), (123, 97)])
def test_ensemble_with_the_2014_model_keeps_odd_sizes(caffe, random_2014_model, height, width):
    fcn = FCNModel(DEPLOY, random_2014_model)
    loaded = fcn.net.params["score2"][1].data
    assert np.abs(loaded).sum() > 0, "the bias of score2 was not loaded from the caffemodel"
    image = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    scores = fcn.scores(image)
    assert scores.shape == (21, height, width)
    deconvnet = np.random.default_rng(1).normal(size=(21, height, width)).astype(np.float32)
    for rule in ("mean", "product"):
        probs = ensemble(deconvnet, scores, rule)
        assert probs.shape == (21, height, width)
        np.testing.assert_allclose(probs.sum(0), 1, rtol=1e-5)
    # The product rule by hand: softmax of DeconvNet scores times max(0, FCN scores).
    np.testing.assert_allclose(ensemble(deconvnet, scores, "product"),
                               softmax(deconvnet * np.where(scores > 0, scores, 0)), rtol=1e-6)

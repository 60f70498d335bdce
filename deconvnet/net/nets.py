"""Network definitions written with caffe.NetSpec: DeconvNet (paper Table 2),
FCN-8s (the public VGG16 PASCAL layout), DeepLab-LargeFOV (the DeepLab
authors' release) and VGG16 (for weight surgery).

Every function returns a NetParameter; ``deconvnet.net.prototxt`` writes them
under ``prototxt/``. Each takes a ``Size`` (input side, channel divisor) for
the reduced variants used by demos and tests; the defaults are the paper's.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from google.protobuf import text_format

from deconvnet.common.constants import NUM_CLASSES, VOID
from deconvnet.common.recipes import DEEPLAB_LARGEFOV, DeepLabRecipe
from deconvnet.data.layer_params import (
    IMAGE_CROP_MODULE,
    SEG_DATA_MODULE,
    FCNDataParams,
    ImageCropParams,
    SegDataParams,
)
from deconvnet.net.architecture import (
    DECODER_BLOCKS,
    DEEPLAB_CONV5_DILATION,
    DEEPLAB_DEPLOY_SIZE,
    DEEPLAB_FC6_DILATION,
    DEEPLAB_FC_WIDTH,
    DEEPLAB_OUTPUT_STRIDE,
    FC_WIDTH,
    FCN_DEPLOY_SIZE,
    VGG_BLOCKS,
    Size,
)

import caffe
from caffe import layers as L
from caffe import params as P
from caffe.proto import caffe_pb2

LEARNED = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]


def _gaussian(std: float = 0.01) -> dict[str, Any]:
    return dict(type="gaussian", std=std)


def _bn_scale_relu(n: caffe.NetSpec, name: str, relu_name: str, global_stats: bool | None) -> None:
    """BatchNorm + Scale (with bias) + ReLU, in place on blob ``name``;
    ReLU alone when ``global_stats`` is None (a folded net: the two are in
    the weights of the layer before, deconvnet.net.fold_bn)."""
    top = getattr(n, name)
    if global_stats is None:
        setattr(n, relu_name, L.ReLU(top, in_place=True))
        return
    setattr(n, f"{name}_bn", L.BatchNorm(top, in_place=True,
                                         batch_norm_param=dict(use_global_stats=global_stats)))
    setattr(n, f"{name}_scale", L.Scale(getattr(n, f"{name}_bn"), in_place=True,
                                        scale_param=dict(bias_term=True)))
    setattr(n, relu_name, L.ReLU(getattr(n, f"{name}_scale"), in_place=True))


def _conv(bottom, num_output: int, kernel: int, pad: int, filler: dict | None = None,
          deconv: bool = False):
    conv_param: dict[str, Any] = dict(num_output=num_output, kernel_size=kernel, pad=pad)
    if filler is not None:
        conv_param.update(weight_filler=filler, bias_filler=dict(type="constant", value=0))
    kind = L.Deconvolution if deconv else L.Convolution
    return kind(bottom, param=LEARNED, convolution_param=conv_param)


def _fc(bottom, num_output: int, transpose: bool = False, **extra):
    fc_param: dict[str, Any] = dict(num_output=num_output, weight_filler=_gaussian(),
                                    bias_filler=dict(type="constant", value=0))
    if transpose:
        fc_param["transpose"] = True
    return L.InnerProduct(bottom, param=LEARNED, inner_product_param=fc_param, **extra)


def _lean_fc(n: caffe.NetSpec, bottom, size: Size) -> None:
    """fc6, fc7 and fc6_deconv of the folded net as InnerProducts (Caffe
    runs a convolution image by image, re-reading fc6's weights for each;
    deconvnet.net.rewrite): fc6_deconv transposed, then reshaped to k x k."""
    k, width = size.fc6_kernel, size.width(512)
    n.fc6 = _fc(bottom, size.width(FC_WIDTH))
    n.relu6 = L.ReLU(n.fc6, in_place=True)
    n.fc7 = _fc(n.fc6, size.width(FC_WIDTH))
    n.relu7 = L.ReLU(n.fc7, in_place=True)
    n.fc6_deconv_flat = _fc(n.fc7, width * k * k, transpose=True, name="fc6_deconv")
    n.fc6_deconv = L.Reshape(n.fc6_deconv_flat, reshape_param=dict(shape=dict(dim=[0, width, k, k])),
                             name="fc6_deconv_reshape")
    n.fc6_deconv_relu = L.ReLU(n.fc6_deconv, in_place=True)


def _deconvnet_body(n: caffe.NetSpec, size: Size, global_stats: bool | None) -> None:
    """conv1_1 ... seg_score on top of blob ``data``; without BatchNorm and
    Scale layers when ``global_stats`` is None."""
    bottom = n.data
    # Encoder: VGG16 convolutions; their weights come from VGG16, but fillers
    # make the net trainable from scratch too.
    for stage, convs, channels in VGG_BLOCKS:
        for k in range(1, convs + 1):
            name = f"conv{stage}_{k}"
            setattr(n, name, _conv(bottom, size.width(channels), 3, 1, _gaussian()))
            _bn_scale_relu(n, name, f"relu{stage}_{k}", global_stats)
            bottom = getattr(n, name)
        pool, mask = L.Pooling(bottom, ntop=2, pool=P.Pooling.MAX, kernel_size=2, stride=2)
        setattr(n, f"pool{stage}", pool)
        setattr(n, f"pool{stage}_mask", mask)
        bottom = pool
    if global_stats is None:
        _lean_fc(n, bottom, size)
    else:
        n.fc6 = _conv(bottom, size.width(FC_WIDTH), size.fc6_kernel, 0, _gaussian())
        _bn_scale_relu(n, "fc6", "relu6", global_stats)
        n.fc7 = _conv(n.fc6, size.width(FC_WIDTH), 1, 0, _gaussian())
        _bn_scale_relu(n, "fc7", "relu7", global_stats)
        # Decoder: the mirror image, unpooling by the encoder's switches.
        n.fc6_deconv = _conv(n.fc7, size.width(512), size.fc6_kernel, 0, _gaussian(), deconv=True)
        _bn_scale_relu(n, "fc6_deconv", "fc6_deconv_relu", global_stats)
    bottom, channels_in = n.fc6_deconv, size.width(512)
    for stage, widths in DECODER_BLOCKS:
        # The output size is stated: kernel and stride alone cannot tell an odd input from
        # the next even one (the layer refuses to guess).
        unpool = L.Unpooling(bottom, getattr(n, f"pool{stage}_mask"), unpooling_param=dict(
            kernel_size=2, stride=2, unpool_size=size.input_size >> (stage - 1)))
        setattr(n, f"unpool{stage}", unpool)
        bottom = unpool
        for k, channels in enumerate(widths, start=1):
            name = f"deconv{stage}_{k}"
            # Folded: a 3x3 stride-1 deconvolution that does not shrink the channels runs as the
            # equivalent convolution (deconvnet.net.rewrite), same padding.
            as_conv = global_stats is None and channels_in <= size.width(channels)
            setattr(n, name, _conv(bottom, size.width(channels), 3, 1, _gaussian(), deconv=not as_conv))
            _bn_scale_relu(n, name, f"deconv{stage}_{k}_relu", global_stats)
            bottom, channels_in = getattr(n, name), size.width(channels)
    n.seg_score = _conv(bottom, NUM_CLASSES, 1, 0, _gaussian())


def _seg_data_layer(n: caffe.NetSpec, params: SegDataParams) -> None:
    n.data, n.label = L.Python(ntop=2, python_param=dict(
        module=SEG_DATA_MODULE, layer="SegDataLayer", param_str=params.to_param_str()))


def seg_data_net(params: SegDataParams) -> caffe.proto.caffe_pb2.NetParameter:
    """A net of SegDataLayer alone (tops ``data`` and ``label``)."""
    n = caffe.NetSpec()
    _seg_data_layer(n, params)
    return n.to_proto()


def deconvnet_deploy(batch: int = 1, size: Size = Size(), folded: bool = False) -> caffe.proto.caffe_pb2.NetParameter:
    """The inference net; ``folded``: with BatchNorm and Scale folded into
    the (de)convolutions and the exact rewrites of deconvnet.net.rewrite,
    as tools/fold_bn.py writes it and its weights."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[batch, 3, size.input_size, size.input_size]))
    _deconvnet_body(n, size, global_stats=None if folded else True)
    return n.to_proto()


DataFn = Callable[[caffe.NetSpec], None]


def dummy_data(batch_size: int, size: Size = Size()) -> DataFn:
    """DummyData in place of the data layer, so that ``caffe train`` and
    ``caffe time`` need no dataset and no Python (the GPU kit's benchmark
    nets). Constant fillers: DummyData refills any other filler on the CPU
    in every pass, which would be timed too; cuDNN's work does not depend
    on the values."""
    def data(n: caffe.NetSpec) -> None:
        shape = [batch_size, 3, size.input_size, size.input_size]
        n.data = L.DummyData(shape=dict(dim=shape), data_filler=dict(type="constant", value=0))
        n.label = L.DummyData(shape=dict(dim=[batch_size, 1, *shape[2:]]),
                              data_filler=dict(type="constant", value=0))
    return data


def deconvnet_train_test(train: bool, source: str, batch_size: int = 8, size: Size = Size(),
                         data: DataFn | None = None,
                         workers: int | None = None) -> caffe.proto.caffe_pb2.NetParameter:
    """The stage-1/2 TRAIN or TEST net. ``data`` may replace the Python data
    layer (tests use DummyData or Input); it must set n.data and n.label."""
    n = caffe.NetSpec()
    if data is None:
        _seg_data_layer(n, SegDataParams.for_phase(source, train, batch_size, size.input_size, workers))
    else:
        data(n)
    _deconvnet_body(n, size, global_stats=not train)
    n.loss = L.SoftmaxWithLoss(n.seg_score, n.label, loss_param=dict(ignore_label=VOID))
    if not train:
        n.accuracy = L.Accuracy(n.seg_score, n.label, accuracy_param=dict(ignore_label=VOID))
    return n.to_proto()


# --- FCN-8s -----------------------------------------------------------------

def _fcn_conv_relu(bottom, num_output: int, kernel: int = 3, pad: int = 1):
    conv = L.Convolution(bottom, param=LEARNED,
                         convolution_param=dict(num_output=num_output, kernel_size=kernel, pad=pad))
    return conv, L.ReLU(conv, in_place=True)


def _score(bottom):
    """A 1x1 class-score layer, zero-initialised as in FCN's surgery."""
    return L.Convolution(bottom, param=LEARNED, convolution_param=dict(
        num_output=NUM_CLASSES, kernel_size=1, pad=0,
        weight_filler=dict(type="constant", value=0), bias_filler=dict(type="constant", value=0)))


def _bilinear_upsample(bottom, factor: int, bias: bool = False):
    """Fixed (lr_mult 0) bilinear Deconvolution; weights set by surgery."""
    conv = dict(num_output=NUM_CLASSES, kernel_size=2 * factor, stride=factor, bias_term=bias,
                weight_filler=dict(type="bilinear"))
    return L.Deconvolution(bottom, param=[dict(lr_mult=0)] * (2 if bias else 1), convolution_param=conv)


# The score head's layer names: the public "heavy" model's (fcn.berkeleyvision.org),
# and the original 2014 fcn-8s-pascal's (FCN authors' model-zoo release; the
# DeconvNet release ensembles with it). In the 2014 layout the first 2x
# upsampling has a bias, the other two have none.
FCN_HEAD_NAMES = {
    "heavy": dict(score_fr="score_fr", up2="upscore2", pool4="score_pool4", pool4c="score_pool4c",
                  fuse4="fuse_pool4", up4="upscore_pool4", pool3="score_pool3", pool3c="score_pool3c",
                  fuse3="fuse_pool3", up8="upscore8"),
    "2014": dict(score_fr="score-fr", up2="score2", pool4="score-pool4", pool4c="score-pool4c",
                 fuse4="score-fused", up4="score4", pool3="score-pool3", pool3c="score-pool3c",
                 fuse3="score-final", up8="upsample"),
}


def _fcn8s_body(n: caffe.NetSpec, size: Size = FCN_DEPLOY_SIZE, head: str = "heavy") -> None:
    bottom = n.data
    for stage, convs, channels in VGG_BLOCKS:
        for k in range(1, convs + 1):
            conv, relu = _fcn_conv_relu(bottom, size.width(channels),
                                        pad=100 if (stage, k) == (1, 1) else 1)
            setattr(n, f"conv{stage}_{k}", conv)
            setattr(n, f"relu{stage}_{k}", relu)
            bottom = relu
        pool = L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=2, stride=2)
        setattr(n, f"pool{stage}", pool)
        bottom = pool
    n.fc6, n.relu6 = _fcn_conv_relu(n.pool5, size.width(FC_WIDTH), kernel=7, pad=0)
    n.drop6 = L.Dropout(n.relu6, dropout_ratio=0.5, in_place=True)
    n.fc7, n.relu7 = _fcn_conv_relu(n.drop6, size.width(FC_WIDTH), kernel=1, pad=0)
    n.drop7 = L.Dropout(n.relu7, dropout_ratio=0.5, in_place=True)
    names = FCN_HEAD_NAMES[head]

    def put(key: str, layer):
        setattr(n, names[key], layer)
        return layer

    score_fr = put("score_fr", _score(n.drop7))
    up2 = put("up2", _bilinear_upsample(score_fr, 2, bias=head == "2014"))
    pool4 = put("pool4", _score(n.pool4))
    pool4c = put("pool4c", L.Crop(pool4, up2, crop_param=dict(axis=2, offset=5)))
    fuse4 = put("fuse4", L.Eltwise(up2, pool4c, operation=P.Eltwise.SUM))
    up4 = put("up4", _bilinear_upsample(fuse4, 2))
    pool3 = put("pool3", _score(n.pool3))
    pool3c = put("pool3c", L.Crop(pool3, up4, crop_param=dict(axis=2, offset=9)))
    fuse3 = put("fuse3", L.Eltwise(up4, pool3c, operation=P.Eltwise.SUM))
    up8 = put("up8", _bilinear_upsample(fuse3, 8))
    n.score = L.Crop(up8, n.data, crop_param=dict(axis=2, offset=31))


def fcn8s_deploy(size: Size = FCN_DEPLOY_SIZE, variant: str = "heavy") -> caffe.proto.caffe_pb2.NetParameter:
    """Any input size: reshape ``data`` before forward (tools do). A
    width_divisor > 1 gives a reduced variant for CPU tests. ``variant``:
    the layer names of the "heavy" model or of the "2014" one."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, size.input_size, size.input_size]))
    _fcn8s_body(n, size, variant)
    return n.to_proto()


def fcn8s_2014_deploy(size: Size = FCN_DEPLOY_SIZE) -> caffe.proto.caffe_pb2.NetParameter:
    return fcn8s_deploy(size, "2014")


def fcn8s_train_val(train: bool, dataset: str, root: str, split: str, data: DataFn | None = None,
                    size: Size = FCN_DEPLOY_SIZE, normalize_loss: bool = False) -> caffe.proto.caffe_pb2.NetParameter:
    """FCN's whole-image training (or ``data``: the demo's reduced FCN-8s
    trains on crops, with a normalised loss)."""
    n = caffe.NetSpec()
    if data is None:
        n.data, n.label = L.Python(ntop=2, python_param=dict(
            module="python_layers.fcn_data", layer="WholeImageDataLayer",
            param_str=FCNDataParams(dataset, root, split, shuffle=train, seed=1337).to_param_str()))
    else:
        data(n)
    _fcn8s_body(n, size)
    # FCN's loss: summed over pixels, not normalised (hence its tiny base_lr).
    n.loss = L.SoftmaxWithLoss(n.score, n.label,
                               loss_param=dict(normalize=normalize_loss, ignore_label=VOID))
    return n.to_proto()


# --- DeepLab-LargeFOV --------------------------------------------------------

# The layer names of the DeepLab authors' release (its VOC classifier is
# fc8_voc12), so their caffemodel loads by name; fc8_interp upsamples.
DEEPLAB_CLASSIFIER = "fc8_voc12"
DEEPLAB_UPSAMPLE = "fc8_interp"


def _dilated_conv_relu(bottom, num_output: int, kernel: int, dilation: int = 1):
    conv_param: dict[str, Any] = dict(num_output=num_output, kernel_size=kernel, pad=dilation * (kernel // 2))
    if dilation > 1:
        conv_param["dilation"] = dilation
    conv = L.Convolution(bottom, param=LEARNED, convolution_param=conv_param)
    return conv, L.ReLU(conv, in_place=True)


def _deeplab_body(n: caffe.NetSpec, size: Size, recipe: DeepLabRecipe = DEEPLAB_LARGEFOV) -> None:
    """conv1_1 ... score on top of blob ``data``. Every max pooling is 3x3
    with padding 1: stride 2 in blocks 1-3, stride 1 in 4 and 5, so the
    scores are at 1/8 and fc8 cell i sits on input pixel 8i."""
    bottom = n.data
    for stage, convs, channels in VGG_BLOCKS:
        dilation = DEEPLAB_CONV5_DILATION if stage == 5 else 1
        for k in range(1, convs + 1):
            conv, relu = _dilated_conv_relu(bottom, size.width(channels), 3, dilation)
            setattr(n, f"conv{stage}_{k}", conv)
            setattr(n, f"relu{stage}_{k}", relu)
            bottom = relu
        pool = L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=3, stride=2 if stage <= 3 else 1, pad=1)
        setattr(n, f"pool{stage}", pool)
        bottom = pool
    n.fc6, n.relu6 = _dilated_conv_relu(n.pool5, size.width(DEEPLAB_FC_WIDTH), 3, DEEPLAB_FC6_DILATION)
    n.drop6 = L.Dropout(n.relu6, dropout_ratio=0.5, in_place=True)
    n.fc7, n.relu7 = _dilated_conv_relu(n.drop6, size.width(DEEPLAB_FC_WIDTH), 1)
    n.drop7 = L.Dropout(n.relu7, dropout_ratio=0.5, in_place=True)
    weights, biases = recipe.fc8_lr_mult
    setattr(n, DEEPLAB_CLASSIFIER, L.Convolution(
        n.drop7, param=[dict(lr_mult=weights, decay_mult=1), dict(lr_mult=biases, decay_mult=0)],
        convolution_param=dict(num_output=NUM_CLASSES, kernel_size=1, weight_filler=_gaussian(),
                               bias_filler=dict(type="constant", value=0))))
    # The release's Interp layer (zoom 8, corners aligned) as a fixed
    # Deconvolution: kernel 2x8 - 1 with padding 7 puts fc8 cell i on output
    # pixel 8i and interpolates linearly between neighbours; surgery sets the
    # kernel (deconvnet.net.surgery.deeplab_head). The crop keeps the input's size.
    s = DEEPLAB_OUTPUT_STRIDE
    setattr(n, DEEPLAB_UPSAMPLE, L.Deconvolution(
        getattr(n, DEEPLAB_CLASSIFIER), param=[dict(lr_mult=0)], convolution_param=dict(
            num_output=NUM_CLASSES, kernel_size=2 * s - 1, stride=s, pad=s - 1, bias_term=False,
            weight_filler=dict(type="bilinear"))))
    n.score = L.Crop(getattr(n, DEEPLAB_UPSAMPLE), n.data, crop_param=dict(axis=2, offset=0))


def deeplab_deploy(size: Size = DEEPLAB_DEPLOY_SIZE) -> caffe.proto.caffe_pb2.NetParameter:
    """Whole images of any size (tools reshape ``data``); ``score`` is at the input's size."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, size.input_size, size.input_size]))
    _deeplab_body(n, size)
    return n.to_proto()


def image_crops(train: bool, voc_root: str, sbd_root: str, recipe: DeepLabRecipe = DEEPLAB_LARGEFOV,
                side: int | None = None, image_set: str | None = None) -> DataFn:
    """The whole-image crop data layer (python_layers/image_crop_data.py):
    TRAIN random mirrored crops from the recipe's image set, TEST VOC 2012
    val padded to the test size, one at a time."""
    params = ImageCropParams(
        image_set=image_set or (recipe.image_set if train else "voc:val"), voc_root=voc_root,
        sbd_root=sbd_root if train else "", batch_size=recipe.batch_per_pass if train else 1,
        crop_size=side or (recipe.crop_size if train else recipe.test_size), random_crop=train,
        mirror=train and recipe.mirror, shuffle=train, seed=1337 if train else 0)

    def data(n: caffe.NetSpec) -> None:
        n.data, n.label = L.Python(ntop=2, python_param=dict(
            module=IMAGE_CROP_MODULE, layer=ImageCropParams.LAYER, param_str=params.to_param_str()))
    return data


def deeplab_train_val(train: bool, voc_root: str, sbd_root: str, recipe: DeepLabRecipe = DEEPLAB_LARGEFOV,
                      size: Size | None = None, image_set: str | None = None,
                      data: DataFn | None = None) -> caffe.proto.caffe_pb2.NetParameter:
    """TRAIN: random mirrored crops of ``recipe.crop_size`` from its image
    set; TEST: VOC 2012 val padded to ``recipe.test_size``, one at a time
    (``image_crops``). The loss is taken on the upsampled scores
    (docs/DEEPLAB.md)."""
    n = caffe.NetSpec()
    size = size or Size(recipe.crop_size if train else recipe.test_size)
    (data or image_crops(train, voc_root, sbd_root, recipe, size.input_size, image_set))(n)
    _deeplab_body(n, size, recipe)
    n.loss = L.SoftmaxWithLoss(n.score, n.label, loss_param=dict(ignore_label=VOID))
    if not train:
        n.accuracy = L.Accuracy(n.score, n.label, accuracy_param=dict(ignore_label=VOID))
    return n.to_proto()


# --- VGG16 ------------------------------------------------------------------

def vgg16_deploy(size: Size = Size()) -> caffe.proto.caffe_pb2.NetParameter:
    """VGG_ILSVRC_16_layers' deploy net (layer names of the public model)."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, size.input_size, size.input_size]))
    bottom = n.data
    for stage, convs, channels in VGG_BLOCKS:
        for k in range(1, convs + 1):
            conv = L.Convolution(bottom, num_output=size.width(channels), kernel_size=3, pad=1)
            setattr(n, f"conv{stage}_{k}", conv)
            setattr(n, f"relu{stage}_{k}", L.ReLU(conv, in_place=True))
            bottom = conv
        pool = L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=2, stride=2)
        setattr(n, f"pool{stage}", pool)
        bottom = pool
    n.fc6 = L.InnerProduct(bottom, num_output=size.width(FC_WIDTH))
    n.relu6 = L.ReLU(n.fc6, in_place=True)
    n.drop6 = L.Dropout(n.fc6, dropout_ratio=0.5, in_place=True)
    n.fc7 = L.InnerProduct(n.fc6, num_output=size.width(FC_WIDTH))
    n.relu7 = L.ReLU(n.fc7, in_place=True)
    n.drop7 = L.Dropout(n.fc7, dropout_ratio=0.5, in_place=True)
    n.fc8 = L.InnerProduct(n.fc7, num_output=1000)
    n.prob = L.Softmax(n.fc8)
    return n.to_proto()


def net_reading_from(net_file: Path, out: Path, source: Path | None = None) -> Path:
    """A copy of a train or test net whose data layers read absolute paths:
    the crop layers ``source`` (or their own made absolute from the net
    file's folder), the whole-image crop layers their dataset roots. The
    committed nets are written to be run from their folder (plain ``caffe
    train``), the tools run them from anywhere."""
    net = caffe_pb2.NetParameter()
    text_format.Merge(net_file.read_text(), net)
    folder = net_file.resolve().parent

    def absolute(path: str) -> str:
        return str((folder / path).resolve()) if path else path
    for layer in net.layer:
        if layer.type != "Python":
            continue
        if layer.python_param.module == SEG_DATA_MODULE:
            params = SegDataParams.from_param_str(layer.python_param.param_str)
            path = str(Path(source).resolve()) if source is not None else absolute(params.source)
            layer.python_param.param_str = replace(params, source=path).to_param_str()
        elif layer.python_param.module == IMAGE_CROP_MODULE:
            crops = ImageCropParams.from_param_str(layer.python_param.param_str)
            layer.python_param.param_str = replace(crops, voc_root=absolute(crops.voc_root),
                                                   sbd_root=absolute(crops.sbd_root)).to_param_str()
    out.write_text(str(net))
    return out


def crop_batch_size(net_file: Path) -> int | None:
    """The batch per pass of a train or test net's data layer (crops or
    whole-image crops), or None."""
    net = caffe_pb2.NetParameter()
    text_format.Merge(net_file.read_text(), net)
    for layer in net.layer:
        if layer.type == "Python" and layer.python_param.module == SEG_DATA_MODULE:
            return SegDataParams.from_param_str(layer.python_param.param_str).batch_size
        if layer.type == "Python" and layer.python_param.module == IMAGE_CROP_MODULE:
            return ImageCropParams.from_param_str(layer.python_param.param_str).batch_size
    return None

"""DeconvNet written in PyTorch, layer for layer as the Caffe net, as the
reference side of the benchmarks. Needs torch (not in requirements.txt:
``pip install torch==2.13.0``)."""
from __future__ import annotations

import torch
from torch import nn

from deconvnet.common.constants import NUM_CLASSES
from deconvnet.net.architecture import DECODER_BLOCKS, FC_WIDTH, VGG_BLOCKS, Size


def _conv_bn_relu(cin: int, cout: int, kernel: int, pad: int, transpose: bool = False) -> nn.Sequential:
    conv = (nn.ConvTranspose2d if transpose else nn.Conv2d)(cin, cout, kernel, padding=pad)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DeconvNet(nn.Module):
    def __init__(self, size: Size = Size()) -> None:
        super().__init__()
        w = size.width
        self.encoder = nn.ModuleList()
        cin = 3
        for _, convs, channels in VGG_BLOCKS:
            block = []
            for _ in range(convs):
                block.append(_conv_bn_relu(cin, w(channels), 3, 1))
                cin = w(channels)
            self.encoder.append(nn.Sequential(*block))
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, 2)
        k = size.fc6_kernel
        self.fc = nn.Sequential(_conv_bn_relu(cin, w(FC_WIDTH), k, 0),
                                _conv_bn_relu(w(FC_WIDTH), w(FC_WIDTH), 1, 0),
                                _conv_bn_relu(w(FC_WIDTH), w(512), k, 0, transpose=True))
        self.decoder = nn.ModuleList()
        cin = w(512)
        for _, widths in DECODER_BLOCKS:
            block = []
            for channels in widths:
                block.append(_conv_bn_relu(cin, w(channels), 3, 1, transpose=True))
                cin = w(channels)
            self.decoder.append(nn.Sequential(*block))
        self.seg_score = nn.Conv2d(cin, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        switches = []
        for block in self.encoder:
            x, idx = self.pool(block(x))
            switches.append(idx)
        x = self.fc(x)
        for block, idx in zip(self.decoder, reversed(switches), strict=True):
            x = block(self.unpool(x, idx))
        return self.seg_score(x)


def fuse_batchnorm(net: nn.Module) -> nn.Module:
    """Folds every eval-mode BatchNorm into the (transposed) convolution
    before it, in place: PyTorch's counterpart of tools/fold_bn.py."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    blocks = [m for m in net.modules() if isinstance(m, nn.Sequential) and len(m) == 3
              and isinstance(m[1], nn.BatchNorm2d)]
    for block in blocks:
        conv, bn = block[0], block[1]
        assert isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(bn, nn.BatchNorm2d)
        block[0] = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))
        block[1] = nn.Identity()
    return net

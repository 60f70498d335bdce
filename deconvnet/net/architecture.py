"""DeconvNet's architecture as data (paper Table 2), shared by the Caffe
net generator and the PyTorch reference used in benchmarks."""
from __future__ import annotations

from dataclasses import dataclass

from deconvnet.common.constants import INPUT_SIZE, NUM_CLASSES

# (stage, number of 3x3 convolutions, channels) for VGG16's five blocks.
VGG_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))
# The mirrored decoder of Table 2: (stage, output channels of each deconvN_k).
DECODER_BLOCKS = ((5, (512, 512, 512)), (4, (512, 512, 256)), (3, (256, 256, 128)),
                  (2, (128, 64)), (1, (64, 64)))
FC_WIDTH = 4096


@dataclass(frozen=True)
class Size:
    """Input side and channel divisor of every generated net: Size() is the
    paper's DeconvNet, Size(64, 8) a reduced one for CPU demos and tests.
    DeconvNet needs a multiple of 32 (its fc6 kernel is the pool5 side);
    FCN-8s takes any input, and its deploy net starts at FCN_DEPLOY_SIZE."""

    input_size: int = INPUT_SIZE
    width_divisor: int = 1

    def __post_init__(self) -> None:
        if self.input_size <= 0:
            raise ValueError(f"input_size must be positive, got {self.input_size}")
        if self.width_divisor < 1 or 64 % self.width_divisor:
            raise ValueError(f"width_divisor must divide 64, got {self.width_divisor}")

    def width(self, channels: int) -> int:
        return channels // self.width_divisor

    @property
    def fc6_kernel(self) -> int:
        if self.input_size % 32:
            raise ValueError(f"DeconvNet's input_size must be a multiple of 32, got {self.input_size}")
        return self.input_size // 32


# FCN-8s reshapes to each image; its deploy net is written for 500x500.
FCN_DEPLOY_SIZE = Size(500)

# DeepLab-LargeFOV (Chen et al., ICLR 2015; docs/DEEPLAB.md): VGG16 whose
# pool4 and pool5 keep the resolution, conv5_x and fc6 dilated, fc6 and fc7
# thinned to 1024 channels. Scores at 1/8 of the input.
DEEPLAB_FC_WIDTH = 1024
DEEPLAB_CONV5_DILATION = 2
DEEPLAB_FC6_DILATION = 12
DEEPLAB_OUTPUT_STRIDE = 8
# Its deploy net is written for the authors' test size (any size runs).
DEEPLAB_DEPLOY_SIZE = Size(513)


def forward_macs(size: Size = Size()) -> int:
    """Multiply-accumulates of one forward pass of one example through the
    convolutions and deconvolutions (everything else is small)."""
    macs, side, cin = 0, size.input_size, 3
    for _, convs, channels in VGG_BLOCKS:
        for _ in range(convs):
            macs += size.width(channels) * cin * 9 * side * side
            cin = size.width(channels)
        side //= 2
    k = size.fc6_kernel
    macs += size.width(FC_WIDTH) * cin * k * k                           # fc6
    macs += size.width(FC_WIDTH) ** 2                                   # fc7
    macs += size.width(FC_WIDTH) * size.width(512) * k * k              # fc6_deconv, 1x1 -> kxk
    cin, side = size.width(512), k
    for _, widths in DECODER_BLOCKS:
        side *= 2
        for channels in widths:
            macs += cin * size.width(channels) * 9 * side * side
            cin = size.width(channels)
    macs += cin * NUM_CLASSES * side * side                              # seg_score
    return macs


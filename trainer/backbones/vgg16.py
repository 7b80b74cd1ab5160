"""VGG16 for SSD300, after the MindSpore zoo's ``ssd_vgg16`` (the original SSD paper's network).

The backbone is VGG16's convolutions (``b1``..``b5``, the names the zoo maps ImageNet
VGG16 weights onto); it returns conv4_3 (stride 8) and pool5 (stride 16, pooled 3x3
with stride 1 as in the paper). SSD's fc6 (3x3, dilation 6) and fc7 (1x1) and the four
extra blocks follow as :func:`vgg16_extras`.

Unlike the zoo, fc6, fc7 and the extra blocks have biases and a ReLU after every
convolution (the zoo's port drops them, leaving seven linear layers in a row; the paper
has them), the 3x3 stride-2 extras pad their input instead of the 1x1 before them
(same sizes), and there is no dropout.
"""
from __future__ import annotations

from mindspore import nn

from trainer.backbones.extras import ExtraLayers, conv_relu_pair

# Output channels of each 3x3 convolution, per block.
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def _block(in_channels: int, channels: tuple[int, ...]) -> nn.SequentialCell:
    layers = []
    for out_channels in channels:
        layers += [nn.Conv2d(in_channels, out_channels, 3, pad_mode="pad", padding=1, has_bias=True), nn.ReLU()]
        in_channels = out_channels
    return nn.SequentialCell(layers)


class VGG16Features(nn.Cell):
    """Input ``[N, 3, H, W]`` -> (conv4_3 ``[N, 512, H/8, W/8]``, pool5 ``[N, 512, H/16, W/16]``), sides rounded up."""

    out_channels = (512, 512)

    def __init__(self):
        super().__init__()
        in_channels = [3] + [channels[-1] for channels in VGG16_BLOCKS[:-1]]
        self.b1, self.b2, self.b3, self.b4, self.b5 = (_block(i, c) for i, c in zip(in_channels, VGG16_BLOCKS))
        # "same" pooling rounds odd sides up (75 -> 38), as the zoo's (Caffe's ceil mode).
        self.pool = nn.MaxPool2d(2, 2, pad_mode="same")
        self.pool5 = nn.MaxPool2d(3, 1, pad_mode="same")

    def construct(self, x):
        x = self.pool(self.b1(x))
        x = self.pool(self.b2(x))
        x = self.pool(self.b3(x))
        conv4_3 = self.b4(x)
        x = self.pool5(self.b5(self.pool(conv4_3)))
        return conv4_3, x


def vgg16_extras() -> ExtraLayers:
    """fc6 + fc7 (1024 channels at stride 16), then conv8_2 (512, stride 2), conv9_2 (256,
    stride 2), conv10_2 and conv11_2 (256, 3x3 without padding): 38, 19, 10, 5, 3, 1 at 300."""
    fc6_fc7 = nn.SequentialCell([
        nn.Conv2d(512, 1024, 3, pad_mode="pad", padding=6, dilation=6, has_bias=True),
        nn.ReLU(),
        nn.Conv2d(1024, 1024, 1, has_bias=True),
        nn.ReLU(),
    ])
    return ExtraLayers([
        fc6_fc7,
        conv_relu_pair(1024, 256, 512, stride=2, padding=1),
        conv_relu_pair(512, 128, 256, stride=2, padding=1),
        conv_relu_pair(256, 128, 256, stride=1, padding=0),
        conv_relu_pair(256, 128, 256, stride=1, padding=0),
    ], taps_kept=1)


VGG16_FEATURE_CHANNELS = (512, 1024, 512, 256, 256, 256)

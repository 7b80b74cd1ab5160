"""MobileNetV1 body for SSD-MobileNetV1-FPN, as the MindSpore zoo's ``MobileNetV1``.

Layers are the zoo's 27 conv-BN-ReLU6 cells (``layers.<i>``; the zoo's ImageNet
checkpoint names them ``network.<i>``). The FPN reads layers 10, 22 and 26: 256, 512 and
1024 channels at strides 8, 16 and 32.
"""
from __future__ import annotations

from mindspore import nn


def conv_bn_relu6(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                  depthwise: bool = False) -> nn.SequentialCell:
    """Conv ("same" padding, no bias) + BatchNorm + ReLU6; depthwise keeps the channels."""
    return nn.SequentialCell([
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, pad_mode="same",
                  group=in_channels if depthwise else 1, has_bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(),
    ])


# (output channels, stride) of each depthwise-separable pair after the stem.
SEPARABLE_LAYERS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


class MobileNetV1Features(nn.Cell):
    """Input ``[N, 3, H, W]`` -> C3 ``[N, 256, H/8]``, C4 ``[N, 512, H/16]``, C5 ``[N, 1024, H/32]``."""

    taps = (10, 22, 26)
    out_channels = (256, 512, 1024)

    def __init__(self):
        super().__init__()
        layers = [conv_bn_relu6(3, 32, 3, 2)]
        in_channels = 32
        for out_channels, stride in SEPARABLE_LAYERS:
            layers.append(conv_bn_relu6(in_channels, in_channels, 3, stride, depthwise=True))
            layers.append(conv_bn_relu6(in_channels, out_channels, 1))
            in_channels = out_channels
        self.layers = nn.CellList(layers)

    def construct(self, x):
        outputs = []
        for layer in self.layers:
            x = layer(x)
            outputs.append(x)
        taps = ()
        for i in self.taps:
            taps += (outputs[i],)
        return taps

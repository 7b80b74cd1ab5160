"""FPN neck of the zoo's SSD-MobileNetV1-FPN and SSD-ResNet50-FPN.

Top-down: a 1x1 lateral convolution per backbone tap (C3, C4, C5 -> 256 channels), each
coarser map upsampled 2x and added to the next finer lateral, then a 3x3 conv-BN-ReLU6
per level (P3, P4, P5). Bottom-up: two 3x3 stride-2 conv-BN-ReLU6 on P5 give P6 and
P7. Five maps of 256 channels at strides 8..128: 80, 40, 20, 10, 5 at 640.
"""
from __future__ import annotations

from mindspore import nn, ops

from trainer.backbones.mobilenet_v1 import conv_bn_relu6


def upsample_2x(x, height: int, width: int):
    """Bilinear 2x upsampling, cropped to ``height x width``.

    Equals the zoo's ``ResizeBilinear`` (no corner alignment, no half-pixel centres)
    when the target is exactly twice the input, i.e. for inputs that are multiples of
    128. Written with slices and concatenations because MindSpore cannot export its
    bilinear resize to ONNX: output row ``2i`` is row ``i``, row ``2i + 1`` the mean of
    rows ``i`` and ``i + 1`` (the last row repeated at the border); the same for columns.
    """
    _, c, h, w = x.shape  # batch left to the reshapes (-1): exported graphs take any batch
    x = ops.concat((x, x[:, :, -1:, :]), axis=2)
    x = ops.stack((x[:, :, :-1, :], (x[:, :, :-1, :] + x[:, :, 1:, :]) / 2), axis=3)
    x = ops.reshape(x, (-1, c, 2 * h, w))
    x = ops.concat((x, x[:, :, :, -1:]), axis=3)
    x = ops.stack((x[:, :, :, :-1], (x[:, :, :, :-1] + x[:, :, :, 1:]) / 2), axis=4)
    x = ops.reshape(x, (-1, c, 2 * h, 2 * w))
    return x[:, :, :height, :width]


class FeaturePyramid(nn.Cell):
    """Backbone taps (fine to coarse) -> ``len(in_channels) + extra_levels`` maps of
    ``channels`` channels, fine to coarse."""

    def __init__(self, in_channels: tuple[int, ...], channels: int = 256, extra_levels: int = 2):
        super().__init__()
        self.lateral_convs = nn.CellList([nn.Conv2d(c, channels, 1, has_bias=True) for c in in_channels])
        self.fpn_convs = nn.CellList([conv_bn_relu6(channels, channels, 3) for _ in in_channels])
        self.extra_convs = nn.CellList([conv_bn_relu6(channels, channels, 3, 2) for _ in range(extra_levels)])
        self.levels = len(in_channels)
        self.out_channels = (channels,) * (len(in_channels) + extra_levels)

    def construct(self, taps):
        laterals = [conv(tap) for conv, tap in zip(self.lateral_convs, taps)]
        merged = laterals[-1]
        top_down = [merged]  # coarse to fine
        for level in range(self.levels - 2, -1, -1):
            target = laterals[level]
            merged = upsample_2x(merged, target.shape[2], target.shape[3]) + target
            top_down.append(merged)
        features = []
        for level in range(self.levels):
            features.append(self.fpn_convs[level](top_down[self.levels - 1 - level]))
        out = features[-1]
        for conv in self.extra_convs:
            out = conv(out)
            features.append(out)
        return features

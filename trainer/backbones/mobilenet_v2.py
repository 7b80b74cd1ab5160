"""MobileNetV2 feature extractor as the MindSpore model zoo's SSD300 uses it.

It returns two maps: the 1x1 expansion of the stride-16 features (the zoo's
``expand_layer_conv_13``, 576 channels at full width) and the stride-32 output.
"""
from __future__ import annotations

from mindspore import nn, ops

from trainer.backbones.extras import ExtraLayers


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` without going below 90% of ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNReLU(nn.SequentialCell):
    """Conv (optionally depthwise via ``groups``) + BatchNorm + ReLU6."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        padding = (kernel_size - 1) // 2
        super().__init__([
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, pad_mode="pad", padding=padding,
                      group=groups, has_bias=False),
            nn.BatchNorm2d(out_channels, eps=1e-3, momentum=0.97),
            nn.ReLU6(),
        ])


class InvertedResidual(nn.Cell):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project (+ identity when shapes allow)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: float, last_relu: bool = False):
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        layers = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(in_channels, hidden, kernel_size=1))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, has_bias=False),
            nn.BatchNorm2d(out_channels, eps=1e-3, momentum=0.97),
        ]
        self.conv = nn.SequentialCell(layers)
        self.use_residual = stride == 1 and in_channels == out_channels
        self.last_relu = nn.ReLU6() if last_relu else None

    def construct(self, x):
        out = self.conv(x)
        if self.use_residual:
            return ops.add(x, out)
        if self.last_relu is not None:
            out = self.last_relu(out)
        return out


# (expansion t, channels c, repeats n, first stride s), as in the MobileNetV2 paper.
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                             (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class MobileNetV2Features(nn.Cell):
    """Input ``[N, 3, H, W]`` -> (``[N, C13, H/16, W/16]``, ``[N, last_channels, H/32, W/32]``)."""

    def __init__(self, width: float = 1.0, last_channels: int = 1280):
        super().__init__()
        in_channels = make_divisible(32 * width)
        layers = [ConvBNReLU(3, in_channels, stride=2)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            out_channels = make_divisible(c * width)
            for i in range(n):
                if len(layers) == 14:
                    # The zoo taps block 13's input through its own 1x1 expansion.
                    self.expand_13 = ConvBNReLU(in_channels, int(round(in_channels * t)), kernel_size=1)
                    self.channels_13 = int(round(in_channels * t))
                layers.append(InvertedResidual(in_channels, out_channels, s if i == 0 else 1, t))
                in_channels = out_channels
        layers.append(ConvBNReLU(in_channels, last_channels, kernel_size=1))
        self.last_channels = last_channels
        self.out_channels = (self.channels_13, last_channels)
        self.features_1 = nn.SequentialCell(layers[:14])
        self.features_2 = nn.SequentialCell(layers[14:])

    def construct(self, x):
        out = self.features_1(x)
        tap = self.expand_13(out)
        return tap, self.features_2(out)


def mobilenet_v2_extras(in_channels: int, extras: list[tuple[int, float]]) -> ExtraLayers:
    """The zoo's ``multi_residual``: stride-2 inverted residuals (with a final ReLU6), one
    per ``(out_channels, expand_ratio)``, after both backbone taps."""
    blocks = []
    for out_channels, ratio in extras:
        blocks.append(InvertedResidual(in_channels, out_channels, 2, ratio, last_relu=True))
        in_channels = out_channels
    return ExtraLayers(blocks, taps_kept=2)

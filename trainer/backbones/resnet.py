"""ResNet bodies: ResNet34 for SSD-ResNet34 and ResNet50 for SSD-ResNet50-FPN.

Names follow the MindSpore zoo's (``conv1``, ``bn1``, ``layer1``..``layer4``; blocks with
``conv1``/``bn1``/…/``down_sample_layer``: its ResNet50 and its SSD-ResNet34 body; its
ResNet34 classifier calls the basic block's norms ``bn1d``/``bn2d``), so that ImageNet
checkpoints map onto ``backbone.`` by prefix. Convolutions pad symmetrically
(``k // 2``), so every stride-2 stage gives ``ceil(side / 2)``.
"""
from __future__ import annotations

from mindspore import nn, ops

from trainer.backbones.extras import ExtraLayers, conv_relu_pair


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    padding = kernel_size // 2
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, pad_mode="pad" if padding else "valid",
                     padding=padding, has_bias=False)


def _bn(channels: int, zero_gamma: bool = False) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.9, gamma_init="zeros" if zero_gamma else "ones")


class BasicBlock(nn.Cell):
    """Two 3x3 convolutions + identity (ResNet18/34).

    The last BatchNorm starts at zero (as in :class:`Bottleneck`; the zoo's ResNet34 starts
    it at one): each block starts as identity, so that activations do not double block by
    block in an untrained network.
    """

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv(in_channels, channels, 3, stride)
        self.bn1 = _bn(channels)
        self.conv2 = _conv(channels, channels, 3)
        self.bn2 = _bn(channels, zero_gamma=True)
        self.relu = nn.ReLU()
        self.down_sample_layer = None
        if stride != 1 or in_channels != channels:
            self.down_sample_layer = nn.SequentialCell([_conv(in_channels, channels, 1, stride), _bn(channels)])

    def construct(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.down_sample_layer is None else self.down_sample_layer(x)
        return self.relu(ops.add(out, identity))


class Bottleneck(nn.Cell):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand x4 + identity (ResNet50+).

    The last BatchNorm starts at zero, as the zoo's, so each block starts as identity.
    """

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = _conv(in_channels, channels, 1)
        self.bn1 = _bn(channels)
        self.conv2 = _conv(channels, channels, 3, stride)
        self.bn2 = _bn(channels)
        self.conv3 = _conv(channels, out_channels, 1)
        self.bn3 = _bn(out_channels, zero_gamma=True)
        self.relu = nn.ReLU()
        self.down_sample_layer = None
        if stride != 1 or in_channels != out_channels:
            self.down_sample_layer = nn.SequentialCell([_conv(in_channels, out_channels, 1, stride), _bn(out_channels)])

    def construct(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.down_sample_layer is None else self.down_sample_layer(x)
        return self.relu(ops.add(out, identity))


class ResNetFeatures(nn.Cell):
    """Stem (7x7/2 conv, 3x3/2 max pool) and three or four stages.

    Stage ``i`` has ``blocks[i]`` blocks of width ``64 * 2**i`` and first stride
    ``strides[i]``; returns the outputs of the stages listed in ``taps`` (0-based).
    """

    def __init__(self, block, blocks: tuple[int, ...], strides: tuple[int, ...], taps: tuple[int, ...]):
        super().__init__()
        if len(blocks) not in (3, 4) or len(strides) != len(blocks):
            raise ValueError(f"3 or 4 stages expected, got blocks {blocks} and strides {strides}")
        self.conv1 = _conv(3, 64, 7, 2)
        self.bn1 = _bn(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, pad_mode="same")
        in_channels = 64
        stages, out_channels = [], []
        for i, (count, stride) in enumerate(zip(blocks, strides)):
            layers = []
            for j in range(count):
                layers.append(block(in_channels, 64 * 2 ** i, stride if j == 0 else 1))
                in_channels = 64 * 2 ** i * block.expansion
            stages.append(nn.SequentialCell(layers))
            out_channels.append(in_channels)
        self.layer1, self.layer2, self.layer3 = stages[:3]
        self.layer4 = stages[3] if len(stages) == 4 else None
        self.taps = taps
        self.out_channels = tuple(out_channels[i] for i in taps)

    def construct(self, x):
        c1 = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(c1)
        c3 = self.layer2(c2)
        outputs = [c2, c3, self.layer3(c3)]
        if self.layer4 is not None:
            outputs.append(self.layer4(outputs[-1]))
        taps = ()
        for i in self.taps:
            taps += (outputs[i],)
        return taps


def resnet34_features() -> ResNetFeatures:
    """The zoo's SSD-ResNet34 body: ResNet34's first three stages, the third without its
    stride, so the output is ``[N, 256, H/8, W/8]``."""
    return ResNetFeatures(BasicBlock, (3, 4, 6), (1, 2, 1), taps=(2,))


def resnet50_features() -> ResNetFeatures:
    """ResNet50 returning C3, C4, C5: ``[N, 512, H/8]``, ``[N, 1024, H/16]``, ``[N, 2048, H/32]``."""
    return ResNetFeatures(Bottleneck, (3, 4, 6, 3), (1, 2, 2, 2), taps=(1, 2, 3))


def resnet34_extras() -> ExtraLayers:
    """The zoo's ``additional_blocks`` after the ResNet34 body: three stride-2 blocks, then
    two unpadded 3x3 ones: 38, 19, 10, 5, 3, 1 at 300."""
    return ExtraLayers([
        conv_relu_pair(256, 256, 512, stride=2, padding=1),
        conv_relu_pair(512, 256, 512, stride=2, padding=1),
        conv_relu_pair(512, 128, 256, stride=2, padding=1),
        conv_relu_pair(256, 128, 256, stride=1, padding=0),
        conv_relu_pair(256, 128, 256, stride=1, padding=0),
    ], taps_kept=1)


RESNET34_FEATURE_CHANNELS = (256, 512, 512, 256, 256, 256)

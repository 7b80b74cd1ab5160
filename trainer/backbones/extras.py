"""SSD's extra feature layers: a chain of blocks on the backbone's last tap."""
from __future__ import annotations

from mindspore import nn


class ExtraLayers(nn.SequentialCell):
    """``taps (t_0, ..., t_k)`` -> ``[t_0, ..., t_{m-1}, e_1, ..., e_n]``.

    Block ``i`` runs on block ``i - 1``'s output (block 1 on ``t_k``) and each output is
    one more feature map; ``taps_kept`` (``m``) is how many of the backbone's taps are
    feature maps themselves (all of them for MobileNetV2 and ResNet34; VGG16's pool5 is
    not, only its conv4_3 is). A ``SequentialCell`` so that the blocks' parameters are
    named ``extras.<i>.…``, as the MobileNetV2 checkpoints already have them.
    """

    def __init__(self, blocks: list[nn.Cell], taps_kept: int):
        super().__init__(blocks)
        self.taps_kept = taps_kept

    def construct(self, taps):
        features = list(taps[:self.taps_kept])
        out = taps[-1]
        for block in self.cell_list:
            out = block(out)
            features.append(out)
        return features


def conv_relu_pair(in_channels: int, mid_channels: int, out_channels: int, stride: int,
                   padding: int) -> nn.SequentialCell:
    """The classic SSD extra block: 1x1 reduce + ReLU, 3x3 (stride, padding) + ReLU.

    Output side ``ceil(side / 2)`` for stride 2 and padding 1; ``side - 2`` for stride 1
    and padding 0.
    """
    return nn.SequentialCell([
        nn.Conv2d(in_channels, mid_channels, 1, has_bias=True),
        nn.ReLU(),
        nn.Conv2d(mid_channels, out_channels, 3, stride, pad_mode="pad" if padding else "valid", padding=padding,
                  has_bias=True),
        nn.ReLU(),
    ])

"""SSD network (extras + multibox head), its loss, and the exportable inference cell.

The training network returns raw ``(loc [N, P, 4], logits [N, P, C])``; the loss is a
separate cell (:class:`SsdLoss`); :class:`SsdInference` adds sigmoid and the box decoder
so that exported models give normalised ``(y0, x0, y1, x1)`` boxes and per-class scores,
which is what the converter checks and the MindX SDK postprocessor expects.
"""
from __future__ import annotations

import math

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Constant

from trainer.backbone import InvertedResidual, MobileNetV2Features

# Focal-loss prior: the classifier starts predicting "object" with probability 0.01,
# which keeps the first steps' loss from being swamped by thousands of easy negatives.
FOCAL_PRIOR_PROBABILITY = 0.01


def _head(in_channels: int, out_channels: int, bias_init: float = 0.0) -> nn.SequentialCell:
    """The zoo's ``_last_conv2d``: 3x3 depthwise + BN + ReLU6 + 1x1 conv with bias."""
    return nn.SequentialCell([
        nn.Conv2d(in_channels, in_channels, 3, pad_mode="same", group=in_channels, has_bias=False),
        nn.BatchNorm2d(in_channels, eps=1e-3, momentum=0.97),
        nn.ReLU6(),
        nn.Conv2d(in_channels, out_channels, 1, has_bias=True, bias_init=Constant(bias_init)),
    ])


class SSD(nn.Cell):
    """SSD with a MobileNetV2 backbone.

    ``extras`` is a list of ``(out_channels, expand_ratio)`` for the stride-2 inverted
    residuals that add feature maps after the backbone's two. Output: ``loc [N, P, 4]``
    offsets and ``logits [N, P, num_classes]`` (column 0 = background), priors ordered by
    level, then row, column and box within the cell.
    """

    def __init__(self, backbone: MobileNetV2Features, extras: list[tuple[int, float]],
                 boxes_per_cell: tuple[int, ...], num_classes: int):
        super().__init__()
        self.backbone = backbone
        channels = [backbone.channels_13, backbone.last_channels]
        blocks = []
        for out_channels, ratio in extras:
            blocks.append(InvertedResidual(channels[-1], out_channels, 2, ratio, last_relu=True))
            channels.append(out_channels)
        if len(channels) != len(boxes_per_cell):
            raise ValueError(f"{len(channels)} feature maps but {len(boxes_per_cell)} prior levels")
        self.extras = nn.CellList(blocks)
        cls_bias = -math.log((1 - FOCAL_PRIOR_PROBABILITY) / FOCAL_PRIOR_PROBABILITY)
        self.loc_heads = nn.CellList([_head(c, 4 * n) for c, n in zip(channels, boxes_per_cell)])
        self.cls_heads = nn.CellList([_head(c, num_classes * n, cls_bias) for c, n in zip(channels, boxes_per_cell)])
        self.num_classes = num_classes

    def _flatten(self, maps, depth):
        flat = [ops.reshape(ops.transpose(m, (0, 2, 3, 1)), (m.shape[0], -1, depth)) for m in maps]
        return ops.concat(flat, axis=1)

    def construct(self, x):
        tap, out = self.backbone(x)
        features = [tap, out]
        for block in self.extras:
            out = block(out)
            features.append(out)
        loc = [head(f) for head, f in zip(self.loc_heads, features)]
        cls = [head(f) for head, f in zip(self.cls_heads, features)]
        return self._flatten(loc, 4), self._flatten(cls, self.num_classes)


class SsdLoss(nn.Cell):
    """Sigmoid focal classification loss + SmoothL1 on positives, over the number of positives.

    Inputs: images ``[N, 3, H, W]``, ``gt_loc [N, P, 4]``, ``gt_label [N, P]`` int32
    (0 = background), ``num_positives [N]`` int32. Returns a scalar.

    The focal loss covers the object columns only (a negative prior has all-zero targets),
    as in RetinaNet. The zoo also trains column 0 towards "background" on every negative
    prior; with thousands of negatives per positive that term dominates the loss and, on
    short CPU runs, kept the object classifier from learning at all. Column 0 stays in the
    output for the MindX SDK postprocessor, which skips it, as ours does.
    """

    def __init__(self, network: SSD, gamma: float = 2.0, alpha: float = 0.75):
        super().__init__()
        self.network = network
        self.gamma = gamma
        self.alpha = alpha
        self.smooth_l1 = nn.SmoothL1Loss()
        column_weight = np.ones(network.num_classes, np.float32)
        column_weight[0] = 0.0
        self.column_weight = Tensor(column_weight)

    def construct(self, images, gt_loc, gt_label, num_positives):
        loc, logits = self.network(images)
        positives = ops.cast(gt_label > 0, loc.dtype)
        total_positives = ops.maximum(ops.reduce_sum(ops.cast(num_positives, loc.dtype)), 1.0)
        loc_loss = ops.reduce_mean(self.smooth_l1(loc, gt_loc), -1) * positives

        target = ops.one_hot(gt_label, self.network.num_classes, Tensor(1.0, logits.dtype), Tensor(0.0, logits.dtype))
        cross_entropy = ops.binary_cross_entropy_with_logits(
            logits, target, ops.ones_like(logits), ops.ones_like(logits), reduction="none")
        probability = ops.sigmoid(logits)
        p_t = target * probability + (1 - target) * (1 - probability)
        weight = target * self.alpha + (1 - target) * (1 - self.alpha)
        focal = ops.pow(1 - p_t, self.gamma) * weight * cross_entropy * self.column_weight
        return (ops.reduce_sum(focal) + ops.reduce_sum(loc_loss)) / total_positives


class SsdInference(nn.Cell):
    """Network + sigmoid + box decoder: ``[N, 3, H, W]`` -> (boxes ``[N, P, 4]``, scores ``[N, P, C]``).

    Boxes are normalised ``(y0, x0, y1, x1)`` clipped to ``[0, 1]``, as the zoo's
    ``SsdInferWithDecoder``.
    """

    def __init__(self, network: SSD, priors: np.ndarray, prior_scaling: tuple[float, float]):
        super().__init__()
        self.network = network
        self.prior_centre = Parameter(Tensor(priors[None, :, :2]), name="prior_centre", requires_grad=False)
        self.prior_size = Parameter(Tensor(priors[None, :, 2:]), name="prior_size", requires_grad=False)
        self.scale_centre = prior_scaling[0]
        self.scale_size = prior_scaling[1]

    def construct(self, x):
        loc, logits = self.network(x)
        d_centre, d_size = ops.split(loc, 2, axis=-1)
        centre = d_centre * self.scale_centre * self.prior_size + self.prior_centre
        size = ops.exp(d_size * self.scale_size) * self.prior_size
        corners = ops.concat((centre - size / 2.0, centre + size / 2.0), axis=-1)
        boxes = ops.minimum(ops.maximum(corners, 0.0), 1.0)
        return boxes, ops.sigmoid(logits)

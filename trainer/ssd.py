"""The SSD network, its multibox heads and loss, and the exportable inference cell.

``SSD(backbone, extras, loc_heads, cls_heads)``: the backbone returns its taps, the
extras turn them into L feature maps, and the two heads turn those into
``loc [N, P, 4]`` and ``logits [N, P, num_classes]`` (column 0 = background), priors
ordered by level, then row, column and box within the cell. The loss is a separate cell
(:class:`SsdLoss`); :class:`SsdInference` adds sigmoid and the box decoder so that
exported models give normalised ``(y0, x0, y1, x1)`` boxes and per-class scores, which
is what the converter checks and the MindX SDK postprocessor expects.
"""
from __future__ import annotations

import math

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Constant

# Focal-loss prior: the classifier starts predicting "object" with probability 0.01,
# which keeps the first steps' loss from being swamped by thousands of easy negatives.
FOCAL_PRIOR_PROBABILITY = 0.01
CLS_BIAS_INIT = -math.log((1 - FOCAL_PRIOR_PROBABILITY) / FOCAL_PRIOR_PROBABILITY)
DEFAULT_FOCAL_ALPHA = 0.75


def _flatten_levels(maps, values_per_box: int):
    """``[N, B*V, H, W]`` per level -> ``[N, sum(H*W*B), V]`` in (level, row, column, box) order.

    The batch axis is left to the reshape (-1), so that an exported graph takes any batch
    size (ATC's static and dynamic batch conversions rely on it).
    """
    flat = [ops.reshape(ops.transpose(m, (0, 2, 3, 1)), (-1, m.shape[1] * m.shape[2] * m.shape[3] // values_per_box,
                                                         values_per_box)) for m in maps]
    return ops.concat(flat, axis=1)


def depthwise_predictor(in_channels: int, out_channels: int, bias_init: float = 0.0) -> nn.SequentialCell:
    """The zoo's ``_last_conv2d``: 3x3 depthwise + BN + ReLU6 + 1x1 conv with bias."""
    return nn.SequentialCell([
        nn.Conv2d(in_channels, in_channels, 3, pad_mode="same", group=in_channels, has_bias=False),
        nn.BatchNorm2d(in_channels, eps=1e-3, momentum=0.97),
        nn.ReLU6(),
        nn.Conv2d(in_channels, out_channels, 1, has_bias=True, bias_init=Constant(bias_init)),
    ])


class LevelHeads(nn.SequentialCell):
    """One predictor per feature map (the zoo's ``MultiBox``): L maps -> ``[N, P, values_per_box]``.

    Parameters are named ``<attribute>.<level>.…`` (``loc_heads.0.…``).
    """

    def __init__(self, in_channels: tuple[int, ...], boxes_per_cell: tuple[int, ...], values_per_box: int,
                 bias_init: float = 0.0):
        if len(in_channels) != len(boxes_per_cell):
            raise ValueError(f"{len(in_channels)} feature maps but {len(boxes_per_cell)} prior levels")
        super().__init__([depthwise_predictor(c, n * values_per_box, bias_init)
                          for c, n in zip(in_channels, boxes_per_cell)])
        self.values_per_box = values_per_box

    def construct(self, features):
        return _flatten_levels([head(f) for head, f in zip(self.cell_list, features)], self.values_per_box)


class WeightSharedHead(nn.Cell):
    """The zoo's ``WeightSharedMultiBox`` for one output (the FPN variants).

    A tower of ``tower_layers`` 3x3 convolutions shared by all levels, each followed by a
    BatchNorm of the level's own (``norms.<level>.<layer>``) and ReLU6, then a 3x3
    predictor shared by all levels. L maps of ``channels`` channels -> ``[N, P, values_per_box]``.
    """

    def __init__(self, channels: int, levels: int, boxes_per_cell: int, values_per_box: int,
                 tower_layers: int = 4, bias_init: float = 0.0):
        super().__init__()
        self.tower = nn.CellList([nn.Conv2d(channels, channels, 3, pad_mode="same", has_bias=True)
                                  for _ in range(tower_layers)])
        self.norms = nn.CellList([
            nn.CellList([nn.BatchNorm2d(channels, eps=1e-3, momentum=0.97) for _ in range(tower_layers)])
            for _ in range(levels)
        ])
        self.predictor = nn.Conv2d(channels, boxes_per_cell * values_per_box, 3, pad_mode="same", has_bias=True,
                                   bias_init=Constant(bias_init))
        self.relu6 = nn.ReLU6()
        self.levels = levels
        self.tower_layers = tower_layers
        self.values_per_box = values_per_box

    def construct(self, features):
        maps = []
        for level in range(self.levels):
            x = features[level]
            norms = self.norms[level]
            for layer in range(self.tower_layers):
                x = self.relu6(norms[layer](self.tower[layer](x)))
            maps.append(self.predictor(x))
        return _flatten_levels(maps, self.values_per_box)


class SSD(nn.Cell):
    """``backbone`` (taps) -> ``extras`` (L feature maps) -> ``loc_heads``, ``cls_heads``.

    ``backbone`` is the part an ImageNet checkpoint maps onto; ``extras`` the extra
    layers or FPN; the heads map the L maps to ``loc [N, P, 4]`` and
    ``logits [N, P, num_classes]``. ``focal_alpha`` is the α :class:`SsdLoss` uses when
    given none (``build_ssd`` sets the recipe's).
    """

    def __init__(self, backbone: nn.Cell, extras: nn.Cell, loc_heads: nn.Cell, cls_heads: nn.Cell,
                 focal_alpha: float = DEFAULT_FOCAL_ALPHA):
        super().__init__()
        if loc_heads.values_per_box != 4:
            raise ValueError(f"loc_heads must predict 4 values per box, not {loc_heads.values_per_box}")
        self.backbone = backbone
        self.extras = extras
        self.loc_heads = loc_heads
        self.cls_heads = cls_heads
        self.num_classes = cls_heads.values_per_box
        self.focal_alpha = focal_alpha

    def construct(self, x):
        features = self.extras(self.backbone(x))
        return self.loc_heads(features), self.cls_heads(features)


class SsdLoss(nn.Cell):
    """Sigmoid focal classification loss + SmoothL1 on positives, over the number of positives.

    Inputs: images ``[N, 3, H, W]``, ``gt_loc [N, P, 4]``, ``gt_label [N, P]`` int32
    (0 = background), ``num_positives [N]`` int32. Returns a scalar. ``alpha`` defaults
    to the network's ``focal_alpha`` (the recipe's: 0.75 for SSD300, 0.25 for the FPN
    variants).

    The focal loss covers the object columns only (a negative prior has all-zero targets),
    as in RetinaNet. The zoo also trains column 0 towards "background" on every negative
    prior; with thousands of negatives per positive that term dominates the loss and, on
    short CPU runs, kept the object classifier from learning at all. Column 0 stays in the
    output for the MindX SDK postprocessor, which skips it, as ours does.
    """

    def __init__(self, network: SSD, gamma: float = 2.0, alpha: float | None = None):
        super().__init__()
        self.network = network
        self.gamma = gamma
        self.alpha = getattr(network, "focal_alpha", DEFAULT_FOCAL_ALPHA) if alpha is None else alpha
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

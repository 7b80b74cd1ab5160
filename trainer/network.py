"""Build the MindSpore cells of a recipe.

:data:`NETWORKS` maps ``recipe.network`` to a builder ``(recipe, num_classes) -> SSD``;
each builder puts a backbone, its extras and the heads together.

Parameter-name prefixes: ``backbone.`` (what an ImageNet checkpoint maps onto),
``extras.`` (extra layers or FPN), ``loc_heads.`` and ``cls_heads.`` (per level,
``loc_heads.<level>.…``, or weight-shared, ``loc_heads.tower.…``).
"""
from __future__ import annotations

from ssdstack.detection.priors import prior_boxes
from ssdstack.recipes import Recipe
from trainer.backbones.fpn import FeaturePyramid
from trainer.backbones.mobilenet_v1 import MobileNetV1Features
from trainer.backbones.mobilenet_v2 import MobileNetV2Features, mobilenet_v2_extras
from trainer.backbones.resnet import RESNET34_FEATURE_CHANNELS, resnet34_extras, resnet34_features, resnet50_features
from trainer.backbones.vgg16 import VGG16_FEATURE_CHANNELS, VGG16Features, vgg16_extras
from trainer.ssd import CLS_BIAS_INIT, SSD, LevelHeads, SsdInference, WeightSharedHead


def _level_heads_ssd(recipe: Recipe, num_classes: int, backbone, extras, channels: tuple[int, ...]) -> SSD:
    boxes = recipe.priors.boxes_per_cell()
    return SSD(backbone, extras,
               LevelHeads(channels, boxes, 4),
               LevelHeads(channels, boxes, num_classes, bias_init=CLS_BIAS_INIT),
               focal_alpha=recipe.focal_alpha)


def _mobilenet_v2(recipe: Recipe, num_classes: int) -> SSD:
    backbone = MobileNetV2Features(width=recipe.width, last_channels=recipe.last_channels)
    extras = mobilenet_v2_extras(recipe.last_channels, list(recipe.extras))
    channels = backbone.out_channels + tuple(c for c, _ in recipe.extras)
    return _level_heads_ssd(recipe, num_classes, backbone, extras, channels)


def _vgg16(recipe: Recipe, num_classes: int) -> SSD:
    return _level_heads_ssd(recipe, num_classes, VGG16Features(), vgg16_extras(), VGG16_FEATURE_CHANNELS)


def _resnet34(recipe: Recipe, num_classes: int) -> SSD:
    return _level_heads_ssd(recipe, num_classes, resnet34_features(), resnet34_extras(), RESNET34_FEATURE_CHANNELS)


def _fpn_ssd(recipe: Recipe, num_classes: int, backbone) -> SSD:
    extras = FeaturePyramid(backbone.out_channels, channels=256, extra_levels=2)
    levels, boxes = len(extras.out_channels), recipe.priors.boxes_per_cell()[0]
    return SSD(backbone, extras,
               WeightSharedHead(256, levels, boxes, 4),
               WeightSharedHead(256, levels, boxes, num_classes, bias_init=CLS_BIAS_INIT),
               focal_alpha=recipe.focal_alpha)


def _mobilenet_v1_fpn(recipe: Recipe, num_classes: int) -> SSD:
    return _fpn_ssd(recipe, num_classes, MobileNetV1Features())


def _resnet50_fpn(recipe: Recipe, num_classes: int) -> SSD:
    return _fpn_ssd(recipe, num_classes, resnet50_features())


NETWORKS = {
    "mobilenet_v2": _mobilenet_v2,
    "vgg16": _vgg16,
    "resnet34": _resnet34,
    "mobilenet_v1_fpn": _mobilenet_v1_fpn,
    "resnet50_fpn": _resnet50_fpn,
}


def build_ssd(recipe: Recipe, num_classes: int) -> SSD:
    """``num_classes`` counts the background: K object classes -> K + 1."""
    try:
        builder = NETWORKS[recipe.network]
    except KeyError:
        raise ValueError(f"unknown network {recipe.network!r}; choose one of {sorted(NETWORKS)}") from None
    return builder(recipe, num_classes)


def build_inference(network: SSD, recipe: Recipe) -> SsdInference:
    return SsdInference(network, prior_boxes(recipe.priors), recipe.priors.prior_scaling)

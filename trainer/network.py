"""Build the MindSpore cells of a recipe."""
from __future__ import annotations

from ssdstack.detection.priors import prior_boxes
from trainer.backbone import MobileNetV2Features
from trainer.recipes import Recipe
from trainer.ssd import SSD, SsdInference


def build_ssd(recipe: Recipe, num_classes: int) -> SSD:
    """``num_classes`` counts the background: K object classes -> K + 1."""
    backbone = MobileNetV2Features(width=recipe.width, last_channels=recipe.last_channels)
    return SSD(backbone, list(recipe.extras), recipe.priors.boxes_per_cell(), num_classes)


def build_inference(network: SSD, recipe: Recipe) -> SsdInference:
    return SsdInference(network, prior_boxes(recipe.priors), recipe.priors.prior_scaling)

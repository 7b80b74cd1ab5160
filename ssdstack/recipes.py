"""Model recipes: small builder functions, looked up by name in :data:`ARCHITECTURES`.

A recipe fixes the network's shape (family, input size, priors) and its loss settings.
Training hyper-parameters have per-recipe defaults (from the MindSpore model zoo's
configs) that a job spec may override. ``recipe.network`` names the builder in
:data:`trainer.network.NETWORKS`; this module stays MindSpore-free.

Every builder takes ``image_size``: ``None`` is the zoo's size; a smaller one gives the
same network (same parameters) at that input, with feature-map sizes worked out from
the network's strides and the priors laid out on them -- for tests and CPU runs.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ssdstack.detection.priors import AnyPriorConfig, GridAnchorConfig, PriorConfig

# ImageNet statistics on RGB 0..255, as the zoo's SSD normalises.
MEAN_RGB = (123.675, 116.28, 103.53)
STD_RGB = (58.395, 57.12, 57.375)
SSD300_POSTPROCESS = {"score_threshold": 0.1, "iou_threshold": 0.6, "max_detections": 100}
FPN_STEPS = (8, 16, 32, 64, 128)


@dataclass(frozen=True)
class TrainDefaults:
    epochs: int
    batch_size: int
    lr: float
    warmup_epochs: float
    weight_decay: float = 1.5e-4
    momentum: float = 0.9
    loss_scale: float = 1024.0


@dataclass(frozen=True)
class Recipe:
    architecture: str
    network: str  # key of trainer.network.NETWORKS
    image_size: int
    priors: AnyPriorConfig
    train: TrainDefaults
    width: float = 1.0  # MobileNetV2 only: channel multiplier
    last_channels: int = 1280  # MobileNetV2 only: channels of the last 1x1 conv
    extras: tuple[tuple[int, float], ...] = ()  # MobileNetV2 only: (out_channels, expand_ratio)
    focal_alpha: float = 0.75
    focal_gamma: float = 2.0
    clip_global_norm: bool = False  # the zoo clips gradients to global norm 1 (FPN variants)
    mean: tuple[float, float, float] = MEAN_RGB
    std: tuple[float, float, float] = STD_RGB
    match_threshold: float = 0.5
    postprocess: dict = field(default_factory=lambda: dict(SSD300_POSTPROCESS))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["priors"] = self.priors.to_dict()
        return data


def _ceil_div(side: int, stride: int) -> int:
    return -(-side // stride)


def _check_sizes(architecture: str, image_size: int, sizes: list[int]) -> tuple[int, ...]:
    if min(sizes) < 1:
        raise ValueError(f"{architecture}: image_size {image_size} is too small (feature maps {sizes})")
    return tuple(sizes)


def mobilenet_v2_feature_sizes(image_size: int) -> tuple[int, ...]:
    """Strides 16 and 32, then four stride-2 blocks (padded: sides round up)."""
    sizes = [_ceil_div(image_size, 16), _ceil_div(image_size, 32)]
    while len(sizes) < 6:
        sizes.append(_ceil_div(sizes[-1], 2))
    return _check_sizes("mobilenet_v2", image_size, sizes)


def ssd300_feature_sizes(image_size: int) -> tuple[int, ...]:
    """VGG16 and ResNet34 alike: stride 8, three stride-2 levels, then two unpadded 3x3
    levels (-2 each): 38, 19, 10, 5, 3, 1 at 300; needs an input of at least 257."""
    sizes = [_ceil_div(image_size, 8)]
    for _ in range(3):
        sizes.append(_ceil_div(sizes[-1], 2))
    sizes += [sizes[-1] - 2, sizes[-1] - 4]
    return _check_sizes("ssd300", image_size, sizes)


def fpn_feature_sizes(image_size: int) -> tuple[int, ...]:
    """Strides 8..128, padded: 80, 40, 20, 10, 5 at 640."""
    return _check_sizes("fpn", image_size, [_ceil_div(image_size, s) for s in FPN_STEPS])


def _ssd_priors(image_size: int, feature_sizes: tuple[int, ...], zoo_size: int, zoo_steps: tuple[float, ...],
                aspect_ratios: tuple[tuple[float, ...], ...]) -> PriorConfig:
    # The zoo's steps at its own size; elsewhere one cell per feature-map pixel.
    steps = zoo_steps if image_size == zoo_size else tuple(image_size / f for f in feature_sizes)
    return PriorConfig(image_size=image_size, feature_sizes=feature_sizes, steps=steps, aspect_ratios=aspect_ratios)


SSD300_ASPECT_RATIOS = ((), (2, 3), (2, 3), (2, 3), (2, 3), (2, 3))


def ssd300_mobilenet_v2(image_size: int | None = None) -> Recipe:
    """The zoo's ``ssd300`` config: 300x300, MobileNetV2 x1.0, 1917 priors."""
    size = image_size or 300
    return Recipe(
        architecture="ssd300_mobilenet_v2",
        network="mobilenet_v2",
        image_size=size,
        width=1.0,
        last_channels=1280,
        extras=((512, 0.2), (256, 0.25), (256, 0.5), (128, 0.25)),
        priors=_ssd_priors(size, mobilenet_v2_feature_sizes(size), 300, (16, 32, 64, 100, 150, 300),
                           SSD300_ASPECT_RATIOS),
        train=TrainDefaults(epochs=500, batch_size=32, lr=0.05, warmup_epochs=2),
    )


def ssd_lite_mobilenet_v2(image_size: int | None = None) -> Recipe:
    """The same network at half width and 160x160 input, for CPU demos and tests.

    Feature maps 10, 5, 3, 2, 1, 1 (the last extras keep a 1x1 map), 540 priors.
    """
    size = image_size or 160
    return Recipe(
        architecture="ssd_lite_mobilenet_v2",
        network="mobilenet_v2",
        image_size=size,
        width=0.5,
        last_channels=640,
        extras=((256, 0.2), (128, 0.25), (128, 0.5), (64, 0.25)),
        priors=_ssd_priors(size, mobilenet_v2_feature_sizes(size), 160, (16, 32, 160 / 3, 80, 160, 160),
                           SSD300_ASPECT_RATIOS),
        train=TrainDefaults(epochs=30, batch_size=16, lr=0.05, warmup_epochs=1, weight_decay=4e-5),
    )


def ssd_vgg16(image_size: int | None = None) -> Recipe:
    """The zoo's ``ssd_vgg16`` config: 300x300, VGG16 + fc6/fc7 + 4 extras, 7308 priors."""
    size = image_size or 300
    return Recipe(
        architecture="ssd_vgg16",
        network="vgg16",
        image_size=size,
        priors=_ssd_priors(size, ssd300_feature_sizes(size), 300, (8, 16, 32, 64, 100, 300), SSD300_ASPECT_RATIOS),
        train=TrainDefaults(epochs=500, batch_size=32, lr=0.05, warmup_epochs=2, weight_decay=1.5e-4),
    )


def ssd_resnet34(image_size: int | None = None) -> Recipe:
    """The zoo's research ``ssd_resnet34``: 300x300, ResNet34 body at stride 8, 8732 priors.

    Postprocessing keeps the common zoo values (nms 0.6, min score 0.1, 100 boxes), as
    its mirrored ``config_ssd_resnet34.py`` does; the 0.7 / 0.4 / 320 noted in ASCEND.md
    would cut the low-score detections that COCO mAP counts.
    """
    size = image_size or 300
    return Recipe(
        architecture="ssd_resnet34",
        network="resnet34",
        image_size=size,
        priors=_ssd_priors(size, ssd300_feature_sizes(size), 300, (7, 15, 30, 60, 100, 300),
                           ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))),
        train=TrainDefaults(epochs=500, batch_size=32, lr=0.075, warmup_epochs=2, weight_decay=4e-5),
    )


def _fpn_recipe(architecture: str, network: str, image_size: int | None, weight_decay: float) -> Recipe:
    size = image_size or 640
    return Recipe(
        architecture=architecture,
        network=network,
        image_size=size,
        priors=GridAnchorConfig(image_size=size, feature_sizes=fpn_feature_sizes(size), steps=FPN_STEPS),
        train=TrainDefaults(epochs=500, batch_size=32, lr=0.05, warmup_epochs=2, weight_decay=weight_decay),
        focal_alpha=0.25,
        clip_global_norm=True,
    )


def ssd_mobilenet_v1_fpn(image_size: int | None = None) -> Recipe:
    """The zoo's ``ssd_mobilenet_v1_fpn``: 640x640, MobileNetV1 + FPN (P3-P7), weight-shared
    head, grid anchors (6 per cell), 51150 priors."""
    return _fpn_recipe("ssd_mobilenet_v1_fpn", "mobilenet_v1_fpn", image_size, weight_decay=4e-5)


def ssd_resnet50_fpn(image_size: int | None = None) -> Recipe:
    """The zoo's ``ssd_resnet50_fpn``: as :func:`ssd_mobilenet_v1_fpn` on ResNet50 (the zoo
    trains it in float16; we keep float32)."""
    return _fpn_recipe("ssd_resnet50_fpn", "resnet50_fpn", image_size, weight_decay=4e-4)


ARCHITECTURES = {
    "ssd300_mobilenet_v2": ssd300_mobilenet_v2,
    "ssd_lite_mobilenet_v2": ssd_lite_mobilenet_v2,
    "ssd_vgg16": ssd_vgg16,
    "ssd_resnet34": ssd_resnet34,
    "ssd_mobilenet_v1_fpn": ssd_mobilenet_v1_fpn,
    "ssd_resnet50_fpn": ssd_resnet50_fpn,
}
DEFAULT_ARCHITECTURE = "ssd300_mobilenet_v2"


def get_recipe(architecture: str, image_size: int | None = None) -> Recipe:
    """The recipe called ``architecture``, at ``image_size`` (default: its own)."""
    try:
        builder = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {sorted(ARCHITECTURES)}") from None
    return builder(image_size)

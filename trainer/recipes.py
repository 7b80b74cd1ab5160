"""Model recipes: small builder functions, looked up by name in :data:`ARCHITECTURES`.

A recipe fixes the network's shape (width, input size, extras, priors). Training
hyper-parameters have per-recipe defaults that a job spec may override.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ssdstack.detection.priors import PriorConfig

# ImageNet statistics on RGB 0..255, as the zoo's SSD normalises.
MEAN_RGB = (123.675, 116.28, 103.53)
STD_RGB = (58.395, 57.12, 57.375)


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
    image_size: int
    width: float
    last_channels: int
    extras: tuple[tuple[int, float], ...]
    priors: PriorConfig
    train: TrainDefaults
    mean: tuple[float, float, float] = MEAN_RGB
    std: tuple[float, float, float] = STD_RGB
    match_threshold: float = 0.5
    postprocess: dict = field(default_factory=lambda: {"score_threshold": 0.1, "iou_threshold": 0.6,
                                                        "max_detections": 100})

    def to_dict(self) -> dict:
        data = asdict(self)
        data["priors"] = self.priors.to_dict()
        return data


def ssd300_mobilenet_v2() -> Recipe:
    """The zoo's ``ssd300`` config: 300x300, MobileNetV2 x1.0, 1917 priors."""
    return Recipe(
        architecture="ssd300_mobilenet_v2",
        image_size=300,
        width=1.0,
        last_channels=1280,
        extras=((512, 0.2), (256, 0.25), (256, 0.5), (128, 0.25)),
        priors=PriorConfig(
            image_size=300,
            feature_sizes=(19, 10, 5, 3, 2, 1),
            steps=(16, 32, 64, 100, 150, 300),
            aspect_ratios=((), (2, 3), (2, 3), (2, 3), (2, 3), (2, 3)),
        ),
        train=TrainDefaults(epochs=500, batch_size=32, lr=0.05, warmup_epochs=2),
    )


def ssd_lite_mobilenet_v2() -> Recipe:
    """The same network at half width and 160x160 input, for CPU demos and tests.

    Feature maps 10, 5, 3, 2, 1, 1 (the last extras keep a 1x1 map), 540 priors.
    """
    return Recipe(
        architecture="ssd_lite_mobilenet_v2",
        image_size=160,
        width=0.5,
        last_channels=640,
        extras=((256, 0.2), (128, 0.25), (128, 0.5), (64, 0.25)),
        priors=PriorConfig(
            image_size=160,
            feature_sizes=(10, 5, 3, 2, 1, 1),
            steps=(16, 32, 160 / 3, 80, 160, 160),
            aspect_ratios=((), (2, 3), (2, 3), (2, 3), (2, 3), (2, 3)),
        ),
        train=TrainDefaults(epochs=30, batch_size=16, lr=0.05, warmup_epochs=1, weight_decay=4e-5),
    )


ARCHITECTURES = {
    "ssd300_mobilenet_v2": ssd300_mobilenet_v2,
    "ssd_lite_mobilenet_v2": ssd_lite_mobilenet_v2,
}
DEFAULT_ARCHITECTURE = "ssd300_mobilenet_v2"


def get_recipe(architecture: str) -> Recipe:
    try:
        return ARCHITECTURES[architecture]()
    except KeyError:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {sorted(ARCHITECTURES)}") from None

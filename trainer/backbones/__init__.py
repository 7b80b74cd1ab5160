"""Backbones (the part an ImageNet checkpoint maps onto) and the layers SSD adds after them.

Each backbone is a cell ``[N, 3, H, W] -> tuple of maps`` (its taps); an "extras" cell
turns the taps into the list of feature maps the SSD head predicts on: a chain of
stride-2 blocks (:class:`~trainer.backbones.extras.ExtraLayers`) or an FPN with extra
levels (:class:`~trainer.backbones.fpn.FeaturePyramid`).
"""

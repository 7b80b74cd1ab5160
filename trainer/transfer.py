"""Start training from existing weights: a whole-network checkpoint or a backbone's.

Checkpoint names are compared with the network's after removing wrapper prefixes
(see :func:`normalise_name`); optimiser state
(``moments.*``, ``global_step``, ...) is never loaded. A checkpoint that does not fit
raises :class:`JobFailed` naming the parameters and shapes that did not match, before any
weight is changed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Tensor

from ssdstack.errors import JobFailed

SHOWN = 20
OPTIMISER_STATE = ("moments.", "accum.", "global_step", "learning_rate", "momentum", "scale_sense",
                   "current_iterator_step", "last_overflow_iterator_step", "epoch_num", "step_num")
HEAD_MARK = "head"


@dataclass
class LoadReport:
    loaded: int
    skipped: list[str] = field(default_factory=list)       # network parameters left freshly initialised
    mapped_by_position: bool = False

    def to_dict(self) -> dict:
        return {"loaded": self.loaded, "reinitialised": self.skipped[:SHOWN], "reinitialised_count": len(self.skipped),
                "mapped_by_position": self.mapped_by_position}


def read_checkpoint(path: Path) -> dict:
    """``mindspore.load_checkpoint`` of ``path``; a file that is not one fails the job saying so."""
    try:
        return ms.load_checkpoint(str(path))
    except (ValueError, RuntimeError, OSError) as error:
        raise JobFailed(f"{Path(path).name} is not a readable MindSpore checkpoint: {error}") from error


def normalise_name(name: str) -> str:
    """Drop leading ``network.`` (our loss cell, the zoo's wrappers) and every ``_backbone``
    level (MindSpore AMP wraps the network and its BatchNorm cells in cast cells)."""
    parts = [part for part in name.split(".") if part != "_backbone"]
    while len(parts) > 1 and parts[0] == "network":
        parts.pop(0)
    return ".".join(parts)


def weights_only(checkpoint: dict) -> dict[str, np.ndarray]:
    """``{normalised name: array}`` without optimiser state, in the file's order."""
    return {normalise_name(name): value.asnumpy() for name, value in checkpoint.items()
            if not name.startswith(OPTIMISER_STATE)}


def network_parameters(cell) -> dict:
    """``{name relative to cell: Parameter}`` in definition order."""
    return dict(cell.parameters_and_names())


def _describe(name: str, shape) -> str:
    return f"{name} {list(shape)}"


def _assign(targets: dict, values: dict[str, np.ndarray]) -> None:
    for name, value in values.items():
        parameter = targets[name]
        parameter.set_data(Tensor(value, dtype=parameter.dtype))


def _by_position(targets: dict, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """Same parameter count and the same shape sequence: a checkpoint of the same layers
    saved under other names (as the model zoo's are). Anything less is no match."""
    if len(weights) != len(targets):
        return None
    pairs = list(zip(targets.items(), weights.values()))
    if any(tuple(parameter.shape) != value.shape for (_, parameter), value in pairs):
        return None
    return {name: value for (name, _), value in pairs}


def load_pretrained(network, checkpoint: dict, head_filter: str | list[str] = "auto") -> LoadReport:
    """Load a whole-network checkpoint into ``network`` (an unwrapped ``SSD``).

    ``head_filter``: ``"auto"`` skips head parameters (names containing ``head``) whose
    shape differs, as a checkpoint trained on another class count has; ``"none"`` loads
    everything or fails; a list of name prefixes skips exactly those parameters.
    """
    targets = network_parameters(network)
    weights = weights_only(checkpoint)
    if isinstance(head_filter, list):
        skip = {name for name in targets if name.startswith(tuple(head_filter))}
        unused = [prefix for prefix in head_filter if not any(name.startswith(prefix) for name in targets)]
        if unused:
            raise JobFailed(f"head_filter prefixes match no parameter of the network: {unused[:SHOWN]}",
                            details=[f"e.g. {name}" for name in list(targets)[-4:]])
    else:
        skip = set()
    if head_filter == "auto":
        skip = {name for name, parameter in targets.items()
                if HEAD_MARK in name and name in weights and tuple(parameter.shape) != weights[name].shape}

    mapped_by_position = False
    if not any(name in weights for name in targets):
        positional = _by_position(targets, weights)
        if positional is None:
            raise JobFailed("the checkpoint matches no parameter of the network by name, nor layer by layer "
                            "by shape: is it for another architecture?",
                            details=[f"checkpoint: {_describe(n, v.shape)}" for n, v in list(weights.items())[:5]]
                            + [f"network: {_describe(n, p.shape)}" for n, p in list(targets.items())[:5]])
        weights, mapped_by_position = positional, True

    missing = [name for name in targets if name not in weights and name not in skip]
    mismatched = [f"{name}: checkpoint {list(weights[name].shape)}, network {list(targets[name].shape)}"
                  for name in targets if name in weights and name not in skip
                  and weights[name].shape != tuple(targets[name].shape)]
    if missing or mismatched:
        hint = "" if head_filter != "none" else "; set head_filter to 'auto' or a list of prefixes to skip the head"
        problems = [f"shape differs: {line}" for line in mismatched] + [f"missing: {name}" for name in missing]
        raise JobFailed(f"the checkpoint does not fit the network: {len(mismatched)} parameters differ in shape, "
                        f"{len(missing)} are missing{hint}", details=problems[:SHOWN])
    _assign(targets, {name: weights[name] for name in targets if name not in skip})
    return LoadReport(loaded=len(targets) - len(skip), skipped=sorted(skip), mapped_by_position=mapped_by_position)


def load_backbone(network, checkpoint: dict) -> LoadReport:
    """Load feature-extractor weights into ``network.backbone``.

    Names are taken as the backbone's own (``features_1.0.0.weight``) or as the whole
    network's (``backbone.features_1.0.0.weight``); when none match, the checkpoint's
    first parameters are matched layer by layer by shape. Backbone parameters the checkpoint
    lacks stay freshly initialised and are reported; a checkpoint that matches none, or
    whose matching names have other shapes, fails.
    """
    targets = network_parameters(network.backbone)
    weights = {}
    for name, value in weights_only(checkpoint).items():
        own = name[len("backbone."):] if name.startswith("backbone.") else name
        if own in targets:
            weights[own] = value
    if not weights:
        # A classifier checkpoint of the same body under other names (the zoo's ImageNet
        # ones): its first parameters are the body's, then comes the classifier.
        everything = weights_only(checkpoint)
        positional = _by_position(targets, dict(list(everything.items())[:len(targets)]))
        if positional is None:
            raise JobFailed("the backbone checkpoint matches no parameter of the backbone",
                            details=[f"checkpoint: {name}" for name in list(everything)[:5]]
                            + [f"backbone: {name}" for name in list(targets)[:5]])
        _assign(targets, positional)
        return LoadReport(loaded=len(positional), mapped_by_position=True)
    mismatched = [f"{name}: checkpoint {list(value.shape)}, backbone {list(targets[name].shape)}"
                  for name, value in weights.items() if value.shape != tuple(targets[name].shape)]
    if mismatched:
        raise JobFailed(f"{len(mismatched)} backbone parameters differ in shape", details=mismatched[:SHOWN])
    _assign(targets, weights)
    return LoadReport(loaded=len(weights), skipped=[name for name in targets if name not in weights])


def freeze_backbone(network) -> int:
    """Exclude the backbone from training; returns the number of frozen parameters.

    Its BatchNorm layers must also stop updating their running statistics, which the
    caller does by putting ``network.backbone`` in eval mode after ``set_train(True)``.
    """
    frozen = 0
    for parameter in network.backbone.get_parameters():
        if parameter.requires_grad:
            parameter.requires_grad = False
            frozen += 1
    return frozen

"""One optimisation step with loss scaling, written with MindSpore's functional API.

MindSpore's ``TrainOneStepWithLossScaleCell`` reads the NPU float status registers, which
the CPU backend lacks; this cell checks ``all_finite`` on the gradients instead, so the
same code runs on CPU, GPU and Ascend.
"""
from __future__ import annotations

from mindspore import nn, ops
from mindspore.amp import DynamicLossScaler, StaticLossScaler, all_finite


class _PassThrough(nn.Cell):
    def construct(self, grads):
        return grads


class TrainStep(nn.Cell):
    """``step(*inputs) -> (loss, finite)``; an overflowing step leaves the weights unchanged.

    ``dynamic`` halves the loss scale on overflow and doubles it after 1000 clean steps;
    ``clip_global_norm`` clips the unscaled gradients' global norm (the zoo's FPN models);
    ``grad_reducer`` averages gradients across data-parallel ranks.
    """

    def __init__(self, loss_net: nn.Cell, optimizer: nn.Optimizer, loss_scale: float, dynamic: bool = False,
                 clip_global_norm: float | None = None, grad_reducer: nn.Cell | None = None):
        super().__init__(auto_prefix=False)
        self.loss_net = loss_net
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.scaler = (DynamicLossScaler(loss_scale, 2, 1000) if dynamic else StaticLossScaler(loss_scale))
        self.grad_fn = ops.value_and_grad(self._scaled_loss, None, self.weights)
        self.clip = clip_global_norm is not None
        self.clip_norm = clip_global_norm or 1.0
        self.grad_reducer = grad_reducer if grad_reducer is not None else _PassThrough()

    def _scaled_loss(self, *inputs):
        return self.scaler.scale(self.loss_net(*inputs))

    def construct(self, *inputs):
        scaled, grads = self.grad_fn(*inputs)
        loss = self.scaler.unscale(scaled)
        grads = self.grad_reducer(self.scaler.unscale(grads))
        finite = all_finite(grads)
        if self.clip:
            grads = ops.clip_by_global_norm(grads, self.clip_norm)
        self.scaler.adjust(finite)
        if finite:
            loss = ops.depend(loss, self.optimizer(grads))
        return loss, finite


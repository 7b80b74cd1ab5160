"""One optimisation step with loss scaling, written with MindSpore's functional API.

MindSpore's ``TrainOneStepWithLossScaleCell`` reads the NPU float status registers, which
the CPU backend lacks; this cell checks ``all_finite`` on the gradients instead, so the
same code runs on CPU, GPU and Ascend.
"""
from __future__ import annotations

from mindspore import nn, ops
from mindspore.amp import DynamicLossScaler, StaticLossScaler, all_finite


class TrainStep(nn.Cell):
    """``step(*inputs) -> (loss, finite)``; an overflowing step leaves the weights unchanged."""

    def __init__(self, loss_net: nn.Cell, optimizer: nn.Optimizer, loss_scale: float, dynamic: bool = False):
        super().__init__(auto_prefix=False)
        self.loss_net = loss_net
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.scaler = (DynamicLossScaler(loss_scale, 2, 1000) if dynamic else StaticLossScaler(loss_scale))
        self.grad_fn = ops.value_and_grad(self._scaled_loss, None, self.weights)

    def _scaled_loss(self, *inputs):
        return self.scaler.scale(self.loss_net(*inputs))

    def construct(self, *inputs):
        scaled, grads = self.grad_fn(*inputs)
        loss = self.scaler.unscale(scaled)
        grads = self.scaler.unscale(grads)
        finite = all_finite(grads)
        self.scaler.adjust(finite)
        if finite:
            loss = ops.depend(loss, self.optimizer(grads))
        return loss, finite


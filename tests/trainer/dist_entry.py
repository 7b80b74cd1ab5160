"""A tiny data-parallel job for ``test_launcher.py``, started by msrun (or alone).

Each rank trains a small conv net for a few steps on data of its own (seeded by its rank)
with the trainer's reducer, then prints ``CHECKSUM rank=<r> size=<n> sum=<float> md5=<hex>``
of its weights. ``--combined N`` runs one process on the N ranks' data concatenated: with
averaged gradients that is the same optimisation, so its weights match the ranks'.
"""
from __future__ import annotations

import argparse
import hashlib
import os

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--combined", type=int, default=0)
    parser.add_argument("--fail-rank", type=int, default=None)
    parser.add_argument("--fail-before-init", action="store_true")
    parser.add_argument("--out", default=None, help="folder for weights_<rank>.npy")
    args = parser.parse_args()

    if args.fail_before_init and os.environ.get("MS_NODE_ID") == str(args.fail_rank):
        raise SystemExit(f"injected failure before init on rank {args.fail_rank}")

    import mindspore as ms
    from mindspore import Tensor, nn, ops

    from trainer.launcher import RankContext
    from trainer.parallel import gradient_reducer, parallel_setup

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    rank, size = parallel_setup("CPU")
    ctx = RankContext(rank)
    ctx.log(f"rank {rank} of {size} up")
    if rank == args.fail_rank:
        raise RuntimeError(f"injected failure on rank {rank}")

    ms.set_seed(1)
    net = nn.SequentialCell(nn.Conv2d(3, 8, 3, pad_mode="same", weight_init="normal"), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dense(8, 4))
    loss_fn = nn.CrossEntropyLoss()
    optimizer = nn.Momentum(net.trainable_params(), 0.1, 0.9)

    class Step(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.net, self.optimizer = net, optimizer
            self.grad_fn = ops.value_and_grad(self.forward, None, optimizer.parameters)
            self.reducer = gradient_reducer(optimizer.parameters, size)

        def forward(self, x, y):
            return loss_fn(self.net(x), y)

        def construct(self, x, y):
            loss, grads = self.grad_fn(x, y)
            if self.reducer is not None:
                grads = self.reducer(grads)
            return ops.depend(loss, self.optimizer(grads))

    step = Step()
    step.set_train()

    def data(r: int, i: int):
        rng = np.random.default_rng([r, i])
        return rng.standard_normal((4, 3, 16, 16)).astype(np.float32), rng.integers(0, 4, 4).astype(np.int32)

    for i in range(args.steps):
        parts = [data(r, i) for r in range(args.combined)] if args.combined else [data(rank, i)]
        loss = step(Tensor(np.concatenate([p[0] for p in parts])), Tensor(np.concatenate([p[1] for p in parts])))
        ctx.progress(step=i + 1, loss=round(float(loss.asnumpy()), 6))
    weights = np.concatenate([p.asnumpy().ravel() for p in net.trainable_params()])
    print(f"CHECKSUM rank={rank} size={size} sum={weights.sum():.9g} "
          f"md5={hashlib.md5(weights.tobytes()).hexdigest()}", flush=True)
    if args.out:
        np.save(os.path.join(args.out, f"weights_{rank}.npy"), weights)


if __name__ == "__main__":
    main()

"""The roofline of an ONNX graph on this machine: its multiply-add FLOPs, counted from the
graph, and the fp32 matrix-multiply peak that ONNX Runtime reaches here with a given
number of threads.

FLOPs are 2 per multiply-add of the convolutions and matrix products (Conv, ConvTranspose,
MatMul, Gemm), at batch 1; everything else (activations, additions, resizes, the box
decoder) is left out, as a roofline of the compute-bound layers.
"""
from __future__ import annotations

import time

import numpy as np
import onnx
from onnx import TensorProto, helper, shape_inference


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Every tensor's shape, with symbolic dimensions (the batch axis) taken as 1."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in model.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
    inferred = shape_inference.infer_shapes(model, strict_mode=True)
    shapes = {}
    for value in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in value.type.tensor_type.shape.dim]
    for initializer in model.graph.initializer:
        shapes[initializer.name] = list(initializer.dims)
    return shapes


def _group(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def graph_flops(model: onnx.ModelProto) -> int:
    """FLOPs of one run of ``model`` at batch 1 (see the module's docstring)."""
    shapes = _shapes(model)
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            weight, out = shapes[node.input[1]], shapes[node.output[0]]
            total += 2 * int(np.prod(out)) * int(np.prod(weight[1:]))  # (C_in / group) * kernel per output
        elif node.op_type == "ConvTranspose":
            weight, source = shapes[node.input[1]], shapes[node.input[0]]
            total += 2 * int(np.prod(source)) * weight[1] * int(np.prod(weight[2:]))
        elif node.op_type in ("MatMul", "Gemm"):
            a, out = shapes[node.input[0]], shapes[node.output[0]]
            transposed = node.op_type == "Gemm" and any(x.name == "transA" and x.i for x in node.attribute)
            total += 2 * int(np.prod(out)) * (a[-2] if transposed else a[-1])
    return total


def matmul_peak(threads: int, sizes: tuple[int, ...] = (512, 1024, 2048), repeats: int = 5) -> float:
    """The best fp32 FLOP/s of a square MatMul in ONNX Runtime with ``threads`` intra-op
    threads, over ``sizes``, each the fastest of ``repeats`` runs."""
    import onnxruntime as ort

    best = 0.0
    for n in sizes:
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, n]) for name in ("a", "b")],
            [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(helper.make_model(graph).SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        feeds = {name: np.random.default_rng(0).random((n, n), np.float32) for name in ("a", "b")}
        session.run(None, feeds)
        fastest = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            session.run(None, feeds)
            fastest = min(fastest, time.perf_counter() - started)
        best = max(best, 2 * n ** 3 / fastest)
    return best

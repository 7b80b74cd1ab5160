"""The benchmark's FLOP counter on layers whose FLOPs are known by hand."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.flops import graph_flops


def _model(nodes, inputs, output, weights):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in inputs],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.zeros(shape, np.float32), name) for name, shape in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_3x3_convolution():
    # 3 -> 4 channels, 3x3, padding 1, on 8x8: 4 * 8 * 8 outputs of 3 * 3 * 3 multiply-adds.
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])
    model = _model([conv], [("x", ["batch", 3, 8, 8])], "y", {"w": [4, 3, 3, 3], "b": [4]})
    assert graph_flops(model) == 2 * (4 * 8 * 8) * (3 * 3 * 3) == 13_824


def test_a_strided_depthwise_convolution_then_a_matmul():
    # Depthwise 3x3, stride 2, on 4 x 8 x 8: 4 * 4 * 4 outputs of 9 multiply-adds each;
    # flattened to [1, 64] times [64, 10]: 640 multiply-adds.
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2], group=4),
             helper.make_node("Flatten", ["y"], ["f"]),
             helper.make_node("MatMul", ["f", "m"], ["z"])]
    model = _model(nodes, [("x", [1, 4, 8, 8])], "z", {"w": [4, 1, 3, 3], "m": [64, 10]})
    assert graph_flops(model) == 2 * (4 * 4 * 4 * 9) + 2 * 64 * 10 == 2_432


def test_a_gemm_with_a_transposed_input_counts_its_inner_dimension():
    gemm = helper.make_node("Gemm", ["a", "b"], ["c"], transA=1)
    model = _model([gemm], [("a", [5, 2])], "c", {"b": [5, 7]})
    assert graph_flops(model) == 2 * 2 * 7 * 5


@pytest.mark.parametrize("op", ["Relu", "Add"])
def test_elementwise_operators_are_not_counted(op):
    node = helper.make_node(op, ["x"] * (2 if op == "Add" else 1), ["y"])
    assert graph_flops(_model([node], [("x", [1, 3, 8, 8])], "y", {})) == 0

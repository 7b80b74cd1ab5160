"""ONNX Runtime backend: the exported ONNX graph with the preprocessing folded in, optimised.

The served graph takes what the inferencer has after decoding and resizing, so no float
preprocessing runs outside it (the ONNX equivalent of ATC's AIPP)::

    image uint8 [B, S, S, 3] RGB  -> Cast float -> Sub mean -> Div std -> Transpose NCHW
        -> exported network -> boxes [B, P, 4] normalised (y0, x0, y1, x1), scores [B, P, C]

The batch axis B is named (``batch``), so the inferencer may run several images in one
call (dynamic batching); a graph that turns out to pin batch 1 inside (its check on a
batch of the reference images fails) is written again with B fixed at 1.

``Div std`` (not ``Mul 1/std``) repeats the trainer's float32 ``(x - mean) / std``
operation for operation, so the network sees bit-identical inputs.
ONNX Runtime's offline optimisation (ORT_ENABLE_EXTENDED: constant folding, node fusions;
not the layout-specific ALL level, whose result depends on the machine) then writes
``model.ort.onnx``, which the inferencer's ONNX Runtime engine loads.

With precision ``int8`` the same FP32 graph is quantised (:mod:`converter.backends.int8`)
into ``model.ort.int8.onnx``, which must pass looser reference bounds and the accuracy
gate; the FP32 graph it came from is not kept.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from converter.backends.base import ConverterBackend, ConvertOptions, ConvertResult, Int8Options
from converter.backends.int8 import (INT8_CHECK_STATISTIC, INT8_TOLERANCE_BOXES, INT8_TOLERANCE_SCORES,
                                     calibration_images, gate, quantise)
from converter.check import check_against_reference
from ssdstack.errors import JobFailed
from ssdstack.jobs.context import JobCancelled, JobContext
from ssdstack.model_store import FP32, INT8, SERVING_ONNXRUNTIME, artefact_kind, sha256_file

ARTEFACT_FILE = "model.ort.onnx"
INT8_ARTEFACT_FILE = "model.ort.int8.onnx"
# The name of the served graph's batch axis: any number of images per run.
BATCH_AXIS = "batch"
INPUT_NAME = "image"
OUTPUT_NAMES = ("boxes", "scores")


class OnnxRuntimeBackend(ConverterBackend):
    name = "onnxruntime"
    artefact = SERVING_ONNXRUNTIME
    precisions = (FP32, INT8)
    python_modules = ("onnx", "onnxruntime")
    install_hint = "pip install 'ssdstack[converter]' (onnx and onnxruntime)"

    def convert(self, version_dir: Path, manifest: dict, out_dir: Path, options: ConvertOptions,
                ctx: JobContext) -> ConvertResult:
        # Optional runtimes, imported on use: listing backends must not need them.
        import onnx
        import onnxruntime as ort

        source = _artefact(version_dir, manifest, "onnx")
        reference = _artefact(version_dir, manifest, "reference")
        preprocessing = manifest["preprocessing"]
        if preprocessing.get("colour_order", "RGB") != "RGB":
            raise JobFailed(f"colour order {preprocessing['colour_order']!r} is not supported; the model must take RGB")

        started = time.monotonic()
        ctx.log(f"onnxruntime: folding preprocessing (mean {preprocessing['mean']}, "
                f"std {preprocessing['std']}) into {source.name}")
        int8 = options.precision == INT8
        work = out_dir / "int8-work"  # the FP32 graph an INT8 one is made from, never an artefact
        if int8:
            work.mkdir()
        target = (work if int8 else out_dir) / ARTEFACT_FILE
        model, check, batch = _served_fp32(source, target, manifest, reference, options.tolerance, ctx)
        details = {
            "source": source.name,
            "source_sha256": sha256_file(source),
            "opset": max(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")),
            "optimization": "ORT_ENABLE_EXTENDED",
            "onnx_version": onnx.__version__,
            "onnxruntime_version": ort.__version__,
        }
        if not int8:
            return ConvertResult(self.artefact, target, check, dict(details, seconds=_since(started)), batch=batch)
        if not check["passed"]:
            raise JobFailed("the FP32 graph to quantise differs from the MindSpore reference: max abs diff boxes "
                            f"{check['max_abs_diff_boxes']:.3g}, scores {check['max_abs_diff_scores']:.3g}",
                            details=check)
        onnx.save(model, str(work / "folded.onnx"))
        result = _quantised(work / "folded.onnx", target, out_dir / INT8_ARTEFACT_FILE, work, manifest, reference,
                            options.int8, ctx)
        result.details = dict(details, **result.details, seconds=_since(started))
        result.batch = batch
        return result


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)


def _served_fp32(source: Path, target: Path, manifest: dict, reference: Path, tolerance: float, ctx: JobContext):
    """The FP32 served graph at ``target`` with a named batch axis, or batch 1 when the
    graph cannot run a batch: ``(the folded model, its check, its batch axis)``."""
    batch = BATCH_AXIS
    model, check = _serve(source, target, manifest, reference, tolerance, ctx, batch)
    alone_passed = max(check["max_abs_diff_boxes"], check["max_abs_diff_scores"]) <= tolerance
    if not check["passed"] and alone_passed:  # the batch is what failed
        why = check["batched"]["error"] or "its outputs for a batch differ from the reference"
        ctx.log(f"onnxruntime: the graph does not run a batch ({why}); it will serve one image at a time")
        batch = 1
        model, check = _serve(source, target, manifest, reference, tolerance, ctx, batch)
    return model, check, batch


def _quantised(folded: Path, fp32_served: Path, target: Path, work: Path, manifest: dict, reference: Path,
               int8: Int8Options, ctx: JobContext) -> ConvertResult:
    """The INT8 artefact at ``target``, quantised from ``folded`` (the FP32 graph before
    optimisation), checked against the reference within the INT8 bounds and gated on
    its served mAP against ``fp32_served``; JobFailed when the gate refuses it."""
    images, names = calibration_images(int8.calibration, int8.settings.calibration_images, int(manifest["image_size"]))
    ctx.progress(stage="convert", step="quantise")
    ctx.log(f"onnxruntime: quantising to INT8, calibrated on {len(names)} images of the {int8.calibration.split} "
            "split")
    qdq = work / "model.int8.qdq.onnx"
    how = quantise(folded, qdq, images, work)
    _optimise(qdq.read_bytes(), target)
    ctx.progress(stage="convert", step="check")
    check = check_against_reference(target, reference, INT8_TOLERANCE_BOXES, INT8_TOLERANCE_SCORES,
                                    INT8_CHECK_STATISTIC)
    ctx.log("onnxruntime: INT8 check against reference.npz: mean abs diff boxes {mean_abs_diff_boxes:.3g} "
            "(bound {tolerance:g}), scores {mean_abs_diff_scores:.3g} (bound {score_tolerance:g}); largest "
            "{max_abs_diff_boxes:.3g}, {max_abs_diff_scores:.3g}".format(**check))
    calibration = {"dataset": manifest["lineage"]["dataset"], "split": int8.calibration.split, "images": names}
    result = ConvertResult(artefact_kind(SERVING_ONNXRUNTIME, INT8), target, check, {"quantisation": how},
                           record={"calibration": calibration})
    if not check["passed"]:
        return result

    def each(precision: str, done: int) -> None:
        if ctx.cancelled():
            raise JobCancelled("conversion cancelled during the INT8 accuracy gate")
        ctx.progress(stage="convert", step=f"gate {precision}", evaluated=done,
                     to_evaluate=len(int8.validation.records))

    judged = gate(fp32_served, target, manifest, int8.validation, int8.settings.max_map_drop,
                  int8.settings.min_images, each)
    ctx.log("onnxruntime: INT8 gate on {images} {split} images: served mAP {int8_map:.4f}, FP32 {fp32_map:.4f}, "
            "drop {drop:.4f} (at most {max_map_drop:g})".format(**judged))
    if not judged["passed"]:
        raise JobFailed(f"the INT8 artefact failed its accuracy gate: served mAP {judged['int8_map']:.4f} against "
                        f"FP32 {judged['fp32_map']:.4f} on {judged['images']} {judged['split']} images, a drop of "
                        f"{judged['drop']:.4f} over max_map_drop {judged['max_map_drop']:g}", details=judged)
    result.record["gate"] = judged
    return result


def _serve(source: Path, target: Path, manifest: dict, reference: Path, tolerance: float, ctx: JobContext,
           batch: int | str):
    """Fold the preprocessing into ``source`` with batch axis ``batch``, write the optimised
    graph to ``target`` and check it: ``(the folded model, the check)``."""
    import onnx

    model = onnx.load(str(source))
    preprocessing = manifest["preprocessing"]
    fold_preprocessing(model, int(manifest["image_size"]), preprocessing["mean"], preprocessing["std"], batch)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise JobFailed(f"the folded ONNX graph is invalid: {exc}") from exc

    ctx.progress(stage="convert", step="optimise")
    _optimise(model.SerializeToString(), target)
    ctx.log(f"onnxruntime: wrote {target.name} ({target.stat().st_size} bytes, batch axis {batch!r})")

    ctx.progress(stage="convert", step="check")
    check = check_against_reference(target, reference, tolerance)
    ctx.log("onnxruntime: check against reference.npz on {images} images: max abs diff boxes "
            "{max_abs_diff_boxes:.3g}, scores {max_abs_diff_scores:.3g} (tolerance {tolerance:g})".format(**check))
    return model, check


def _optimise(model: bytes, target: Path) -> None:
    """ONNX Runtime's offline optimisation of ``model`` (a serialised graph), written to ``target``."""
    import onnxruntime as ort

    session_options = ort.SessionOptions()
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    session_options.optimized_model_filepath = str(target)
    ort.InferenceSession(model, session_options, providers=["CPUExecutionProvider"])


def fold_preprocessing(model, image_size: int, mean, std, batch: int | str = BATCH_AXIS) -> None:
    """Edit ``model`` (an ``onnx.ModelProto`` taking ``[N, 3, S, S]`` float) in place so that it
    takes ``image`` uint8 ``[batch, S, S, 3]`` RGB and names its two outputs ``boxes``,
    ``scores`` (``[batch, P, ...]``). ``batch``: a name (any number of images per run) or 1."""
    from onnx import TensorProto, helper, numpy_helper  # optional runtime, as in convert

    graph = model.graph
    initialisers = {tensor.name for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initialisers]
    if len(inputs) != 1 or len(graph.output) != len(OUTPUT_NAMES):
        raise JobFailed(f"expected an ONNX graph with 1 input and 2 outputs (boxes, scores), "
                        f"got inputs {[v.name for v in inputs]} and outputs {[v.name for v in graph.output]}")
    network_input = inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in network_input.type.tensor_type.shape.dim]
    if network_input.type.tensor_type.elem_type != TensorProto.FLOAT or dims[1:] != [3, image_size, image_size]:
        raise JobFailed(f"expected a float input [N, 3, {image_size}, {image_size}], got {network_input.name!r} {dims}")

    in_use = _tensor_names(graph)
    clashes = in_use & {INPUT_NAME, *OUTPUT_NAMES}
    if clashes:
        raise JobFailed(f"the ONNX graph already uses the names {sorted(clashes)}")
    nchw = _fresh("preprocess/nchw", in_use)
    renames = {network_input.name: nchw}
    renames.update({output.name: new for output, new in zip(graph.output, OUTPUT_NAMES)})
    for node in graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
        node.output[:] = [renames.get(name, name) for name in node.output]
    for value in [*graph.output, *graph.value_info]:
        value.name = renames.get(value.name, value.name)

    mean_name, std_name = _fresh("preprocess/mean", in_use), _fresh("preprocess/std", in_use)
    as_float, centred, scaled = (_fresh(f"preprocess/{n}", in_use) for n in ("float", "centred", "scaled"))
    graph.initializer.extend([
        numpy_helper.from_array(np.asarray(mean, np.float32).reshape(1, 1, 1, 3), mean_name),
        numpy_helper.from_array(np.asarray(std, np.float32).reshape(1, 1, 1, 3), std_name),
    ])
    preprocess = [
        helper.make_node("Cast", [INPUT_NAME], [as_float], name="preprocess/cast", to=TensorProto.FLOAT),
        helper.make_node("Sub", [as_float, mean_name], [centred], name="preprocess/sub_mean"),
        helper.make_node("Div", [centred, std_name], [scaled], name="preprocess/div_std"),
        helper.make_node("Transpose", [scaled], [nchw], name="preprocess/to_nchw", perm=[0, 3, 1, 2]),
    ]
    nodes = preprocess + list(graph.node)  # nodes must stay topologically sorted
    del graph.node[:]
    graph.node.extend(nodes)
    graph.input.remove(network_input)
    graph.input.insert(0, helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8,
                                                        [batch, image_size, image_size, 3]))
    for output in graph.output:
        first = output.type.tensor_type.shape.dim[0]
        first.Clear()
        if isinstance(batch, str):
            first.dim_param = batch
        else:
            first.dim_value = batch
    # The exporter's intermediate shapes name batch 1; ONNX Runtime infers them again.
    del graph.value_info[:]


def _tensor_names(graph) -> set[str]:
    names = {value.name for value in [*graph.input, *graph.output, *graph.value_info]}
    names |= {tensor.name for tensor in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def _fresh(name: str, in_use: set[str]) -> str:
    candidate, n = name, 0
    while candidate in in_use:
        n += 1
        candidate = f"{name}_{n}"
    in_use.add(candidate)
    return candidate


def _artefact(version_dir: Path, manifest: dict, kind: str) -> Path:
    entry = manifest.get("artefacts", {}).get(kind)
    if entry is None:
        raise JobFailed(f"version {manifest.get('version')} has no {kind} artefact to convert from")
    path = version_dir / entry["file"]
    if not path.exists() or sha256_file(path) != entry["sha256"]:
        raise JobFailed(f"{entry['file']} is missing or does not match its sha256 in the manifest")
    return path

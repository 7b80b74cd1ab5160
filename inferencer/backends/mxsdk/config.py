"""What the MindX SDK (mxVision) needs to serve a version, generated from its manifest:
the stream pipeline, the SSD postprocessor's config and the labels file.

Facts from ../shared/ASCEND.md ("MindX SDK stream"): pipeline props are strings; the
detection stream is appsrc -> mxpi_imagedecoder -> mxpi_imageresize -> mxpi_tensorinfer
-> mxpi_objectpostprocessor -> mxpi_dataserialize -> appsink; the postprocess config has
``CLASS_NUM`` (classes + background), ``SCORE_THRESH``, ``IOU_THRESH``, ``CHECK_MODEL``;
the labels file has one name per line, ``background`` first.

Two streams:

* ``dvpp``: the JPEG is decoded (to YUV420SP) and resized on the NPU; the ``.om`` must
  carry the yuv420sp AIPP; the SDK's SSD postprocessor returns objects in original pixels.
* ``cpu``: the host decodes and resizes (the same code as ONNX Runtime serving) and
  sends a uint8 ``[1, S, S, 3]`` tensor; the stream only runs the model
  (appsrc -> mxpi_tensorinfer -> appsink), and the host's NMS, shared with every
  engine, turns its boxes and scores into detections.
"""
from __future__ import annotations

STREAM_PREFIX = "ssdstack"
INPUT_PLUGIN = "appsrc0"
INFER_PLUGIN = "mxpi_tensorinfer0"
POSTPROCESS_PLUGIN = "mxpi_objectpostprocessor0"


def stream_name(model: str, version: int) -> bytes:
    """The stream's name, as the SDK takes it (bytes): one stream per served version."""
    return f"{STREAM_PREFIX}_{model}_v{int(version)}".encode()


def dvpp_pipeline(name: bytes, model_path: str, postprocess_config: str, labels: str, postprocess_lib: str,
                  image_size: int, device_id: int) -> dict:
    """The decode-on-device stream: ``{stream name: {plugin: {"factory", "props", "next"}}}``."""
    return {name.decode(): {
        "stream_config": {"deviceId": str(device_id)},
        INPUT_PLUGIN: {"props": {"blocksize": "409600"}, "factory": "appsrc", "next": "mxpi_imagedecoder0"},
        "mxpi_imagedecoder0": {"props": {"handleMethod": "ascend"}, "factory": "mxpi_imagedecoder",
                               "next": "mxpi_imageresize0"},
        "mxpi_imageresize0": {"props": {"handleMethod": "ascend", "resizeType": "Resizer_Stretch",
                                        "resizeHeight": str(image_size), "resizeWidth": str(image_size)},
                              "factory": "mxpi_imageresize", "next": INFER_PLUGIN},
        INFER_PLUGIN: {"props": {"dataSource": "mxpi_imageresize0", "modelPath": model_path},
                       "factory": "mxpi_tensorinfer", "next": POSTPROCESS_PLUGIN},
        POSTPROCESS_PLUGIN: {"props": {"dataSource": INFER_PLUGIN, "postProcessConfigPath": postprocess_config,
                                       "labelPath": labels, "postProcessLibPath": postprocess_lib},
                             "factory": "mxpi_objectpostprocessor", "next": "mxpi_dataserialize0"},
        "mxpi_dataserialize0": {"props": {"outputDataKeys": POSTPROCESS_PLUGIN}, "factory": "mxpi_dataserialize",
                                "next": "appsink0"},
        "appsink0": {"factory": "appsink"},
    }}


def tensor_pipeline(name: bytes, model_path: str, device_id: int) -> dict:
    """The model-only stream for host preprocessing and postprocessing."""
    return {name.decode(): {
        "stream_config": {"deviceId": str(device_id)},
        INPUT_PLUGIN: {"factory": "appsrc", "next": INFER_PLUGIN},
        INFER_PLUGIN: {"props": {"dataSource": INPUT_PLUGIN, "modelPath": model_path},
                       "factory": "mxpi_tensorinfer", "next": "appsink0"},
        "appsink0": {"factory": "appsink"},
    }}


def postprocess_config(manifest: dict) -> str:
    """The SSD postprocessor's ``KEY=value`` lines from the manifest's postprocess settings."""
    postprocess = manifest["postprocess"]
    return (f"CLASS_NUM={int(manifest['num_classes'])}\n"
            f"SCORE_THRESH={float(postprocess['score_threshold'])}\n"
            f"IOU_THRESH={float(postprocess['iou_threshold'])}\n"
            "CHECK_MODEL=true\n")


def labels_file(manifest: dict) -> str:
    """``background`` then the class names, one per line (line i = class id i)."""
    return "\n".join(["background", *manifest["labels"]]) + "\n"


def parse_postprocess_config(text: str) -> dict[str, str]:
    """``KEY=value`` lines (``#`` comments skipped), as strings."""
    pairs = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, value = (part.strip() for part in line.split("=", 1))
            pairs[key] = value
    return pairs

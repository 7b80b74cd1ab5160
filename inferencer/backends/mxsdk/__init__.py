"""The MindX SDK engine (an mxVision stream on the NPU), with what it alone needs: the
stream and postprocessor configs, and the JPEGs the device decoder takes."""
from inferencer.backends.mxsdk.engine import MxSdkEngine

__all__ = ["MxSdkEngine"]

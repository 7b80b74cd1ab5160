"""What the integration tests share besides fixtures: the stack's settings, the demo's
recipe and model name."""
from __future__ import annotations

from cli.demo import DemoConfig

API_KEY = "integration-test-key"
SECOND_API_KEY = "a-second-api-key"
# Heartbeats every second, dead after 6 s: the reaper sends a dead worker's job again within
# seconds. The broker's visibility timeout keeps its default (6 h).
FAST_RECOVERY = {"SSDSTACK_HEARTBEAT_INTERVAL": "1", "SSDSTACK_HEARTBEAT_TTL": "6",
                 "SSDSTACK_DETECT_TIMEOUT": "30", "SSDSTACK_INFER_BACKEND": "onnxruntime",
                 # The demo dataset has 80 validation images (the shipped gate needs 200).
                 "SSDSTACK_INT8_GATE_MIN_IMAGES": "50"}
CONFIG = DemoConfig()
MODEL = "itest"


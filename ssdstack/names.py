"""The names the stack accepts, in one place: those of datasets and models (also folder
names in the store) and of uploaded checkpoint files. The job specs (and so the OpenAPI
schema) and the stores check the same patterns."""
from __future__ import annotations

import re

# A dataset or model name: a-z, 0-9, '.', '_', '-', at most 63 characters.
NAME = r"[a-z0-9][a-z0-9._-]{0,62}"
# A checkpoint file in the store's ``checkpoints/`` folder.
CHECKPOINT_FILE = r"[A-Za-z0-9][A-Za-z0-9._-]{0,126}\.ckpt"

NAME_PATTERN = re.compile(f"^{NAME}$")
CHECKPOINT_FILE_PATTERN = re.compile(f"^{CHECKPOINT_FILE}$")

"""Inside a rank (``trainer.parallel``): when a process is a launched rank, and the single
process outside a launcher. tests/trainer/test_launcher.py runs real ranks."""
from __future__ import annotations

import needs

needs.module("mindspore")

from trainer.parallel import launched_distributed, parallel_setup  # noqa: E402


def test_launched_distributed_reads_the_launchers_variables():
    assert launched_distributed({"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "2"})
    assert launched_distributed({"MS_ROLE": "MS_SCHED"})
    assert launched_distributed({"RANK_TABLE_FILE": "/r.json", "RANK_SIZE": "8", "RANK_ID": "3"})
    assert not launched_distributed({"RANK_TABLE_FILE": "/r.json", "RANK_SIZE": "1"})
    assert not launched_distributed({"RANK_ID": "0", "DEVICE_ID": "0"})


def test_parallel_setup_is_a_single_process_outside_a_launcher(monkeypatch):
    for name in ("MS_ROLE", "RANK_TABLE_FILE", "RANK_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert parallel_setup("CPU") == (0, 1)

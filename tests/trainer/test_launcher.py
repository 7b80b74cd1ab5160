"""Data-parallel launching (``trainer.launcher``): exact commands and environments, then
real msrun runs on CPU whose ranks join a group and average gradients (``trainer.parallel``)."""
from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import needs
import numpy as np
import psutil
import pytest

from ssdstack.errors import JobFailed
from ssdstack.jobs.context import JobCancelled, LocalContext
from trainer.launcher import (LaunchPlan, _failure, RankContext, RankFailed, free_port, launch, launch_processes,
                              msrun_process, rank_table_processes, relay_to, worker_log)

ENTRY = Path(__file__).with_name("dist_entry.py")
BASE_ENV = {"PATH": "/usr/bin", "HOME": "/home/t", "RANK_ID": "7", "MS_ROLE": "MS_WORKER", "DEVICE_ID": "3"}


def test_msrun_command_and_environment_on_cpu():
    plan = LaunchPlan(devices=2, log_dir=Path("/runs/j1/logs"), master_port=29500, python="/venv/bin/python")
    [process] = launch_processes(plan, ["-m", "trainer.rank_main", "--spec", "spec.json"], BASE_ENV)
    assert process.argv == ["/venv/bin/msrun", "--worker_num", "2", "--local_worker_num", "2",
                            "--master_addr", "127.0.0.1", "--master_port", "29500", "--node_rank", "0",
                            "--log_dir", "/runs/j1/logs", "--join", "True",
                            "python", "-m", "trainer.rank_main", "--spec", "spec.json"]
    # Stale cluster variables are dropped; msrun's "python" must be the plan's interpreter.
    assert process.env == {"PATH": "/venv/bin:/usr/bin", "HOME": "/home/t"}
    assert process.log is None and process.rank is None


def test_msrun_on_ascend_sets_the_hccl_timeouts():
    plan = LaunchPlan(devices=8, log_dir=Path("/l"), device_target="Ascend", master_addr="10.0.0.5",
                      master_port=8118, python="/venv/bin/python", hccl_connect_timeout_s=300, hccl_exec_timeout_s=900)
    process = msrun_process(plan, ["train.py"], {"PATH": "/usr/bin"})
    assert process.argv[1:15] == ["--worker_num", "8", "--local_worker_num", "8", "--master_addr", "10.0.0.5",
                                  "--master_port", "8118", "--node_rank", "0", "--log_dir", "/l", "--join", "True"]
    assert process.env == {"PATH": "/venv/bin:/usr/bin", "HCCL_CONNECT_TIMEOUT": "300", "HCCL_EXEC_TIMEOUT": "900"}


def test_rank_table_starts_one_process_per_card():
    plan = LaunchPlan(devices=2, log_dir=Path("/l"), launcher="rank_table", device_target="Ascend",
                      rank_table_file=Path("/etc/hccl_2p.json"), python="/venv/bin/python")
    processes = rank_table_processes(plan, ["-m", "trainer.rank_main"], BASE_ENV)
    assert [p.argv for p in processes] == [["/venv/bin/python", "-m", "trainer.rank_main"]] * 2
    assert [p.env for p in processes] == [
        {"PATH": "/usr/bin", "HOME": "/home/t", "RANK_TABLE_FILE": "/etc/hccl_2p.json", "RANK_SIZE": "2",
         "RANK_ID": str(rank), "DEVICE_ID": str(rank), "HCCL_CONNECT_TIMEOUT": "600", "HCCL_EXEC_TIMEOUT": "1800"}
        for rank in (0, 1)]
    assert [p.log for p in processes] == [Path("/l/worker_0.log"), Path("/l/worker_1.log")]
    assert [p.rank for p in processes] == [0, 1]
    assert worker_log(plan, 1) == Path("/l/worker_1.log")


@pytest.mark.parametrize("fields, message", [
    ({"devices": 0}, "devices"),
    ({"devices": 2, "launcher": "mpirun"}, "launcher"),
    ({"devices": 2, "master_port": 80}, "master_port"),
    ({"devices": 2, "launcher": "rank_table", "rank_table_file": Path("/r.json")}, "needs Ascend"),
    ({"devices": 2, "launcher": "rank_table", "device_target": "Ascend"}, "rank_table_file"),
])
def test_plan_rejects_bad_values(fields, message):
    with pytest.raises(ValueError, match=message):
        LaunchPlan(log_dir=Path("/l"), **fields)


def test_free_port_can_be_bound_on_localhost():
    port = free_port()
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
    assert 1024 <= port <= 65535


def test_msrun_is_where_the_plan_looks_for_it():
    # The launcher runs msrun from the interpreter's directory; the venv installs it there.
    needs.module("mindspore")
    assert shutil.which("msrun", path=str(Path(sys.executable).parent))


def _rank_table_plan(tmp_path: Path) -> LaunchPlan:
    # The rank-table mechanics (one process per card, its own log, exit codes) need no
    # Ascend when the entry is plain Python.
    return LaunchPlan(devices=2, log_dir=tmp_path / "logs", launcher="rank_table", device_target="Ascend",
                      rank_table_file=tmp_path / "hccl.json")


def test_rank_table_launch_streams_rank_zero(tmp_path):
    lines: list[str] = []
    launch(_rank_table_plan(tmp_path), ["-c", "import os; print('rank', os.environ['RANK_ID'], 'of', "
                                              "os.environ['RANK_SIZE'], 'device', os.environ['DEVICE_ID'])"],
           timeout_s=60, on_line=lines.append)
    assert lines == ["rank 0 of 2 device 0"]
    assert worker_log(_rank_table_plan(tmp_path), 1).read_text() == "rank 1 of 2 device 1\n"


def test_rank_table_launch_names_the_failing_rank(tmp_path):
    script = ("import os, sys, time\n"
              "if os.environ['RANK_ID'] == '1':\n"
              "    sys.exit('ValueError: no card for rank 1')\n"
              "time.sleep(60)\n")
    with pytest.raises(RankFailed, match="rank 1 of 2 exited with code 1: ValueError: no card for rank 1") as failed:
        launch(_rank_table_plan(tmp_path), ["-c", script, str(tmp_path)], timeout_s=60)
    assert failed.value.details["log_tail"] == ["ValueError: no card for rank 1"]
    assert _processes_mentioning(str(tmp_path)) == []



@pytest.mark.parametrize("rank_1_log, named", [
    (["Traceback (most recent call last):", "RuntimeError: boom"], 1),  # the rank with a traceback
    (["injected failure before init on rank 1"], 1),  # the only rank that said anything
    ([], None),  # nothing to go by: msrun's own failure
])
def test_a_rank_msrun_reported_before_its_pid_was_seen_is_named_from_the_logs(tmp_path, rank_1_log, named):
    plan = LaunchPlan(devices=2, log_dir=tmp_path)
    worker_log(plan, 0).write_text("")
    worker_log(plan, 1).write_text("\n".join(rank_1_log))
    failure = _failure(plan, None, 1, tmp_path / "msrun.log")
    assert (failure.details.get("rank") if isinstance(failure, RankFailed) else None) == named


def test_rank_zero_progress_and_log_lines_reach_the_job_context(capsys):
    RankContext(rank=0).progress(epoch=1, loss=0.5)
    RankContext(rank=0).log("checkpoint after epoch 1")
    RankContext(rank=1).progress(epoch=1, loss=9.0)
    ctx = LocalContext(quiet=True)
    relay = relay_to(ctx)
    for line in capsys.readouterr().out.splitlines() + ["[WARNING] ME(1): chatter"]:
        relay(line)
    assert ctx.state == {"epoch": 1, "loss": 0.5}
    assert ctx.lines == ["checkpoint after epoch 1"]


# --- real launches: two msrun ranks on this CPU -------------------------------------------

CHECKSUM = re.compile(r"CHECKSUM rank=(\d+) size=(\d+) sum=(\S+) md5=(\w+)")


def _processes_mentioning(marker: str) -> list[str]:
    found = []
    for process in psutil.process_iter():
        try:
            if marker in " ".join(process.cmdline()):
                found.append(f"{process.pid} {process.status()}")
        except psutil.Error:
            continue
    return [p for p in found if not p.endswith("zombie")]


def _run_alone(tmp_path: Path, ranks: int) -> np.ndarray:
    out = tmp_path / f"alone-{ranks}"
    out.mkdir()
    subprocess.run([sys.executable, str(ENTRY), "--steps", "4", "--combined", str(ranks), "--out", str(out)],
                   check=True, timeout=120, capture_output=True)
    return np.load(out / "weights_0.npy")


@pytest.fixture
def plan(tmp_path, monkeypatch):
    needs.module("mindspore")
    needs.program("msrun", path=str(Path(sys.executable).parent))
    monkeypatch.setenv("GLOG_v", "3")
    return LaunchPlan(devices=2, log_dir=tmp_path / "logs", master_port=free_port())


@pytest.mark.slow
def test_two_ranks_on_different_data_end_with_the_same_weights(plan, tmp_path):
    ctx = LocalContext(quiet=True)
    relay = relay_to(ctx)
    lines: list[str] = []

    def on_line(line: str) -> None:
        lines.append(line)
        relay(line)

    launch(plan, [str(ENTRY), "--steps", "4", "--out", str(tmp_path)], timeout_s=240, on_line=on_line)

    rank0 = [CHECKSUM.search(line).groups() for line in lines if CHECKSUM.search(line)]
    rank1 = CHECKSUM.findall(worker_log(plan, 1).read_text())
    assert [r[:2] for r in rank0 + rank1] == [("0", "2"), ("1", "2")]
    assert rank0[0][3] == rank1[0][3]  # md5 of every trainable weight
    assert ctx.lines == ["rank 0 of 2 up"] and ctx.state["step"] == 4

    # Averaged gradients over both ranks' data = one process on the two batches joined;
    # rank 0's data alone gives other weights, so rank 1's data did reach rank 0.
    weights = np.load(tmp_path / "weights_0.npy")
    np.testing.assert_array_equal(weights, np.load(tmp_path / "weights_1.npy"))
    np.testing.assert_allclose(weights, _run_alone(tmp_path, ranks=2), atol=1e-6)
    assert np.abs(weights - _run_alone(tmp_path, ranks=1)).max() > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("before_init", [False, True], ids=["after-init", "before-init"])
def test_a_failing_rank_stops_the_launch_and_names_itself(plan, tmp_path, before_init):
    args = [str(ENTRY), "--steps", "1000", "--fail-rank", "1", "--out", str(tmp_path)]
    with pytest.raises(RankFailed) as failed:
        launch(plan, args + (["--fail-before-init"] if before_init else []), timeout_s=120)
    details = failed.value.details
    assert details["rank"] == 1 and details["exit_code"] == 1
    assert "injected failure" in str(failed.value)
    assert any("injected failure" in line for line in details["log_tail"])
    assert _processes_mentioning(str(tmp_path)) == []


@pytest.mark.slow
def test_cancel_kills_every_rank(plan, tmp_path):
    steps: list[str] = []
    with pytest.raises(JobCancelled):
        launch(plan, [str(ENTRY), "--steps", "100000", "--out", str(tmp_path)], timeout_s=120,
               on_line=lambda line: steps.append(line) if line.startswith("@progress") else None,
               cancelled=lambda: len(steps) >= 3)
    assert _processes_mentioning(str(tmp_path)) == []


@pytest.mark.slow
def test_timeout_kills_every_rank(plan, tmp_path):
    with pytest.raises(JobFailed, match="did not finish within 3 s"):
        launch(plan, [str(ENTRY), "--steps", "100000", "--out", str(tmp_path)], timeout_s=3)
    assert _processes_mentioning(str(tmp_path)) == []


"""What every ``make bench`` figure carries: repetitions (median, min, max), the goal and
whether it was met, and whether the machine was busy with something else meanwhile; the
run's environment (commit, dirty tree, load average); a markdown table of every row."""
from __future__ import annotations

import os
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
REPETITIONS = 3
# A figure is noisy when processes outside the benchmark used more than this share of the
# machine's CPU time while it was measured.
NOISY_SHARE = 0.10


def environment() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "cpus": os.cpu_count(), "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


class ForeignLoad:
    """CPU time used by processes outside this one's tree (the stack it started is inside)
    while a figure is measured, as a share of the machine's CPU time."""

    def __enter__(self) -> "ForeignLoad":
        self._started = time.monotonic()
        self._busy = self._machine_busy()
        self._ours = self._our_cpu()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.monotonic() - self._started
        foreign = (self._machine_busy() - self._busy) - (self._our_cpu() - self._ours)
        self.share = max(0.0, foreign / (wall * (os.cpu_count() or 1)))

    @staticmethod
    def _machine_busy() -> float:
        times = psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    @staticmethod
    def _our_cpu() -> float:
        me = psutil.Process()
        total = 0.0
        for process in (me, *me.children(recursive=True)):
            try:
                cpu = process.cpu_times()
            except psutil.Error:
                continue
            total += cpu.user + cpu.system
        # Children that ended meanwhile are counted by the kernel in ours.
        cpu = me.cpu_times()
        return total + cpu.children_user + cpu.children_system


@dataclass
class Row:
    id: str
    measure: str
    goal: str
    unit: str = ""
    values: list[float] = field(default_factory=list)
    met: Callable[[float], bool] | None = None
    noisy: bool = False
    detail: dict = field(default_factory=dict)

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def as_json(self) -> dict:
        median = self.median
        return {"id": self.id, "measure": self.measure, "goal": self.goal, "unit": self.unit,
                "median": None if median is None else round(median, 4),
                "min": round(min(self.values), 4) if self.values else None,
                "max": round(max(self.values), 4) if self.values else None,
                "repetitions": len(self.values),
                "goal_met": None if self.met is None or median is None else bool(self.met(median)),
                "noisy": self.noisy, "detail": self.detail}


def measure(row: Row, once: Callable[[], float | tuple[float, dict]], repetitions: int = REPETITIONS) -> Row:
    """Run ``once`` ``repetitions`` times into ``row``; ``once`` returns the figure, or the
    figure and details (the last repetition's are kept)."""
    for _ in range(repetitions):
        with ForeignLoad() as load:
            got = once()
        value, detail = got if isinstance(got, tuple) else (got, {})
        row.values.append(float(value))
        row.detail = dict(detail, foreign_cpu_share=round(load.share, 3))
        row.noisy = row.noisy or load.share > NOISY_SHARE
    return row


def markdown(rows: list[Row]) -> str:
    lines = ["| id | measure | median (min – max) | goal | met |", "|---|---|---|---|---|"]
    for row in rows:
        data = row.as_json()
        figure = ("not measured" if data["median"] is None else
                  f"{data['median']:g} ({data['min']:g} – {data['max']:g}){' ' + row.unit if row.unit else ''}")
        met = {True: "yes", False: "**missed**", None: "report"}[data["goal_met"]]
        lines.append(f"| {row.id} | {row.measure} | {figure}{' (noisy)' if row.noisy else ''} | {row.goal} | {met} |")
    return "\n".join(lines)

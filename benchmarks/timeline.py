"""The job timeline of a Snakemake run, read from its log (.snakemake/log/*.snakemake.log), and
what it says: wall time per task, the idle share of the cores, each training job's wall time.

Snakemake logs every job's start (a time stamp, then ``rule <name>:`` with its jobid, wildcards
and threads) and its end (a time stamp, then ``Finished jobid: <id>``), to the second.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
START = re.compile(r"^(?:local)?rule (\w+):$")
FINISH = re.compile(r"^Finished jobid: (\d+)")
CORES = re.compile(r"^Provided cores: (\d+)")


@dataclass
class Job:
    rule: str
    start: datetime
    end: datetime | None = None
    threads: int = 1
    wildcards: dict[str, str] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds() if self.end else 0.0

    def task(self, tasks: list[str]) -> str | None:
        """The task the job belongs to: its wildcard, or a task's own rule (``<task>_...``)."""
        if "task" in self.wildcards:
            return self.wildcards["task"]
        return next((t for t in tasks if self.rule.startswith(f"{t}_")), None)


@dataclass
class Run:
    jobs: list[Job]
    cores: int | None


def latest_log(workdir: Path) -> Path:
    """The newest Snakemake log of ``workdir`` that ran jobs (a later no-op or dry run also
    leaves a log, with none)."""
    logs = sorted((workdir / ".snakemake/log").glob("*.snakemake.log"), reverse=True)
    for log in logs:
        if "Finished jobid" in log.read_text(errors="replace"):
            return log
    raise FileNotFoundError(f"{workdir}/.snakemake/log: no Snakemake log with finished jobs")


def parse_log(path: Path) -> Run:
    """Every job the log started, with its start, end (None if it never finished) and threads."""
    jobs: dict[int, Job] = {}
    stamp: datetime | None = None
    current: Job | None = None
    cores = None
    for line in path.read_text(errors="replace").splitlines():
        if m := STAMP.match(line):
            stamp = datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
        elif m := CORES.match(line):
            cores = int(m.group(1))
        elif (m := START.match(line)) and stamp is not None:
            current = Job(m.group(1), stamp)
        elif current is not None and (m := re.match(r"^\s+jobid: (\d+)$", line)):
            jobs[int(m.group(1))] = current
        elif current is not None and (m := re.match(r"^\s+threads: (\d+)$", line)):
            current.threads = int(m.group(1))
        elif current is not None and (m := re.match(r"^\s+wildcards: (.*)$", line)):
            current.wildcards = dict(p.split("=", 1) for p in m.group(1).split(", "))
        elif (m := FINISH.match(line)) and int(m.group(1)) in jobs:
            jobs[int(m.group(1))].end = stamp
            current = None
    return Run([j for j in jobs.values() if j.end is not None], cores)


def idle_share(jobs: list[Job], cores: int) -> float:
    """The share of ``cores`` x (first start to last end) that no job held: a job holds its
    threads (at most the cores) from its start to its end."""
    if not jobs:
        return 0.0
    events = sorted(
        [(j.start.timestamp(), min(j.threads, cores)) for j in jobs]
        + [(j.end.timestamp(), -min(j.threads, cores)) for j in jobs]
    )
    busy = held = 0.0
    last = events[0][0]
    for time, change in events:
        busy += min(held, cores) * (time - last)
        held, last = held + change, time
    span = events[-1][0] - events[0][0]
    return 1 - busy / (cores * span) if span else 0.0


def task_walls(jobs: list[Job], tasks: list[str]) -> dict[str, tuple[float, float]]:
    """Per task: (seconds from the run's first job start to the task's last job end, seconds
    its jobs ran on the timeline, overlapping or not)."""
    first = min(j.start for j in jobs)
    walls = {}
    for task in tasks:
        own = [j for j in jobs if j.task(tasks) == task]
        if own:
            walls[task] = (
                (max(j.end for j in own) - first).total_seconds(),
                (max(j.end for j in own) - min(j.start for j in own)).total_seconds(),
            )
    return walls


def busiest_gaps(jobs: list[Job], cores: int, top: int = 3) -> list[tuple[float, float, str]]:
    """The longest stretches (start s, end s, running rules) where fewer than ``cores`` threads
    ran, relative to the first start: where the idle share comes from."""
    origin = min(j.start for j in jobs).timestamp()
    times = sorted({j.start.timestamp() for j in jobs} | {j.end.timestamp() for j in jobs})
    gaps: list[tuple[float, float, str]] = []
    for a, b in zip(times, times[1:], strict=False):
        running = [j for j in jobs if j.start.timestamp() <= a and j.end.timestamp() >= b]
        if sum(min(j.threads, cores) for j in running) < cores:
            names = ",".join(sorted({j.rule for j in running})) or "nothing"
            if gaps and gaps[-1][1] == a - origin and gaps[-1][2] == names:
                gaps[-1] = (gaps[-1][0], b - origin, names)
            else:
                gaps.append((a - origin, b - origin, names))
    return sorted(gaps, key=lambda g: g[0] - g[1])[:top]

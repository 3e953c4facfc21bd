"""Progress people can read (peftbench/core/progress.py): a few lines per long job on the
console, and job logs of plain lines (no carriage-return bars).

The workflow test runs the math task on the test profile (one experiment and the base model),
once with the local worker forking the training jobs and once with each job in its own process,
since the two hand the job its terminal differently.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from io import StringIO
from pathlib import Path

import pytest
from tqdm import tqdm
from wfutil import copy_workflow

from peftbench.core import progress
from peftbench.core.progress import Console, PlainLog, interval_s

RUNS = {
    "lora/rank8-qv": "results/math/runs/lora/rank8-qv/seed0/result.json",
    "base/no-finetuning": "results/math/runs/base/no-finetuning/seed0/result.json",
}
EXTRA = "tasks: [math]\nselect: {math: [lora/rank8-qv]}\n"
#: A console line that ends a job: how long it took, then its outcome.
END = r"(done in|failed after) \d+ (s|min \d\d s)"


class Clock:
    """A clock the test moves by hand: rate limits are tested without sleeping."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# ---- the log's stream -----------------------------------------------------------------------


def test_plain_log_writes_each_bar_as_one_line() -> None:
    raw = StringIO()
    log = PlainLog(raw)
    print("loading", file=log)
    for _ in tqdm(range(40), file=log, desc="Loading weights", mininterval=0):
        pass
    for _ in tqdm(range(5), file=log, desc="cleared", leave=False, mininterval=0):
        pass
    log.write("a line\r\n")  # a Windows line end is a line end, not a bar
    print("last words", end="", file=log)
    assert raw.getvalue().count("\n") == 3  # the open line waits for its end
    log.finish()
    lines = raw.getvalue().split("\n")
    assert "\r" not in raw.getvalue()
    assert lines[0] == "loading"
    assert lines[1].startswith("Loading weights: 100%") and "40/40" in lines[1]
    assert lines[2:] == ["a line", "last words", ""]  # the cleared bar left nothing


def test_plain_log_shows_a_long_bar_now_and_then() -> None:
    raw, clock = StringIO(), Clock()
    log = PlainLog(raw, every_s=30, clock=clock)
    for done in range(0, 101, 10):
        clock.now += 10  # a bar redrawn every 10 s for 100 s
        log.write(f"\rMap: {done}%")
    log.write("\n")
    # Its state at 30 s, 60 s and 90 s after it started, and its last one.
    assert raw.getvalue().splitlines() == ["Map: 30%", "Map: 60%", "Map: 90%", "Map: 100%"]


# ---- the console's lines --------------------------------------------------------------------


def test_console_switch() -> None:
    assert interval_s({}) == progress.DEFAULT_INTERVAL_S
    assert interval_s({"SLURM_JOB_ID": "7"}) is None  # a cluster job's stderr is a file
    assert interval_s({"SLURM_JOB_ID": "7", "PEFTBENCH_PROGRESS": "on"}) == 15
    assert interval_s({"PEFTBENCH_PROGRESS": "0"}) is None
    assert interval_s({"PEFTBENCH_PROGRESS": "off"}) is None
    assert interval_s({"PEFTBENCH_PROGRESS": "2.5"}) == 2.5
    terminal = StringIO()
    assert progress.start("job", terminal, {"PEFTBENCH_PROGRESS": "0"}) is None
    progress.report_step(1, 2, 0.5)
    progress.finish("nothing")
    assert terminal.getvalue() == ""


def test_console_rate_limits_steps_not_start_and_end() -> None:
    terminal, clock = StringIO(), Clock()
    console = Console("math lora/r8 seed0", terminal, every_s=15, clock=clock)
    console.line("started", force=True)
    for step in range(1, 81):
        clock.now += 1  # one step a second
        valid = {"step": 40, "accuracy": 0.35} if step >= 40 else None
        console.step(step, 80, loss=1 / step, valid=valid)
    clock.now += 20
    console.line("evaluating 10/40")  # another phase's status: rate-limited alike
    console.line("evaluating 20/40")
    console.finish("done")
    console.line("after the end", force=True)
    lines = terminal.getvalue().splitlines()
    # Started, a step every 15 s, the last step (the run was long enough), the end.
    assert [line.split()[4] for line in lines[1:-1]] == [
        "15/80",
        "30/80",
        "45/80",
        "60/80",
        "75/80",
        "80/80",
        "10/40",
    ]
    assert lines[0] == "[math lora/r8 seed0] started" and lines[-1] == "[math lora/r8 seed0] done"
    assert lines[3] == "[math lora/r8 seed0] step 45/80 loss 0.0222 valid accuracy 0.350 (45 s)"


# ---- redirect_log in a job's process --------------------------------------------------------

JOB = """
import json, logging, sys
from pathlib import Path
from snakemake.iocontainers import InputFiles, Log, OutputFiles, Params, ResourceList, Snakemake
from snakemake.iocontainers import Wildcards

# A library's own handler on the stderr of its import, as transformers and diffusers set up.
library = logging.getLogger("library")
library.addHandler(logging.StreamHandler())
library.propagate = False

from peftbench.core.workflow import redirect_log

wildcards = Wildcards(fromdict=dict(task="math", method="lora", name="r8@lr=0.01", seed="0"))
output = OutputFiles(fromdict={"result": "result.json"})
sm = Snakemake(InputFiles(), output, Params(), wildcards, 1, ResourceList(), Log(["job.log"]),
               {}, "train", None)
redirect_log(sm)
library.warning("a library's warning")
print("\\rbar 50%\\rbar 100%\\n", end="")
if sys.argv[1] == "success":
    metrics = {"test_accuracy": 0.25}
    Path("result.json").write_text(json.dumps({"status": "success", "metrics": metrics}))
elif sys.argv[1] == "failed":  # a run that failed inside: it records why, the job exits 0
    error = "NonFiniteLossError: loss is nan at step 3"
    Path("result.json").write_text(json.dumps({"status": "failed", "error": error}))
"""


@pytest.mark.parametrize("outcome", ["success", "failed", "crash"])
def test_redirect_log_in_a_job(tmp_path: Path, outcome: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PEFTBENCH_PROGRESS", "SLURM_JOB_ID")}
    job = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(JOB), outcome],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(Path(progress.__file__).parents[2])},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert job.returncode == 0, job.stderr
    log = (tmp_path / "job.log").read_text()
    assert log == "a library's warning\nbar 100%\n"
    console = job.stderr.splitlines()
    assert console[0] == "[math lora/r8@lr=0.01 seed0] started", job.stderr
    if outcome == "success":
        expected = r"done in \d+ s: success, test_accuracy 0.250"
    elif outcome == "failed":
        expected = r"failed after \d+ s: NonFiniteLossError: loss is nan at step 3; see job.log"
    else:
        expected = r"failed after \d+ s: see job.log"  # no result.json: the job failed
    assert re.fullmatch(r"\[math lora/r8@lr=0.01 seed0\] " + expected, console[1]), console
    assert len(console) == 2 and job.stdout == ""


# ---- the workflow ---------------------------------------------------------------------------


def run_math(workdir: Path, extra: str, every: str | None, *args: str) -> str:
    """Snakemake's console (stdout and stderr) of a run of the two math runs (and what they
    need) with ``PEFTBENCH_PROGRESS`` set to ``every`` (None: unset)."""
    (workdir / "extra.yaml").write_text(extra)
    env = {k: v for k, v in os.environ.items() if k not in ("PEFTBENCH_PROGRESS", "SLURM_JOB_ID")}
    if every is not None:
        env["PEFTBENCH_PROGRESS"] = every
    options = ["--cores", "2", "--resources", "gpu=1"]
    options += ["--configfile", "config/test.yaml", "extra.yaml"]
    cmd = [sys.executable, "-m", "snakemake", *RUNS.values(), *options, *args]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=1200, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def job_lines(console: str) -> dict[str, list[str]]:
    """The console lines of each job, by label, in their order."""
    lines: dict[str, list[str]] = {}
    for label, text in re.findall(r"^\[([^\]]+)\] (.*)$", console, flags=re.M):
        lines.setdefault(label, []).append(text)
    return lines


def assert_plain_logs(workdir: Path) -> None:
    logs = sorted((workdir / "logs").rglob("*.log"))
    assert len(logs) >= 5
    for log in logs:
        assert "\r" not in log.read_text(), log


@pytest.fixture(scope="module")
def consoles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """The console of a run whose training jobs the worker forks (default interval), then of
    the same two training jobs rerun each in its own process, with a step line every step."""
    workdir = copy_workflow(tmp_path_factory.mktemp("progress"))
    forked = run_math(workdir, EXTRA, None)
    assert_plain_logs(workdir)
    own = run_math(workdir, EXTRA + "local_worker: false\n", "0.001", "--forcerun", "train")
    return workdir, forked, own


@pytest.mark.slow
def test_console_lines_from_forked_jobs(consoles: tuple[Path, str, str]) -> None:
    workdir, forked, _ = consoles
    served = (workdir / ".snakemake/peftbench/worker-threads-1.log").read_text()
    assert served.count("train_experiment.py") == len(RUNS), served
    lines = job_lines(forked)
    # Long jobs only: no lines from data preparation or the base reference.
    assert set(lines) == {"math_base_model", *(f"math {run} seed0" for run in RUNS)}, forked
    for run in RUNS:
        started, *_, end = lines[f"math {run} seed0"]
        assert started == "started"
        assert re.fullmatch(END + r": success, test_accuracy \d\.\d{3}", end), end
    started, *_, end = lines["math_base_model"]
    assert started == "started"
    assert re.fullmatch(END + r": final loss \d+\.\d{4}, skill \d\.\d{3}", end), end


@pytest.mark.slow
def test_console_lines_from_own_process_jobs(consoles: tuple[Path, str, str]) -> None:
    workdir, _, own = consoles
    assert_plain_logs(workdir)
    for path in RUNS.values():
        result = json.loads((workdir / path).read_text())
        assert result["provenance"]["process"] == "own"
    lines = job_lines(own)
    assert set(lines) == {f"math {run} seed0" for run in RUNS}, own  # only these reran
    lora = lines["math lora/rank8-qv seed0"]
    # With an interval of 1 ms every one of the 6 steps shows, with its loss.
    steps = [text.split()[1] for text in lora if text.startswith("step ")]
    assert steps == [f"{step}/6" for step in range(1, 7)], lora
    assert re.fullmatch(r"step 6/6 loss \d+\.\d{4} valid accuracy \d\.\d{3} \(\d+ s\)", lora[-2])
    assert lora[0] == "started" and re.fullmatch(END + ": success, .*", lora[-1])
    base = lines["math base/no-finetuning seed0"]
    assert base[0] == "started" and len(base) == 2  # nothing trained: no step lines

"""Interruption and resume: a run killed with SIGKILL and rerun ends with the same numbers."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tiny import PARAMS, REPO, TIMING_KEYS, run

from peftbench.core.config import deep_merge
from peftbench.core.loop import CHECKPOINT

# Enough steps that the kill lands mid-run, a checkpoint every 5 of them.
RESUME_PARAMS = deep_merge(
    PARAMS, {"max_steps": 150, "checkpoint_steps": 5, "eval_steps": 50, "log_steps": 10}
)
RUNNER = """
import json, sys
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[1] + "/tests")
from tiny import run
from pathlib import Path
run(Path(sys.argv[2]), "lora/rank8-qv", sys.argv[3], params=json.loads(sys.argv[4]))
"""


def metrics_without_timing(result: dict) -> dict:
    return {k: v for k, v in result["metrics"].items() if k not in TIMING_KEYS}


def test_sigkill_and_resume_gives_identical_metrics(tiny: Path) -> None:
    reference = run(tiny, "lora/rank8-qv", "uninterrupted", params=RESUME_PARAMS)
    assert reference["status"] == "success", reference["error"]
    assert not (tiny / "uninterrupted/checkpoint").exists(), "checkpoints are removed after success"

    out = tiny / "killed"
    checkpoint = out / "checkpoint" / CHECKPOINT
    proc = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(REPO), str(tiny), "killed", json.dumps(RESUME_PARAMS)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists() and not (out / "result.json").exists(), "killed before the end"

    resumed = run(tiny, "lora/rank8-qv", "killed", params=RESUME_PARAMS)
    assert resumed["status"] == "success", resumed["error"]
    assert metrics_without_timing(resumed) == metrics_without_timing(reference)
    assert resumed["curves"]["train_loss"] == reference["curves"]["train_loss"]
    assert resumed["curves"]["valid_accuracy"] == reference["curves"]["valid_accuracy"]


def test_checkpoints_kept_when_asked(tiny: Path) -> None:
    params = deep_merge(PARAMS, {"checkpoint_steps": 2, "keep_checkpoints": True})
    result = run(tiny, "lora/rank8-qv", "kept", params=params)
    assert result["status"] == "success"
    assert (tiny / "kept/checkpoint" / CHECKPOINT).exists()


def test_failed_experiment_next_to_a_good_one(tiny: Path) -> None:
    """A crash inside one experiment is recorded; the next experiment is unaffected."""
    bad = run(
        tiny,
        "lora/missing-module",
        "bad",
        adapter={
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": 4,
            "target_modules": ["no_such_proj"],
        },
    )
    assert bad["status"] == "failed" and "no_such_proj" in bad["error"]
    good = run(tiny, "lora/rank8-qv", "good")
    assert good["status"] == "success"
    assert json.loads((tiny / "bad/result.json").read_text())["status"] == "failed"

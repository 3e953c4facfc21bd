"""Interruption and resume: a run killed with SIGKILL and rerun ends with the same numbers; a
full disk or an unwritable run folder leaves no partial outputs (tests/workflow/test_recovery.py
does the workflow-level faults)."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny import PARAMS, REPO, TIMING_KEYS, run

from peftbench.analysis.aggregate import load_results, summarize
from peftbench.core.config import deep_merge
from peftbench.core.io import staged_dir
from peftbench.core.loop import CHECKPOINT
from peftbench.core.runs import RunOutputError

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


def staging_leftovers(parent: Path, name: str) -> list[Path]:
    """Temporary folders of run folder ``name`` left in ``parent``."""
    return [p for p in parent.iterdir() if p.name.startswith(f".{name}.")]


def test_outputs_arrive_result_last_and_replace_an_earlier_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = tmp_path / "seed0"
    (final / "checkpoint").mkdir(parents=True)
    (final / "adapter").mkdir()
    (final / "adapter/old.safetensors").write_text("an earlier run's")
    (final / "test_predictions.jsonl").write_text("an earlier run's")
    (tmp_path / f".seed0.{'0' * 32}.tmp").mkdir()  # left by a killed attempt
    moved, replace = [], os.replace
    monkeypatch.setattr(
        os, "replace", lambda src, dst: (moved.append(Path(dst).name), replace(src, dst))
    )
    with staged_dir(final, last="result.json", keep=("checkpoint",)) as folder:
        (folder / "result.json").write_text("{}")
        (folder / "adapter").mkdir()
        (folder / "adapter/new.safetensors").write_text("this run's")
        (folder / "samples.png").write_text("this run's")  # sorts after result.json
        assert not (final / "result.json").exists()
    assert moved[-1] == "result.json"
    assert sorted(p.name for p in final.iterdir()) == [
        "adapter",
        "checkpoint",
        "result.json",
        "samples.png",
    ]
    assert [p.name for p in (final / "adapter").iterdir()] == ["new.safetensors"]
    assert staging_leftovers(tmp_path, "seed0") == []


def test_disk_full_while_saving_leaves_a_failed_row_and_no_partial_files(
    tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC halfway through the outputs (the adapter, after the per-item file): the run is
    recorded as failed, and nothing it had written is left."""
    from peft import PeftModel

    def disk_full(self: PeftModel, folder: str, *args: object, **kwargs: object) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "adapter_model.safetensors").write_bytes(b"\0" * 64)  # half written
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), folder)

    monkeypatch.setattr(PeftModel, "save_pretrained", disk_full)
    result = run(tiny, "lora/rank8-qv", "disk-full")
    assert result["status"] == "failed" and "No space left on device" in result["error"]
    out = tiny / "disk-full"
    assert [p.name for p in out.iterdir()] == ["result.json"], "no adapter/ nor item file"
    assert staging_leftovers(tiny, "disk-full") == []
    row = summarize(load_results([out / "result.json"])).iloc[0]
    assert row["status"] == "failed" and "No space left on device" in row["error"]


def test_unwritable_run_folder_fails_the_job_alone_with_a_clear_message(
    tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing can be moved into the run folder (EACCES, as a read-only folder gives a user that
    is not root): not even a failed result.json can be written, so the job fails, naming the
    folder, and leaves no partial file anywhere."""
    out, replace = tiny / "read-only", os.replace

    def refuse(src: str, dst: str) -> None:
        if Path(dst).parent == out:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dst))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(RunOutputError, match="Permission denied") as failure:
        run(tiny, "lora/rank8-qv", "read-only")
    assert str(out) in str(failure.value)
    assert list(out.iterdir()) == []
    assert staging_leftovers(tiny, "read-only") == []


@pytest.mark.skipif(
    os.geteuid() == 0,
    reason="root writes into read-only folders (CI runs as root): the EACCES test simulates it",
)
def test_read_only_run_folder(tiny: Path) -> None:
    out = tiny / "chmod"
    out.mkdir()
    out.chmod(0o555)
    try:
        with pytest.raises(RunOutputError, match="Permission denied"):
            run(tiny, "base/no-finetuning", "chmod")
    finally:
        out.chmod(0o755)
    assert list(out.iterdir()) == []

"""The pre-flight verdicts kept between DAG builds (peftbench.core.preflight_cache), end to end:
a second ``snakemake -n`` reads every verdict from .snakemake/peftbench/preflight/ and says the
same (a rejection's message, a note), and editing an experiment checks it again."""

from __future__ import annotations

import json
import re

import pytest
from wfutil import copy_workflow, snakemake

FOLDER = ".snakemake/peftbench/preflight"
EXTRA = """tasks: [math]
select:
  math: ["lora/rank8-qv", "lora/bad-target", "lora/noted"]
"""
LORA = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "target_modules": ["q_proj"]}


def said(output: str) -> list[str]:
    """The pre-flight's lines: its notes and its problems (no timestamps, no job list)."""
    return [
        line
        for line in output.splitlines()
        if "pre-flight note" in line or re.search(r"lora/(bad-target|noted)", line)
    ]


@pytest.mark.slow
def test_a_second_dry_run_reads_every_verdict_from_the_cache(tmp_path):
    work = copy_workflow(tmp_path)
    math = work / "experiments/math/lora"
    for name, adapter, params in [
        ("bad-target", {**LORA, "target_modules": ["no_such_layer"]}, None),
        ("noted", LORA, {"model_id": "meta-llama/Llama-3.2-3B"}),
    ]:
        (math / name).mkdir()
        (math / name / "adapter_config.json").write_text(json.dumps(adapter))
        if params:
            (math / name / "training_params.json").write_text(json.dumps(params))

    first = snakemake(work, "-n", extra_config=EXTRA)
    assert first.returncode != 0
    lines = said(first.stdout + first.stderr)
    assert any("no_such_layer" in line for line in lines), first.stderr
    assert any("pre-flight note" in line and "'model_id'" in line for line in lines)
    entries = {p: p.stat().st_mtime_ns for p in (work / FOLDER).glob("*.json")}
    assert entries, "verdicts are kept"

    second = snakemake(work, "-n", extra_config=EXTRA)
    assert second.returncode != 0
    assert said(second.stdout + second.stderr) == lines
    after = {p: p.stat().st_mtime_ns for p in (work / FOLDER).glob("*.json")}
    assert after == entries, "every verdict came from the cache: none was written again"

    # The fix is checked again (not read from the cache) and accepted.
    (math / "bad-target" / "adapter_config.json").write_text(json.dumps(LORA))
    third = snakemake(work, "-n", extra_config=EXTRA)
    assert third.returncode == 0, third.stderr
    assert len(list((work / FOLDER).glob("*.json"))) > len(entries)

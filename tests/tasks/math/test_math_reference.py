"""The task's shared reference (rule math_base_reference): a run that takes its tokenized data
and base held-out loss gets bit-identical numbers to one that computes them inline."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from paths import REPO
from tiny import CONFIG, PARAMS, TIMING_KEYS

from peftbench.core.config import deep_merge
from peftbench.core.runs import RunContext
from peftbench.tasks.math import SPEC, reference_job
from peftbench.tasks.math import reference as ref
from peftbench.tasks.math import run as math_run


def _context(tiny: Path, experiment: str, out: Path, params: dict, reference: Path | None):
    method, name = experiment.split("/")
    inputs = {"data": tiny / "data", "base": tiny / "base"}
    if reference is not None:
        inputs["reference"] = reference
    return RunContext(
        task="math",
        method=method,
        name=name,
        seed=0,
        exp_dir=REPO / "experiments/math" / experiment if method != "base" else None,
        params=params,
        task_cfg=CONFIG,
        inputs=inputs,
        out_dir=out,
        threads=1,
        progress=False,
    )


@pytest.fixture(scope="module")
def reference(tiny: Path) -> Path:
    """Built by the rule's entry point with the rule's params: only the reference's settings of
    the training defaults and the base model config (rules.smk, math_base_reference)."""
    out = tiny / "base_reference"
    if not (out / ref.MANIFEST).exists():
        job = SimpleNamespace(
            scriptdir=str(REPO / "peftbench/tasks/math"),
            log=[],
            input={"data": str(tiny / "data"), "base": str(tiny / "base")},
            output=[str(out)],
            params=SimpleNamespace(
                training=ref.settings(PARAMS), task_cfg={"base_model": CONFIG["base_model"]}
            ),
            threads=1,
        )
        reference_job.main(job)
    return out


def _run(tiny, experiment, out, reference=None, params=PARAMS) -> dict:
    result = math_run.run_experiment(_context(tiny, experiment, tiny / out, params, reference))
    assert result["status"] == "success", result["error"]
    return result


def _numbers(result: dict) -> tuple[dict, dict]:
    metrics = {k: v for k, v in result["metrics"].items() if k not in TIMING_KEYS}
    return metrics, result["curves"]


def _count_losses(monkeypatch: pytest.MonkeyPatch) -> list:
    """Make the inline tokenization fail and count held-out loss passes, to prove that a run
    took its shared parts from the reference."""

    def refuse(*args, **kwargs):
        raise AssertionError("tokenized inline although the reference matches")

    calls, real_loss = [], math_run.heldout_loss

    def counted(*args, **kwargs):
        calls.append(1)
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(math_run, "encode_rows", refuse)
    monkeypatch.setattr(math_run, "encode_heldout", refuse)
    monkeypatch.setattr(math_run, "heldout_loss", counted)
    return calls


@pytest.mark.parametrize(
    "experiment",
    ["lora/rank8-qv", "prompt_tuning/tokens20", "prefixtuning/tokens20", "base/no-finetuning"],
)
def test_shared_reference_gives_identical_numbers(tiny, reference, monkeypatch, experiment):
    slug = experiment.replace("/", "-")
    inline = _numbers(_run(tiny, experiment, f"inline-{slug}"))
    calls = _count_losses(monkeypatch)
    shared = _numbers(_run(tiny, experiment, f"shared-{slug}", reference))
    # One held-out loss pass (after training) instead of two: "before" came from the reference.
    assert len(calls) == 1
    assert shared == inline


def test_reference_records_the_inline_values(tiny, reference):
    manifest = json.loads((reference / ref.MANIFEST).read_text())
    inline = _run(tiny, "base/no-finetuning", "base-inline")["metrics"]
    assert manifest["heldout_loss_before"] == inline["heldout_loss_before"]
    assert manifest["rows"]["train"] == CONFIG["data"]["embedded"]["train_size"]
    assert manifest["settings"] == ref.settings(PARAMS)


@pytest.mark.parametrize(
    ("change", "part_shared", "loss_shared"),
    [
        ({"max_seq_length": 24}, False, False),
        ({"query_template": "Q: {query}\nA:"}, False, False),
        ({"batch_size": 4}, True, False),
        ({"max_steps": 3}, True, True),  # not a key the reference depends on
    ],
)
def test_a_run_with_other_settings_computes_its_own(
    tiny, reference, change, part_shared, loss_shared
):
    params = deep_merge(PARAMS, change)
    shared = ref.Reference(reference)
    manifest = shared.manifest
    hashes = (manifest["data_hash"], manifest["base_model_hash"])
    assert (shared.examples("train", params, *hashes) is not None) == part_shared
    before = shared.heldout_loss_before(params, *hashes, manifest["environment"])
    assert (before is not None) == loss_shared


def test_a_reference_from_elsewhere_is_not_used(tiny, reference):
    shared = ref.Reference(reference)
    m = shared.manifest
    env = {**m["environment"], "threads": m["environment"]["threads"] + 1}
    assert shared.heldout_loss_before(PARAMS, m["data_hash"], m["base_model_hash"], env) is None
    assert shared.examples("train", PARAMS, m["data_hash"], "another base") is None
    assert shared.examples("train", PARAMS, "other data", m["base_model_hash"]) is None
    assert (
        ref.Reference(None).examples("train", PARAMS, m["data_hash"], m["base_model_hash"]) is None
    )


def test_tampered_reference_value_reaches_the_result(tiny, reference):
    # The shared value is really what the run reports (so the equality test above compares
    # two different code paths).
    copy = tiny / "tampered_reference"
    shutil.copytree(reference, copy, dirs_exist_ok=True)
    manifest = json.loads((copy / ref.MANIFEST).read_text())
    manifest["heldout_loss_before"] = 123.0
    (copy / ref.MANIFEST).write_text(json.dumps(manifest))
    metrics = _run(tiny, "base/no-finetuning", "tampered", copy)["metrics"]
    assert metrics["heldout_loss_before"] == 123.0
    assert set(metrics) >= set(SPEC.metrics)


def test_training_jobs_take_the_reference_as_input():
    # Every math training job gets it (rules/common.smk training_inputs reads extra_inputs).
    assert SPEC.extra_inputs(CONFIG)["reference"] == ref.REFERENCE_DIR
    assert SPEC.extra_inputs(CONFIG)["base"]
    hub = deep_merge(CONFIG, {"base_model": {"source": "hub"}})
    assert SPEC.extra_inputs(hub) == {"reference": ref.REFERENCE_DIR}

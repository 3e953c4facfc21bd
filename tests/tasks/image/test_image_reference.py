"""The image task's base reference (rule image_base_reference): computed once, loaded by every run
whose settings match, and a run's numbers are the same bit for bit whether it loaded it or
computed it inline."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from image_setup import CONFIG, TIMING
from paths import REPO

from peftbench.core.runs import RunContext, pick_device
from peftbench.tasks.image import BASE_REFERENCE, GENERATION_KEYS, SPEC
from peftbench.tasks.image.reference import MANIFEST, load_reference, save_reference
from peftbench.tasks.image.run import compute_reference, run_experiment


def _inputs(tiny: Path) -> dict[str, Path]:
    return {"data": tiny / "data", "base": tiny / "base", "encoder": tiny / "encoder"}


@pytest.fixture(scope="module")
def reference_dir(tiny_image: Path) -> Path:
    """The reference as the rule computes it: default generation settings, a job's thread count."""
    torch.set_num_threads(1)
    params = {key: CONFIG["training"][key] for key in GENERATION_KEYS}
    reference = compute_reference(CONFIG, params, _inputs(tiny_image), pick_device())
    save_reference(tiny_image / "reference", reference)
    return tiny_image / "reference"


def _run(tiny: Path, experiment: str, out: str, reference: Path | None, **overrides) -> dict:
    method, name = experiment.split("/")
    inputs = _inputs(tiny) | ({"reference": reference} if reference else {})
    ctx = RunContext(
        task="image",
        method=method,
        name=name,
        seed=0,
        exp_dir=None if method == "base" else REPO / "experiments/image" / experiment,
        params={**CONFIG["training"], **overrides},
        task_cfg=CONFIG,
        inputs=inputs,
        out_dir=tiny / out,
        threads=1,
        progress=False,
    )
    result = run_experiment(ctx)
    assert result["status"] == "success", result["error"]
    return result


def _outcome(result: dict, run_dir: Path) -> dict:
    """Everything a run reports but timings and memory: metrics, curves, per-item scores and the
    sample grid's bytes."""
    return {
        "metrics": {k: v for k, v in result["metrics"].items() if k not in TIMING},
        "curves": result["curves"],
        "items": (run_dir / SPEC.item_file).read_text(),
        "samples": hashlib.sha256((run_dir / SPEC.samples_file).read_bytes()).hexdigest(),
    }


@pytest.mark.parametrize("experiment", ["lora/rank4", "base/no-finetuning"])
def test_shared_reference_gives_the_same_numbers(
    tiny_image: Path, reference_dir: Path, experiment: str
) -> None:
    tag = experiment.replace("/", "-")
    inline = _run(tiny_image, experiment, f"inline-{tag}", None)
    shared = _run(tiny_image, experiment, f"shared-{tag}", reference_dir)
    assert inline["provenance"]["base_reference"] == "inline"
    assert shared["provenance"]["base_reference"] == "shared"
    assert _outcome(shared, tiny_image / f"shared-{tag}") == _outcome(
        inline, tiny_image / f"inline-{tag}"
    )
    if experiment.startswith("base"):
        assert shared["metrics"]["drift"] == 0.0
    else:
        assert shared["metrics"]["drift"] > 0  # the comparison above saw real drift


def test_a_run_with_other_generation_settings_computes_its_own(
    tiny_image: Path, reference_dir: Path
) -> None:
    steps = CONFIG["training"]["num_inference_steps"] + 1
    shared = _run(
        tiny_image, "lora/rank4", "steps-shared", reference_dir, num_inference_steps=steps
    )
    inline = _run(tiny_image, "lora/rank4", "steps-inline", None, num_inference_steps=steps)
    assert shared["provenance"]["base_reference"] == "inline"
    assert _outcome(shared, tiny_image / "steps-shared") == _outcome(
        inline, tiny_image / "steps-inline"
    )


def test_reference_is_loaded_only_with_exactly_its_settings(reference_dir: Path) -> None:
    settings = json.loads((reference_dir / MANIFEST).read_text())["settings"]
    reference = load_reference(reference_dir, settings)
    assert reference is not None and reference.images.drift.dtype == np.uint8
    assert reference.test_refs is not None and reference.encoder_hash
    assert reference.embeddings_for(reference.encoder_hash)
    assert not reference.embeddings_for("another encoder")
    numerics = settings["numerics"].replace("threads=1", "threads=2")
    assert numerics != settings["numerics"]
    for key, value in (("numerics", numerics), ("device", "cuda"), ("dtype", "x")):
        assert load_reference(reference_dir, {**settings, key: value}) is None
    assert load_reference(None, settings) is None
    assert load_reference(reference_dir.parent / "absent", settings) is None


def test_every_embedded_and_hub_training_job_takes_the_reference() -> None:
    assert SPEC.extra_inputs(CONFIG)["reference"] == BASE_REFERENCE
    hub = {**CONFIG, "base_model": {"source": "hub"}, "encoder": {"source": "hub"}}
    assert SPEC.extra_inputs(hub) == {"reference": BASE_REFERENCE}

"""The pre-flight verdict cache (peftbench.core.preflight_cache): an unchanged experiment is not
checked again, any change to what its verdict depends on checks it again, and a verdict read
from the cache is the one the check gives (problems, notes, their order)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from paths import REPO

from peftbench.core import codehash, preflight_cache
from peftbench.core.config import training_table
from peftbench.core.preflight_cache import PreflightCache, code_digest
from peftbench.core.validate import validate_task
from peftbench.tasks import registry
from peftbench.tasks.math.embedded_lm import build_meta_model

CONFIG = yaml.safe_load((REPO / "config/config.yaml").read_text())
TABLE = training_table(registry.get("math").training_keys)
LORA = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "target_modules": ["q_proj"]}
IA3 = {"peft_type": "IA3", "task_type": "CAUSAL_LM", "target_modules": ["v_proj"],
       "feedforward_modules": []}  # fmt: skip
#: Experiments whose verdicts cover each kind: accepted, rejected, accepted with a note.
EXPERIMENTS = {
    "lora/good": (LORA, None),
    "ia3/good": (IA3, None),
    "lora/bad-target": ({**LORA, "target_modules": ["no_such_layer"]}, None),
    "lora/noted": (LORA, {"model_id": "meta-llama/Llama-3.2-3B"}),
    "tokens/outside": (
        {"peft_type": "TRAINABLE_TOKENS", "task_type": "CAUSAL_LM", "token_indices": [9999]},
        None,
    ),
}


class Builder:
    """The math task's meta-model builder, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, task_cfg: dict) -> object:
        self.calls += 1
        return build_meta_model(task_cfg)


def write(root: Path, name: str, adapter: dict | None, params: dict | None = None) -> None:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    if adapter is not None:
        (folder / "adapter_config.json").write_text(json.dumps(adapter))
    if params is not None:
        (folder / "training_params.json").write_text(json.dumps(params))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "experiments"
    for name, (adapter, params) in EXPERIMENTS.items():
        write(root, name, adapter, params)
    return root


def task(root: Path) -> dict:
    return {**CONFIG["math"], "experiments_dir": str(root)}


def check(
    cfg: dict, cache: PreflightCache | None, builder: Builder | None = None
) -> tuple[list[str], list[str]]:
    notes: list[str] = []
    experiments = sorted(
        p.parent.relative_to(cfg["experiments_dir"]).as_posix()
        for p in Path(cfg["experiments_dir"]).glob("*/*/adapter_config.json")
    )
    problems = validate_task(
        cfg, experiments, builder or Builder(), TABLE, notes=notes, cache=cache
    )
    return problems, notes


def new_cache(tmp_path: Path, code: str = "code-1") -> PreflightCache:
    return PreflightCache(tmp_path / "cache", code)


def entries(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache").glob("*.json"))


def test_verdicts_are_the_same_with_and_without_the_cache(root, tmp_path):
    """Problems and notes, in order, from a fresh check, a cold cache and a warm one; the warm
    one builds no model."""
    cfg = task(root)
    plain = check(cfg, None)
    assert len(plain[0]) == 2 and plain[1], "the fixture must reject two and note one"
    cold = check(cfg, new_cache(tmp_path))
    warm_builder = Builder()
    warm = check(cfg, new_cache(tmp_path), warm_builder)
    assert plain == cold == warm
    assert warm_builder.calls == 0
    assert len(entries(tmp_path)) == len(EXPERIMENTS)


def test_a_cached_note_is_printed(root, tmp_path, capsys):
    cfg = task(root)
    check(cfg, new_cache(tmp_path))
    validate_task(cfg, ["lora/noted"], Builder(), TABLE, cache=new_cache(tmp_path))
    err = capsys.readouterr().err
    assert "peftbench pre-flight note:" in err and "'model_id'" in err


def warm(root: Path, tmp_path: Path) -> dict:
    cfg = task(root)
    check(cfg, new_cache(tmp_path))
    return cfg


def rechecked(cfg: dict, cache: PreflightCache) -> int:
    """How many times the model was built for a check of ``cfg`` (0: all from the cache)."""
    builder = Builder()
    check(cfg, cache, builder)
    return builder.calls


def test_an_unchanged_experiment_is_not_checked_again(root, tmp_path):
    cfg = warm(root, tmp_path)
    assert rechecked(cfg, new_cache(tmp_path)) == 0


def test_an_edited_adapter_config_is_checked_again(root, tmp_path):
    cfg = warm(root, tmp_path)
    write(root, "lora/bad-target", {**LORA, "target_modules": ["v_proj"]})
    problems, _ = check(cfg, new_cache(tmp_path))
    assert not any("lora/bad-target" in p for p in problems)


def test_an_edited_training_param_is_checked_again(root, tmp_path):
    cfg = warm(root, tmp_path)
    riemannian = {"optimizer_type": "riemannian", "optimizer_kwargs": {"lr": 1e-4, "reg": 0.01}}
    write(root, "ia3/good", None, riemannian)
    problems, _ = check(cfg, new_cache(tmp_path))
    assert any("ia3/good" in p and "'riemannian'" in p for p in problems), problems


def test_an_edited_task_default_is_checked_again(root, tmp_path):
    cfg = warm(root, tmp_path)
    cfg["training"] = {**cfg["training"], "max_steps": cfg["training"]["max_steps"] + 1}
    assert rechecked(cfg, new_cache(tmp_path)) == 1


def test_an_edited_base_model_is_checked_again(root, tmp_path):
    cfg = warm(root, tmp_path)
    embedded = cfg["base_model"]["embedded"]
    cfg["base_model"] = {**cfg["base_model"], "embedded": {**embedded, "vocab_size": 20000}}
    problems, _ = check(cfg, new_cache(tmp_path))
    assert not any("tokens/outside" in p for p in problems), "9999 is inside 20000 tokens"


def test_other_library_versions_or_code_check_again(root, tmp_path, monkeypatch):
    cfg = warm(root, tmp_path)
    assert rechecked(cfg, new_cache(tmp_path, code="code-2")) == 1
    versions = {**preflight_cache.library_versions(), "peft": "0.0.1"}
    monkeypatch.setattr(preflight_cache, "library_versions", lambda: versions)
    assert rechecked(cfg, new_cache(tmp_path)) == 1


def test_a_corrupted_entry_is_ignored_and_rewritten(root, tmp_path):
    cfg = warm(root, tmp_path)
    expected = check(cfg, None)
    for path, garbage in zip(
        entries(tmp_path), ["{", '{"format": 1, "problems": 3}', "", "[]", "x"], strict=True
    ):
        path.write_text(garbage)
    assert check(cfg, new_cache(tmp_path)) == expected
    assert rechecked(cfg, new_cache(tmp_path)) == 0, "the entries were rewritten"
    assert not list((tmp_path / "cache").glob(".*.tmp")), "no temporary file is left"


def test_an_unwritable_cache_folder_only_costs_the_next_check(root, tmp_path):
    (tmp_path / "cache").write_text("a file where the folder should be")
    cfg = task(root)
    assert check(cfg, new_cache(tmp_path)) == check(cfg, None)


def test_a_hub_model_read_through_the_hub_is_not_cached(tmp_path):
    cfg = {"base_model": {"source": "hub", "hub": {"model_id": "someone/not-shipped"}}}
    assert PreflightCache(tmp_path, "c").architecture(cfg) is None


def test_a_local_architecture_is_keyed_by_its_config_files(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "weights.safetensors").write_bytes(b"\0" * 16)
    cfg = {"base_model": {"source": "hub", "hub": {"model_id": str(model)}}}
    before = PreflightCache(tmp_path, "c").architecture(cfg)
    (model / "weights.safetensors").write_bytes(b"\1" * 16)
    assert PreflightCache(tmp_path, "c").architecture(cfg) == before, "weights never count"
    (model / "config.json").write_text('{"hidden_size": 16}')
    assert PreflightCache(tmp_path, "c").architecture(cfg) != before


def test_the_code_digest_follows_every_module(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("X = 1\n")
    before = code_digest([package])
    (package / "a.py").write_text("X = 2\n")
    assert code_digest([package]) != before
    assert code_digest([codehash.ROOT]) == code_digest([codehash.ROOT])


def test_the_problems_of_a_file_check_are_kept(tmp_path):
    cache = new_cache(tmp_path)
    runs = []

    def run() -> list[str]:
        runs.append(1)
        return ["f.json: 'x' is wrong"]

    inputs = {"a": 1}
    assert cache.problems("files", inputs, run) == cache.problems("files", inputs, run)
    assert len(runs) == 1
    cache.problems("files", {"a": 2}, run)
    assert len(runs) == 2


def test_all_cached_imports_no_torch(root, tmp_path):
    """With every verdict cached, the check imports neither torch nor peft nor transformers
    (their import is most of a dry run's time)."""
    cfg = warm(root, tmp_path)
    script = f"""
import json, sys
from peftbench.core.config import training_table
from peftbench.core.preflight_cache import PreflightCache
from peftbench.core.validate import validate_task
from peftbench.tasks import registry

def build(cfg):
    raise AssertionError("the model was built")

cfg = json.loads({json.dumps(json.dumps(cfg))})
table = training_table(registry.get("math").training_keys)
cache = PreflightCache({str(tmp_path / "cache")!r}, "code-1")
experiments = {sorted(EXPERIMENTS)!r}
validate_task(cfg, experiments, build, table, notes=[], cache=cache)
print(json.dumps(sorted(m for m in ("torch", "peft", "transformers") if m in sys.modules)))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []

"""Check every experiment against the base model's architecture before any job starts.

Runs while Snakemake builds the DAG (rules/common.smk), after the file checks of
``experiments`` (malformed files, unknown or mistyped keys). It catches what needs the model:
target modules that do not exist, method constraints such as block sizes that must divide a
layer's width, adapters with nothing to train. Each adapter wraps a copy of the base architecture
built on the *meta* device, so checking a 3B-parameter model allocates no memory for weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peftbench.core.config import ConfigError
from peftbench.core.experiments import ADAPTER_CONFIG, effective_params


def check_local_data(data_cfg: dict[str, Any]) -> list[str]:
    """Local data files named by a hub-style data config exist and are not empty."""
    problems = []
    for split, split_cfg in (
        (data_cfg.get("hub") or {}).items() if data_cfg["source"] == "hub" else []
    ):
        path = Path(split_cfg["path"]).expanduser()
        looks_local = path.suffix in {".json", ".jsonl", ".parquet"} or split_cfg[
            "path"
        ].startswith((".", "/", "~"))
        if looks_local and not path.exists():
            problems.append(f"data.hub.{split}.path: {path} does not exist")
        elif path.is_file() and path.stat().st_size == 0:
            problems.append(f"data.hub.{split}.path: {path} is empty")
    return problems


def meta_model(model_cfg: dict[str, Any]) -> Any:
    """The base architecture with no weights allocated (meta device)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

    remote = bool(model_cfg.get("trust_remote_code", False))
    if model_cfg["source"] == "embedded":
        embedded = model_cfg["embedded"]
        config = LlamaConfig(vocab_size=embedded["vocab_size"], tie_word_embeddings=True,
                             **embedded["architecture"])  # fmt: skip
    else:
        hub = model_cfg["hub"]
        config = AutoConfig.from_pretrained(hub["model_id"], revision=hub.get("revision"),
                                            trust_remote_code=remote)  # fmt: skip
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=remote)


def meta_transformer(model_cfg: dict[str, Any]) -> Any:
    """The image model's ``Flux2Transformer2DModel`` with no weights allocated (meta device)."""
    import torch
    from diffusers import Flux2Transformer2DModel

    if model_cfg["source"] == "embedded":
        from peftbench.tasks.image.embedded import transformer_config

        config = transformer_config(model_cfg["embedded"])
    else:
        hub = model_cfg["hub"]
        config = Flux2Transformer2DModel.load_config(
            hub["model_id"], subfolder="transformer", revision=hub.get("revision")
        )
    with torch.device("meta"):
        return Flux2Transformer2DModel.from_config(config)


def check_experiment(
    model: Any, root: Path, experiment: str, defaults: dict[str, Any]
) -> list[str]:
    """Problems of one experiment; ``model`` is a fresh meta-device base model (it gets wrapped)."""
    from peftbench.core.runs import wrap_peft

    folder = Path(root) / experiment
    try:
        params = effective_params(defaults, root, experiment)
    except ConfigError as exc:
        return str(exc).splitlines()
    if not (folder / ADAPTER_CONFIG).exists():
        return []
    import copy

    import torch

    pristine = copy.deepcopy(model)  # meta tensors: no memory
    try:
        # Adapter weights on the meta device too: checking a VeRA or LoRA adapter of a
        # 4B-parameter model must not allocate gigabytes while the DAG is built.
        with torch.device("meta"):
            wrapped, _ = wrap_peft(model, folder, params)
    except RuntimeError as exc:
        if "meta" not in str(exc):
            return [f"{folder / ADAPTER_CONFIG}: {type(exc).__name__}: {exc}"]
        # Some methods need real values to build (BOFT's butterfly permutations call .item()):
        # their adapter weights are then allocated on the CPU, the base model stays on meta.
        try:
            wrapped, _ = wrap_peft(pristine, folder, params)
        except Exception as exc2:  # noqa: BLE001 - PEFT raises many types; each is a finding
            return [f"{folder / ADAPTER_CONFIG}: {type(exc2).__name__}: {exc2}"]
    except Exception as exc:  # noqa: BLE001 - PEFT raises many types; each is a finding
        return [f"{folder / ADAPTER_CONFIG}: {type(exc).__name__}: {exc}"]
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    if trainable == 0:
        return [f"{folder / ADAPTER_CONFIG}: the adapter has no trainable parameters"]
    return []


def validate_task(task_cfg: dict[str, Any], experiments: list[str], task: str = "math") -> list[str]:  # fmt: skip
    """One message per problem, each naming the file and the field."""
    problems = check_local_data(task_cfg["data"]) if task == "math" else []
    root = Path(task_cfg["experiments_dir"])
    build = meta_transformer if task == "image" else meta_model
    for experiment in experiments:
        model = build(task_cfg["base_model"])
        problems += check_experiment(model, root, experiment, task_cfg["training"])
    return problems

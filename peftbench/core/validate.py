"""Check every experiment against the base model's architecture before any job starts.

Runs while Snakemake builds the DAG (rules/common.smk), after the file checks of
``experiments`` (malformed files, unknown or mistyped keys). It catches what needs the model:
target modules that do not exist, method constraints such as block sizes that must divide a
layer's width, adapters with nothing to train, token indices outside the vocabulary, an
optimizer that does not fit the adapter (the Riemannian one needs LoRA factors), training keys
of the published suite that name another base model or another kind of adapter. Each adapter
wraps a copy of the base architecture built on the *meta* device, so checking a 3B-parameter
model allocates no memory for weights; a method whose setup the meta device cannot run is
checked another way or, at worst, skipped with a note (peftbench.core.metacheck), never
rejected for it. A hub model's architecture comes from the repository, a local folder or the
Hugging Face cache (peftbench.core.offline), so the check runs offline.

Notes (what was checked another way, what was ignored) are printed to stderr, one line each,
or collected by the caller (``validate_task(..., notes=[])``). The workflow keeps each verdict
(peftbench.core.preflight_cache): an unchanged experiment is not checked again, and the base
model (and torch) is built only for the experiments that are.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftbench.core import offline
from peftbench.core.config import ConfigError, read_json_object
from peftbench.core.experiments import ADAPTER_CONFIG, TRAINING_PARAMS, effective_params

if TYPE_CHECKING:
    from peftbench.core.preflight_cache import PreflightCache
    from peftbench.tasks.spec import TrainingKey

#: Warnings that wrapping a weight-less copy of the model raises and that ask nothing of the user
#: here: (category, message regex). Each shows again in the training job's log, where it applies.
NOISE = (
    # transformers deprecates a property that peft (0.21) still reads; nothing to change here.
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
    # BEFT on a layer without bias: only merging is impossible, and the benchmark never merges.
    (UserWarning, r"Detected that the base layer has no bias term"),
    # BOFT's CUDA kernel cannot build on a CPU-only DAG host; peft falls back to plain torch
    # and then says so with the butterfly factor note.
    (UserWarning, r"Failed to load the CUDA extension"),
    (UserWarning, r"Setting boft_n_butterfly_factor to 1"),
    # peft's generic note when a method meets a layer type it was not written for (RMSNorm): the
    # wrap succeeded, and the job's log keeps the note next to the numbers it may affect.
    (UserWarning, r"Unsupported layer type .* proceed at your own risk"),
)


@contextmanager
def quiet_meta_checks() -> Iterator[None]:
    """Silence :data:`NOISE` (only that, by category and message) while adapters are checked."""
    with warnings.catch_warnings():
        for category, message in NOISE:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


def check_local_data(data_cfg: Mapping[str, Any]) -> list[str]:
    """Local data files named by a hub-style data config exist and are not empty: ``data.hub``
    is either one source (``{path: ...}``) or one per split (``{train: {path: ...}, ...}``)."""
    if data_cfg.get("source") != "hub":
        return []
    hub = data_cfg.get("hub") or {}
    sources = {"hub": hub} if "path" in hub else {f"hub.{k}": v for k, v in hub.items()}
    problems = []
    for key, source in sources.items():
        if not isinstance(source, Mapping) or not isinstance(source.get("path"), str):
            continue
        path = Path(source["path"]).expanduser()
        looks_local = path.suffix in {".json", ".jsonl", ".parquet"} or source["path"].startswith(
            (".", "/", "~")
        )
        if looks_local and not path.exists():
            problems.append(f"data.{key}.path: {path} does not exist")
        elif path.is_file() and path.stat().st_size == 0:
            problems.append(f"data.{key}.path: {path} is empty")
    return problems


@dataclass
class Findings:
    """What the check of one experiment found: problems (each rejects it) and notes."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_experiment(
    model: Any,
    root: Path,
    experiment: str,
    defaults: dict[str, Any],
    table: Mapping[str, TrainingKey] | None = None,
) -> list[str]:
    """Problems of one experiment; ``model`` is a fresh meta-device base model (copies of it
    get wrapped)."""
    from peftbench.core.metacheck import clone_model

    pristine = clone_model(model)  # meta tensors: no memory
    task_cfg = {"training": defaults, "experiments_dir": str(root)}
    with quiet_meta_checks():
        return examine(lambda: clone_model(pristine), task_cfg, experiment, table).problems


def examine(
    factory: Callable[[], Any],
    task_cfg: Mapping[str, Any],
    experiment: str,
    table: Mapping[str, TrainingKey] | None = None,
) -> Findings:
    """Problems and notes of one experiment of ``task_cfg`` (its ``training`` defaults,
    ``experiments_dir``, ``training_merge`` and ``base_model``); ``factory()`` builds a fresh
    meta-device base model (one per wrapping attempt)."""
    # Imported here: quant imports torch, which a DAG whose verdicts are all cached never needs.
    from peftbench.core import kvprefix, quant

    root = Path(task_cfg["experiments_dir"])
    folder = root / experiment
    found = Findings()
    try:
        params = effective_params(
            task_cfg["training"], root, experiment, table, task_cfg.get("training_merge", "deep")
        )
    except ConfigError as exc:
        found.problems += str(exc).splitlines()
        return found
    overrides = _overrides(folder)
    source = _sources(folder, overrides)
    _model_id(params.get("model_id"), task_cfg, source("model_id"), found)
    found.problems += quant.problems(params["dtype"], source("dtype"))
    adapter_path = folder / ADAPTER_CONFIG
    adapter = read_json_object(adapter_path) if adapter_path.exists() else None
    found.problems += kvprefix.adapter_problems(
        params.get(kvprefix.KEY), adapter, source(kvprefix.KEY), str(adapter_path)
    )
    if found.problems:
        return found
    if adapter is None:
        from peftbench.core.runs import wrap_peft

        model = wrap_peft(factory(), None, params)[0]
        found.problems += _optimizer_problems(model, params, source("optimizer_type"))
        return found
    from peftbench.core.metacheck import wrap

    wrapped = wrap(factory, folder, params)
    if wrapped.problem is not None:
        exc = wrapped.problem
        found.problems.append(f"{adapter_path}: {type(exc).__name__}: {exc}")
        return found
    if wrapped.model is None:
        # Only a check that was not made is worth a note: the fallbacks that wrap the adapter
        # after all (peftbench.core.metacheck.STAGES) check it as exactly as the meta device.
        found.notes.append(f"{adapter_path}: {wrapped.note}")
        return found
    trainable = sum(p.numel() for p in wrapped.model.parameters() if p.requires_grad)
    if trainable == 0:
        found.problems.append(
            f"{adapter_path}: the adapter has no trainable parameters on this base model (a "
            "rank or size as large as its layers' width leaves nothing to train)"
        )
        return found
    found.problems += _token_problems(wrapped.model, adapter, str(adapter_path))
    found.problems += _optimizer_problems(wrapped.model, params, source("optimizer_type"))
    return found


def _overrides(folder: Path) -> dict[str, Any]:
    path = folder / TRAINING_PARAMS
    return read_json_object(path) if path.exists() else {}


def _sources(folder: Path, overrides: Mapping[str, Any]) -> Callable[[str], str]:
    """Where a training key's effective value comes from: the experiment's file, or the task
    defaults it is merged with."""

    def source(key: str) -> str:
        path = folder / TRAINING_PARAMS
        if key in overrides:
            return str(path)
        return f"{path if path.exists() else folder} (the task default training.{key})"

    return source


def _model_id(value: Any, task_cfg: Mapping[str, Any], source: str, found: Findings) -> None:
    """The published suite's ``model_id`` training key: ignored where it names the task's base
    model (or an embedded default, which stands in for whatever hub model a folder names),
    an error otherwise."""
    if value is None or "base_model" not in task_cfg:
        return
    expected = offline.hub_model_id(task_cfg)
    if expected is None:
        found.notes.append(
            f"{source}: 'model_id' {value!r} ignored: the embedded base model stands in for it"
        )
        return
    local = Path(expected).expanduser()
    if value == expected or (local.is_dir() and local.as_posix().endswith("/" + value)):
        return
    found.problems.append(
        f"{source}: 'model_id' {value!r} is not this task's base model {expected!r} "
        f"({offline.MODEL_FIELD}): the experiment was written for another model; remove the key "
        f"to run it on {expected}, or run it with a config whose base model is {value}"
    )


def _token_problems(model: Any, adapter: Mapping[str, Any], source: str) -> list[str]:
    """Token indices of trainable-token layers (TRAINABLE_TOKENS, or LoRA's
    ``trainable_token_indices``) outside the embedding they train: on meta tensors an index is
    never looked up, so only this check stops an IndexError at the first training step."""
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    key = "token_indices" if adapter.get("peft_type") == "TRAINABLE_TOKENS" else None
    problems = []
    for name, module in model.named_modules():
        if not isinstance(module, TrainableTokensLayer) or getattr(module, "tied_adapter", None):
            continue
        base = module.get_base_layer()
        size = getattr(base, "num_embeddings", None) or base.weight.shape[0]
        for indices in module.token_indices.values():
            outside = sorted({int(i) for i in indices if not 0 <= int(i) < size})
            if outside:
                field_name = key or "trainable_token_indices"
                problems.append(
                    f"{source}: '{field_name}' {outside} outside the vocabulary of {name} "
                    f"({size} tokens: 0 to {size - 1})"
                )
    return problems


def _optimizer_problems(model: Any, params: Mapping[str, Any], source: str) -> list[str]:
    """The optimizer built over the wrapped model, as the run builds it (on meta tensors it
    allocates nothing): LoRA-FA and the Riemannian optimizer need LoRA factors."""
    from peftbench.core.metacheck import lacks_meta_support
    from peftbench.core.optim import make_optimizer

    try:
        make_optimizer(model, params)
    except Exception as exc:  # noqa: BLE001 - each optimizer raises its own types
        if lacks_meta_support(exc):
            return []
        kind = params["optimizer_type"]
        return [f"{source}: optimizer_type {kind!r}: {type(exc).__name__}: {exc}"]
    return []


def validate_task(
    task_cfg: dict[str, Any],
    experiments: list[str],
    build_meta_model: Callable[[dict[str, Any]], Any],
    table: Mapping[str, TrainingKey] | None = None,
    notes: list[str] | None = None,
    where: str | None = None,
    cache: PreflightCache | None = None,
    workers: int = 1,
) -> list[str]:
    """One message per problem, each naming the file and the field.

    ``build_meta_model(task_cfg)``: the task's module an adapter wraps, on the meta device (the
    spec's ``meta_model`` module provides it, so this module never names a task); ``table``:
    the task's training keys; ``notes``: where notes go (default: printed to stderr);
    ``where``: the config file(s) and task section that set the base model, for the message
    when its architecture cannot be read; ``cache``: verdicts of earlier checks
    (peftbench.core.preflight_cache): an experiment found there is not checked again, and the
    base model is built only when some experiment is not; ``workers``: processes that share the
    experiments to check (:func:`examine_all`).
    """
    problems = check_local_data(task_cfg["data"])
    task_cfg, source_note = offline.with_local_architecture(task_cfg)
    told = [source_note] if source_note else []
    keys = {e: cache.model_key(task_cfg, e) for e in experiments} if cache is not None else {}
    verdicts: dict[str, Findings] = {}
    for experiment, key in keys.items():
        stored = cache.load(key) if cache is not None and key is not None else None
        if stored is not None:
            verdicts[experiment] = Findings(*stored)
    pending = [experiment for experiment in experiments if experiment not in verdicts]
    if pending:
        missing = _check_pending(
            task_cfg, pending, build_meta_model, table, where, verdicts, workers
        )
        if missing is not None:
            return problems + [missing]
        for experiment in pending:
            key = keys.get(experiment)
            if cache is not None and key is not None:
                cache.store(key, verdicts[experiment].problems, verdicts[experiment].notes)
    for experiment in experiments:
        problems += verdicts[experiment].problems
        told += verdicts[experiment].notes
    if notes is None:
        for note in told:
            print(f"peftbench pre-flight note: {note}", file=sys.stderr)
    else:
        notes += told
    return problems


def _check_pending(
    task_cfg: dict[str, Any],
    pending: list[str],
    build_meta_model: Callable[[dict[str, Any]], Any],
    table: Mapping[str, TrainingKey] | None,
    where: str | None,
    verdicts: dict[str, Findings],
    workers: int = 1,
) -> str | None:
    """Check each of ``pending`` against one meta model built for them all (each wrapping
    attempt wraps a copy of it), into ``verdicts``; the message when the architecture of a
    hub model cannot be read (nothing is checked then)."""
    model_id = offline.hub_model_id(task_cfg)
    on_hub = model_id is not None and not Path(model_id).expanduser().is_dir()
    with quiet_meta_checks():  # building the meta model may warn too
        try:
            # Only a model read from the hub asks whether the hub answers.
            with offline.cache_only_when_unreachable() if on_hub else nullcontext():
                pristine = build_meta_model(task_cfg)
        except Exception as exc:
            if not on_hub or not offline.is_hub_failure(exc):
                raise
            where = where or f"the config of the task of {task_cfg['experiments_dir']}"
            return offline.missing_architecture(model_id, where, offline.hub_reachable(), exc)
        verdicts.update(examine_all(pristine, task_cfg, pending, table, workers))
    return None


#: Fewest experiments per extra process: below that, forking costs more than it saves.
MIN_PER_WORKER = 4

# What forked checkers read (set just before the fork, so each child holds its own copy).
_SHARED: tuple[Any, Mapping[str, Any], Mapping[str, TrainingKey] | None] | None = None


def examine_all(
    pristine: Any,
    task_cfg: Mapping[str, Any],
    experiments: list[str],
    table: Mapping[str, TrainingKey] | None = None,
    workers: int = 1,
) -> dict[str, Findings]:
    """:func:`examine` of each of ``experiments`` on copies of the meta model ``pristine``, in up
    to ``workers`` processes (each check is independent; the findings are the same and in the
    same order as one process gives). Planning 500 new experiments spends most of its time here
    (about 15 ms each on one core), so the checks use the cores Snakemake was given. The
    processes are forked (Linux only), so no child imports torch or builds the model again;
    elsewhere, or for a few experiments, they run here."""
    workers = min(workers, len(experiments) // MIN_PER_WORKER)
    if workers < 2 or not sys.platform.startswith("linux"):
        return {e: _examine_copy(pristine, task_cfg, e, table) for e in experiments}
    import gc
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    global _SHARED
    _SHARED = (pristine, task_cfg, table)
    # Python's advice for a fork without exec: the children's collections then never walk (and
    # so never copy) the parent's objects, torch's and transformers' modules among them. What a
    # caller froze before stays frozen.
    frozen_before = gc.get_freeze_count() > 0
    gc.freeze()
    try:
        # A pool that detects a dead child (BrokenProcessPool) rather than waiting forever.
        with ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("fork"), initializer=_one_thread
        ) as pool:
            # Small chunks, so that both processes finish together (costs differ by method).
            chunk = max(1, len(experiments) // (workers * 16))
            found = list(pool.map(_examine_shared, experiments, chunksize=chunk))
    finally:
        _SHARED = None
        if not frozen_before:
            gc.unfreeze()
    return dict(zip(experiments, found, strict=True))


def _examine_copy(
    pristine: Any,
    task_cfg: Mapping[str, Any],
    experiment: str,
    table: Mapping[str, TrainingKey] | None,
) -> Findings:
    from peftbench.core.metacheck import clone_model

    return examine(lambda: clone_model(pristine), task_cfg, experiment, table)


def _one_thread() -> None:
    """A forked checker computes on one thread (the cores are shared out by process), and never
    enters the parent's OpenMP pool, which does not survive a fork."""
    import torch

    torch.set_num_threads(1)


def _examine_shared(experiment: str) -> Findings:
    assert _SHARED is not None, "examine_all sets the shared model before it forks"
    pristine, task_cfg, table = _SHARED
    return _examine_copy(pristine, task_cfg, experiment, table)

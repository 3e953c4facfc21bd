"""What every column of the summary and report tables means, as data.

The shared columns are defined here once (:data:`SHARED`, :data:`TABLE`); each task's own
columns come from its spec (:meth:`~peftbench.tasks.spec.TaskSpec.all_columns`). Table
headers, tooltips, captions, chart axes, metric directions and the integer/fraction display
rules all read :func:`lookup`, so a new task's columns are explained everywhere without an
edit here.
"""

from __future__ import annotations

from dataclasses import replace

from peftbench.analysis.draws import DEFAULT_BOOTSTRAP
from peftbench.analysis.families import FAMILIES, FAMILY_DESCRIPTIONS
from peftbench.core import inference
from peftbench.tasks import registry
from peftbench.tasks.spec import Column, Direction, TaskSpec

_N_BOOT, _THRESHOLD = DEFAULT_BOOTSTRAP.n_boot, DEFAULT_BOOTSTRAP.threshold


def _columns(*columns: Column) -> dict[str, Column]:
    return {column.name: column for column in columns}


#: Columns every task's summary rows have: identity, costs, provenance.
SHARED: dict[str, Column] = _columns(
    # The task column's description lists the known tasks (see lookup).
    Column("task", "task", "Benchmark task."),
    Column("experiment", "experiment", "Experiment folder, method/name."),
    Column("method", "method", "Method folder name."),
    Column("name", "name", "Experiment name within the method."),
    Column("seed", "seed", "Random seed of the run (training order, initialisation).",
           integer=True),
    Column("status", "status", "success or failed (canceled for a published run stopped "
           "early). Failed runs are listed, never on a frontier."),
    Column("error", "error", "Exception type and message of a failed run."),
    Column("peft_type", "PEFT type",
           "peft_type of the resolved PEFT config (empty: full fine-tuning)."),
    Column("test_n", "test n", "Number of test items scored (the task's unit: a problem, a "
           "generated image, ...).", integer=True),
    Column("memory_gb", "memory (GB)",
           "The memory axis of frontiers and budgets, GB (1e9 bytes): on CUDA and for "
           "published rows train memory (the allocator's peak, what the GPU must have free); "
           "on a CPU tensor memory (exact live-tensor bytes, weights included), because peak "
           "RSS there is mostly allocator noise. memory measure says which train memory is.",
           direction="min", axis_title="Peak training memory (GB)"),
    Column("train_memory_gb", "train memory (GB)",
           "Peak training memory in GB (1e9 bytes). This run: CUDA peak reserved memory above "
           "the pre-load baseline (weights included); on CPU, peak RSS above the loaded model "
           "(the extra memory training needs). Published: accelerator_memory_max, peak "
           "reserved memory over the whole run or the training steps, as the published suite "
           "of the task measured it.",
           direction="min", axis_title="Peak training memory, device figure (GB)"),
    Column("train_tensor_gb", "tensor memory (GB)",
           "Exact peak of live tensor bytes in one training step (the costliest batch's), GB: "
           "weights, gradients, optimizer state, activations and temporaries, without "
           "allocator caching; the same on every CPU run of a config. Split in the "
           "train_tensor_*_gb columns.",
           direction="min", axis_title="Peak live-tensor training memory (GB)"),
    Column("train_tensor_frozen_params_gb", "frozen weights (GB)",
           "Tensor memory at the peak: parameters without gradient, and buffers.",
           direction="min"),
    Column("train_tensor_trainable_params_gb", "trainable weights (GB)",
           "Tensor memory at the peak: trainable parameters.", direction="min"),
    Column("train_tensor_gradients_gb", "gradients (GB)",
           "Tensor memory at the peak: parameter gradients.", direction="min"),
    Column("train_tensor_optimizer_state_gb", "optimizer state (GB)",
           "Tensor memory at the peak: optimizer state (AdamW: two moments per trainable "
           "parameter).", direction="min"),
    Column("train_tensor_activations_gb", "activations (GB)",
           "Tensor memory at the peak: tensors autograd keeps for the backward pass.",
           direction="min"),
    Column("train_tensor_temporaries_gb", "temporaries (GB)",
           "Tensor memory at the peak: everything else the step created (inputs, "
           "intermediate results, gradients of activations).", direction="min"),
    Column("train_memory_allocated_gb", "allocated memory (GB)",
           "CUDA only: peak allocated (live tensor) memory during training, GB.",
           direction="min", axis_title="Peak allocated training memory (GB)"),
    Column("eval_memory_gb", "eval memory (GB)",
           "Peak memory of test-set generation and scoring alone, GB.",
           direction="min", axis_title="Peak evaluation memory (GB)"),
    Column("memory_measure", "memory measure", "Which memory figure train memory is (see "
           "above)."),
    Column("train_time_min", "train time (min)",
           "Training time in minutes. This run: sum of optimizer-step durations (forward, "
           "backward, clipping, step), evaluation and data loading excluded. Published: wall "
           "time minus validation, which includes data preparation and test generation.",
           direction="min", axis_title="Training time (min)"),
    Column("eval_time_min", "eval time (min)", "Test-set generation and scoring, minutes.",
           direction="min", axis_title="Evaluation time (min)"),
    Column("trainable_params", "trainable params",
           "Trainable parameters after wrapping (count).",
           direction="min", axis_title="Trainable parameters", integer=True),
    Column("total_params", "total params", "All parameters of the wrapped model (count).",
           integer=True),
    Column("trainable_pct", "trainable %", "Trainable parameters as a percentage of the total.",
           direction="min", axis_title="Trainable parameters (%)"),
    Column("file_size_mb", "file size (MB)",
           "Size of the saved adapter in MB (1e6 bytes); for full fine-tuning the whole model.",
           direction="min", axis_title="Checkpoint size (MB)"),
    Column("train_loss_final", "final train loss",
           "Mean training loss of the last logging window.",
           direction="min", axis_title="Final training loss"),
    # Inference overhead (peftbench.core.inference): one fixed generation per run, timed in the
    # training job after everything else; each task's throughputs are its own columns.
    Column("infer_latency_s", "inference latency (s)",
           "Wall time of one fixed generation with the adapter unmerged, as trained (the "
           "task's workload, described with its inference throughput), seconds: the median of "
           f"{inference.REPEATS} timed calls after {inference.WARMUP} warm-up, in the training "
           "job after its evaluation. Timings are volatile: compare them within one run of the "
           "workflow on one machine.",
           direction="min", axis_title="Inference latency, unmerged (s)"),
    Column("infer_merged_latency_s", "merged latency (s)",
           "The same with the adapter merged into the weights (PEFT's merge_and_unload, what "
           "one deploys). Empty where the method cannot merge (prompt learning; a merge that "
           "fails), for full fine-tuning and for the base model; infer note says why.",
           direction="min", axis_title="Inference latency, merged (s)"),
    Column("infer_base_latency_s", "base latency (s)",
           "The same without the adapter: the same model in the same job with every adapter "
           "layer swapped for the layer it wraps (a prompt-learning model's wrapped model), "
           "timed in rounds alternating with the unmerged calls. Empty for full fine-tuning "
           "(no base kept to compare with) and for the base model's own row.",
           direction="min", axis_title="Inference latency, base model (s)"),
    Column("infer_overhead", "inference overhead",
           "Unmerged latency / base latency: how much slower the adapter makes generation "
           "when it is kept separate (1: no slower).",
           direction="min", axis_title="Inference overhead, unmerged (x base latency)"),
    Column("infer_merged_overhead", "merged overhead",
           "Merged latency / base latency: about 1 whenever merging leaves the base "
           "architecture, as merge_and_unload does; the rest is timing noise.",
           direction="min", axis_title="Inference overhead, merged (x base latency)"),
    Column("infer_note", "infer note",
           "Why an inference figure is missing (no merge, full fine-tuning, the base model, a "
           "timing that failed); empty when every figure was measured."),
    # What the method can do (result.json capabilities, asked of the installed peft by the
    # training job: peftbench.core.capabilities). Empty for full fine-tuning and the base model.
    Column("mergeable", "mergeable",
           "Whether PEFT merges the adapter into the base weights (merge_and_unload) with the "
           "same output, so inference costs nothing extra: tried on a tiny random Llama model "
           "with the installed peft. Empty: full fine-tuning, the base model or not recorded."),
    Column("multi_adapter", "multi-adapter",
           "Whether one model holds several adapters of the method and switches between them "
           "(add_adapter, set_adapter), tried on a tiny random Llama model."),
    Column("mixed_adapters", "mixes methods",
           "Whether PEFT's PeftMixedModel combines its adapters with other methods' "
           "(peft.tuners.mixed.COMPATIBLE_TUNER_TYPES)."),
    Column("quantized_base", "quantized base",
           "Whether the method has bitsandbytes 8-bit/4-bit layers in peft (its tuner's bnb "
           "module), so it trains on a quantized base (the int8/int4 dtypes)."),
    Column("layer_types", "layer types",
           "The torch.nn layer types the method's PEFT layer classes wrap (Linear, Embedding, "
           "Conv2d, ...; a layer class's own name where it is not named after one, e.g. "
           "LNTuningLayer); none: it adds no layers (prompt learning)."),
    Column("search_point", "grid point",
           "The point of the experiment's search grid chosen on validation quality "
           "(e.g. lr=0.001); empty without a grid."),
    Column("search_size", "grid points", "Points in the experiment's search grid.",
           integer=True),
    Column("lr", "lr", "Learning rate of the optimizer.", axis_title="Learning rate"),
    Column("max_steps", "steps", "Optimizer steps.", integer=True),
    Column("config_hash", "config hash",
           "sha256 of the effective training config and the adapter config."),
    Column("code_revision", "code revision",
           "git commit of the workflow (+dirty: uncommitted changes)."),
    Column("peft_version", "peft", "PEFT version."),
    Column("torch_version", "torch", "PyTorch version."),
    Column("transformers_version", "transformers", "Transformers version."),
    Column("device", "device", "Device the run trained on."),
    Column(
        "cpu_numerics",
        "CPU numerics",
        "What decided the run's CPU floating-point results: torch's CPU kernels, the BLAS, the "
        "settings pinning them (ATEN_CPU_CAPABILITY, MKL_CBWR, ...) and the thread count. Runs "
        "with different values can differ in every digit; the summary warns when they mix.",
    ),
)  # fmt: skip

#: Columns the cross-task summary and the frontier tables add.
TABLE: dict[str, Column] = _columns(
    Column("source", "source",
           '"this run": measured by this workflow; "published": imported from the Hugging Face '
           "PEFT method-comparison suite (a different model and hardware unless you ran the "
           "matching preset)."),
    Column("family", "family", "Method family: "
           + "; ".join(f"{f}: {FAMILY_DESCRIPTIONS[f]}" for f in FAMILIES) + "."),
    Column("key_settings", "key settings", "The settings that distinguish the experiment."),
    Column("created_at", "created", "When the run finished (UTC)."),
    Column("predicted_memory_gb", "predicted memory (GB)",
           "Peak live-tensor memory of a training step on a CUDA GPU, GB (1e9 bytes), predicted "
           "before any run without a GPU or weights (step estimate_memory: the architecture on "
           "the meta device, wrapped with the experiment's adapter, trained for a few steps on "
           "the longest batch training can draw; results/<task>/memory_estimate.json). The same "
           "for every seed. Compare it with "
           "allocated memory on CUDA (reserved memory, train memory, is somewhat higher) and "
           "with tensor memory at the same dtype (dtype auto is bfloat16 on a GPU, float32 on "
           "a CPU run). Empty for the base reference, for published rows and where the "
           "experiment could not be estimated (the file and logs/<task>/estimate_memory.log "
           "say why).",
           direction="min", axis_title="Predicted peak training memory (GB)"),
    Column("on_frontier", "on frontier",
           "On the Pareto frontier of point estimates (quality up, cost down) within its task "
           "and source."),
    Column("n_seeds", "seeds", "Runs (seeds) of the experiment with every objective measured.",
           integer=True),
    Column("n_items", "items",
           "Test items per run behind the bootstrap (0: no per-item scores).", integer=True),
    Column("noise", "noise model",
           "How quality noise is resampled: items (the task's per-item scores, paired across "
           "experiments), normal (from the run's stored 95% interval), seeds (several runs, "
           "nothing else), none (one run without per-item scores or an interval, e.g. a "
           "published result: no interval, no P(frontier), and no lead involving it is judged "
           "within or beyond noise)."),
    # The interval columns of the frontier tables are named after the quality: <quality>_low.
    Column("quality_low", "low",
           "Lower end of the 95% bootstrap interval of the quality (test items and seeds); "
           "n/a: no interval (one run without per-item scores)."),
    Column("quality_high", "high", "Upper end of the 95% bootstrap interval."),
    Column("missing", "missing",
           "Objectives with no value; such an experiment is never on the frontier."),
    Column("frontier_prob", "P(frontier)",
           f"Share of {_N_BOOT} bootstrap draws in which the experiment is on the frontier; "
           "n/a for an experiment whose noise is unknown (noise model none)."),
    Column("next", "next",
           "The next frontier experiment by quality (the next cheaper trade-off)."),
    Column("lead", "lead", "Quality difference to the next frontier experiment."),
    Column("lead_low", "lead low", "Lower end of the 95% bootstrap interval of the lead."),
    Column("lead_high", "lead high", "Upper end of the 95% bootstrap interval of the lead."),
    Column("lead_prob", "P(better)",
           "Share of bootstrap draws in which it is strictly better than the next (paired)."),
    Column("intervals_overlap", "CIs overlap",
           "Whether the two 95% quality intervals overlap."),
    Column("within_noise", "within noise",
           f"Lead within noise: P(better) below {_THRESHOLD:.0%}. Its extra cost may buy "
           "nothing."),
    Column("lead_verdict", "lead verdict",
           "within noise, beyond noise, or cannot be judged: one of the two experiments has no "
           "measured noise (one run without per-item scores, e.g. published), so its lead is "
           "a difference of single values."),
    Column("score", "score",
           "Which score the quality column holds: the summary column of this run's rows it was "
           "read from (e.g. test_accuracy_published, our runs scored by the published suite's "
           "rule, whenever published rows are in the same table or chart), or published result "
           "for published rows."),
    Column("pareto_rank", "Pareto rank",
           "Non-dominated sorting over all listed objectives at once: 1 = not dominated, 2 = "
           "dominated only by rank 1, ...; empty when an objective is missing.", integer=True),
    Column("failed_seeds", "failed seeds", "Runs of the experiment that failed.",
           integer=True),
)  # fmt: skip


def task_columns() -> dict[str, tuple[TaskSpec, Column]]:
    """Every known task's own columns (quality, its interval, side effect, extras) by name."""
    found: dict[str, tuple[TaskSpec, Column]] = {}
    for spec in registry.known():
        for column in spec.all_columns():
            found.setdefault(column.name, (spec, column))
    return found


def lookup(name: str) -> Column | None:
    """The column ``name`` (shared, table or a task's), or None for an unknown column."""
    if name == "task":
        tasks = "; ".join(
            f"{spec.name}: {spec.description.rstrip('.')}" for spec in registry.known()
        )
        return replace(SHARED["task"], description=f"Benchmark task ({tasks}).")
    if name in SHARED or name in TABLE:
        return SHARED.get(name) or TABLE[name]
    found = task_columns().get(name)
    if found is None:
        return None
    spec, column = found
    # A cross-task table shows every task's columns: say whose this one is.
    return replace(column, description=f"{spec.title}: {column.description}")


def info(name: str, quality: str | None = None) -> tuple[str, str]:
    """(header, explanation) of a table column; ``<quality>_low`` / ``_high`` are the bootstrap
    interval of the frontier tables. Unknown columns are their own header, unexplained."""
    if quality is not None and name in (f"{quality}_low", f"{quality}_high"):
        name = "quality_" + name.rsplit("_", 1)[1]
    column = lookup(name)
    return (name, "") if column is None else (column.title, column.description)


def axis_title(name: str) -> str:
    """Chart axis title of a column (its own name when unknown)."""
    column = lookup(name)
    return name if column is None else column.axis


def direction(name: str) -> Direction | None:
    """Which way a metric column is better ("max" / "min"); None for a non-metric."""
    column = lookup(name)
    return None if column is None else column.direction


def integer_columns() -> set[str]:
    """Columns that are counts (nullable integers), shared and of every known task."""
    columns = [*SHARED.values(), *TABLE.values(), *(c for _, c in task_columns().values())]
    return {column.name for column in columns if column.integer}


def fraction_columns() -> set[str]:
    """Columns shown like a share (three decimals): the qualities, their intervals, ..."""
    return {name for name, (_, column) in task_columns().items() if column.fraction}


def side_effect_columns() -> list[str]:
    """Every known task's side-effect column (forgetting-like, lower is better)."""
    return list(dict.fromkeys(spec.side_effect.name for spec in registry.known()))

"""What a task is, as data: the torch-free description that generic code reads.

Every task is a package ``peftbench/tasks/<name>/`` (or, for a task outside the package, a
folder named in the config's ``task_packages``) whose ``__init__.py`` defines ``SPEC``, a
:class:`TaskSpec`. Rules, runs, analysis, frontier, charts, report and CLI read the spec and
never name a task. Importing a spec must stay cheap and torch-free: the report environment and
the DAG builder import every spec; the heavy modules (``run``, ``data``) are named by dotted path
and imported only by the jobs that need them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Direction = Literal["max", "min"]


@dataclass(frozen=True)
class Column:
    """One summary column a task adds: how it is titled, explained, compared and shown."""

    name: str
    #: Short header with unit, for tables.
    title: str
    #: One or two sentences for the report's glossary and captions.
    description: str
    #: Which way is better, for frontiers and rankings; None for a column that is not a metric.
    direction: Direction | None = None
    #: Axis title for charts (defaults to ``title``).
    axis_title: str | None = None
    #: Shown with three decimals like a share (0-1), not as a count.
    fraction: bool = False
    #: A count: kept as a nullable integer.
    integer: bool = False
    #: result.json ``metrics`` key the summary reads this column from (default: ``name``), ...
    metric: str | None = None
    #: ... divided by this (e.g. 60 for a time in seconds shown in minutes).
    scale: float = 1.0

    @property
    def axis(self) -> str:
        return self.axis_title or self.title


@dataclass(frozen=True)
class TrainingKey:
    """One key of a task's ``training`` section: accepted types, bounds and meaning."""

    types: tuple[type, ...]
    description: str
    #: "positive" (> 0), "non_negative" (>= 0), "fraction" ([0, 1)) or None.
    bound: str | None = None
    choices: frozenset[str] | None = None
    #: Text a string value must contain (a prompt template's "{query}"); None: no such rule.
    placeholder: str | None = None


@dataclass(frozen=True)
class PublishedFormat:
    """A result-file format of the Hugging Face PEFT method-comparison suite that maps to the
    task: how to recognise a document and turn its metrics into this task's columns."""

    #: Name of the format ("metamathqa", "image-gen").
    name: str
    #: Metric keys of ``train_info.metrics`` entries that identify the format.
    metric_keys: frozenset[str]
    #: ``run_info.train_config`` keys that identify it when a run has no metrics yet.
    config_keys: frozenset[str]
    #: Keys of the final test entry: the quality, and the side effect (None: not published).
    quality_key: str
    side_effect_key: str | None
    #: Key of the validation entries (the validation curve).
    valid_key: str
    #: Test items behind a published quality that is a share of them (None: unknown).
    test_n: int | None = None
    #: Summary column -> key of the validation entries whose mean over the run fills it (e.g.
    #: a throughput), for columns the format records per validation step only.
    validation_means: Mapping[str, str] = field(default_factory=dict)
    #: Summary column (among the task's columns) holding this workflow's quality scored by the
    #: published suite's rule, used beside published rows; None: the task's quality is the
    #: published one already.
    comparable_quality: str | None = None
    #: Scorer of one item-file line under that rule (its per-item score); None for a line that
    #: does not record it (a run older than the rule), or when the task has no such score.
    comparable_item_score: Callable[[Mapping[str, Any]], float | None] | None = None


@dataclass(frozen=True)
class TaskSpec:
    """Everything generic code needs to know about one task."""

    name: str
    #: Human title, e.g. "Math reasoning".
    title: str
    #: Headline quality (higher is better); ``<name>_ci_low`` / ``_ci_high`` hold a run's 95%
    #: interval.
    quality: Column
    #: Whether the quality is a share of test items (so Binomial(n, p) / n models its noise).
    proportion: bool
    #: Side effect of fine-tuning away from the task, lower is better (forgetting, drift).
    side_effect: Column
    #: Key of the validation learning curve in ``result["curves"]`` and of its value per point.
    valid_curve: str
    valid_value: str
    #: Per-item score file in a run folder (one JSON line per scored test item) and its scorer.
    item_file: str
    item_score: Callable[[Mapping[str, Any]], float]
    #: Further summary columns this task measures (beyond the shared cost columns).
    columns: tuple[Column, ...] = ()
    #: result.json ``metrics`` keys this task writes beyond the shared ones (null until measured).
    metrics: tuple[str, ...] = ()
    #: Training keys this task adds to the shared ones (see ``peftbench.core.config``).
    training_keys: Mapping[str, TrainingKey] = field(default_factory=dict)
    #: Name of the sample grid each run writes next to result.json (None: no sample pages).
    samples_file: str | None = None
    #: Published result format imported under this task, if any.
    published: PublishedFormat | None = None
    #: Dotted module with ``run_experiment(ctx: RunContext) -> dict`` (imported by jobs only).
    run_module: str = ""
    #: Dotted module with ``prepare(data_cfg: dict, out_dir: Path) -> None``.
    data_module: str = ""
    #: Dotted module with ``build_meta_model(task_cfg) -> nn.Module`` for the pre-flight check:
    #: the module an adapter wraps, built without weights.
    meta_model: str = ""
    #: Dotted module the GPU-memory prediction builds the architecture and a longest batch
    #: with (``peftbench.core.estimate`` documents its functions); empty when it has none.
    memory_probe: str = ""
    #: Prose for the report: what the quality measures.
    quality_description: str = ""
    #: Prose for the report's task column.
    description: str = ""
    #: A Snakemake file with the task's own extra rules (embedded base models, encoders),
    #: relative to the task package; empty when it has none.
    rules: str = ""
    #: Inputs of a training job beyond the prepared data: name -> path, from the task's config
    #: section (e.g. the embedded base model the task's own rules build).
    extra_inputs: Callable[[Mapping[str, Any]], dict[str, str]] = field(default=lambda cfg: {})
    #: JSON schema (YAML) of the task's config section, relative to the task package; the
    #: top-level schema checks only the shared keys, so each task owns its section's shape.
    config_schema: str = "config.schema.yaml"

    @property
    def ci_columns(self) -> tuple[str, str]:
        return f"{self.quality.name}_ci_low", f"{self.quality.name}_ci_high"

    @property
    def valid_final(self) -> str:
        """Summary column of the last validation value."""
        return f"{self.valid_curve}_final"

    def all_columns(self) -> tuple[Column, ...]:
        """Quality, its interval, the side effect and the extra columns, in summary order."""
        low, high = self.ci_columns
        fraction = self.quality.fraction
        interval = (
            Column(
                low,
                f"{self.quality.title} CI low",
                "Lower end of one run's 95% interval.",
                fraction=fraction,
            ),
            Column(
                high,
                f"{self.quality.title} CI high",
                "Upper end of that interval.",
                fraction=fraction,
            ),
        )
        return (self.quality, *interval, self.side_effect, *self.columns)

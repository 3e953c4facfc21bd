"""The published suite's ``run_info.train_config`` keys mapped to this workflow's settings: what
``peftbench export --format hf-method-comparison`` writes under the suite's names
(:func:`suite_train_config`), and what tests/tasks/test_preset_effective_configs.py checks the
presets against (:func:`differences`: the presets must reproduce the published runs).

:data:`MAPPING` says, for every published key, which of our settings (dotted paths into a task's
config section, ``training`` being an experiment's effective parameters) hold it, or what our
code always does; :func:`differences` fails every published key it does not name. Our training
keys without a published counterpart are in :data:`SUITE_CONSTANTS` (the value the suite's code
hard-codes) or :data:`NO_EFFECT`; deliberate differences go in :data:`DELIBERATE`, with the
reason. Tables per suite task folder: "MetaMathQA" (our math task), "image-gen" (our image task).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: A path not set in our config.
ABSENT = object()


@dataclass(frozen=True)
class Ours:
    """Our settings (dotted paths into the task section) that must all hold the published
    value, after ``to_published`` turns ours into the suite's terms. ``absent``: what our code
    does when a path is not set (only for keys that are optional in our config)."""

    paths: tuple[str, ...]
    to_published: Callable[[Any], Any] = lambda value: value
    absent: Any = ABSENT


@dataclass(frozen=True)
class Fixed:
    """A published key that is not a setting of ours: what our code always does, and why."""

    value: Any
    why: str
    #: The value holds of every run of ours, so an export writes it; False: only of the
    #: presets that reproduce the suite (the value depends on their settings).
    every_run: bool = True


def _ours(*paths: str, **kw: Any) -> Ours:
    return Ours(paths, **kw)


def _scheduler(ours: str) -> str | None:
    return None if ours == "constant" else ours  # the suite's None is a constant rate


def _seed(ours: list[int]) -> Any:
    return ours[0] if len(ours) == 1 else ours  # one published run: one seed, the same


_SHARED = {
    "model_id": _ours("base_model.hub.model_id"),
    "seed": _ours("seeds", to_published=_seed),
    "dtype": _ours("training.dtype"),
    "batch_size": _ours("training.batch_size"),
    "batch_size_eval": _ours("training.batch_size_eval"),
    "max_steps": _ours("training.max_steps"),
    "eval_steps": _ours("training.eval_steps"),
    "use_gc": _ours("training.use_gc"),
    "grad_norm_clip": _ours("training.grad_norm_clip"),
    "optimizer_type": _ours("training.optimizer_type"),
    # Compared whole: under the shallow merge an override replaces the whole dict, as there.
    "optimizer_kwargs": _ours("training.optimizer_kwargs"),
    "lr_scheduler": _ours("training.lr_scheduler", to_published=_scheduler),
    "autocast_adapter_dtype": _ours("training.autocast_adapter_dtype"),
    "compile": Fixed(False, "no run is torch.compile'd"),
    "use_amp": Fixed(False, "no autocast/GradScaler: weights train in the preset's dtype"),
}
#: Published train_config key (a nested one as "parent.child") -> where we hold it.
MAPPING: dict[str, dict[str, Ours | Fixed]] = {
    "MetaMathQA": {
        **_SHARED,
        "max_seq_length": _ours("training.max_seq_length"),
        "query_template": _ours("training.query_template"),
        "attn_implementation": _ours("training.attn_implementation"),
        "generation_kwargs.max_new_tokens": _ours("training.max_new_tokens"),
        "generation_kwargs.max_length": _ours("training.generation_max_length"),
        # Not a training key of ours yet (issue 14, part 4): unset means no prefix initialisation.
        "init_kv_cache_prefix": _ours("training.init_kv_cache_prefix", absent=None),
    },
    "image-gen": {
        **_SHARED,
        "dataset_id": _ours("data.hub.path"),
        "dataset_split": _ours("data.hub.split"),
        "image_column": _ours("data.hub.column"),
        "resolution": _ours("data.resolution", "base_model.resolution"),
        "valid_size": _ours("data.valid_size"),
        "test_size": _ours("data.test_size"),
        "instance_prompts": _ours("data.instance_prompts"),
        "sample_image_prompts": _ours("data.sample_prompts"),
        "drift_image_prompts": _ours("data.drift_prompts"),
        "max_sequence_length": _ours("base_model.max_sequence_length"),
        "text_encoder_out_layers": _ours("base_model.text_encoder_out_layers"),
        "num_inference_steps": _ours("training.num_inference_steps"),
        "guidance_scale": _ours("training.guidance_scale"),
        "weighting_scheme": _ours("training.weighting_scheme"),
        "logit_mean": _ours("training.logit_mean"),
        "logit_std": _ours("training.logit_std"),
        "mode_scale": _ours("training.mode_scale"),
        "dino_model_id": _ours("encoder.hub.model_id"),
        "repeats": Fixed(
            1000,
            "training draws epochs of random permutations of the training images, as many as "
            "the steps need; the suite lays out 1000 in advance, far more than 750 x 2 samples",
            every_run=False,
        ),
        "dino_image_size": Fixed(
            224,
            "unused by the suite too: DINOv2's hub image processor sets the size (crop 224), "
            "and ours loads the same processor",
            every_run=False,  # the embedded encoder has its own resolution
        ),
    },
}
#: Our training keys with no published counterpart: the value the suite's code hard-codes.
SUITE_CONSTANTS: dict[str, dict[str, Any]] = {
    "MetaMathQA": {
        "training.warmup_ratio": 0.1,  # utils.py WARMUP_STEP_RATIO
        "training.grad_accumulation_steps": 1,  # run.py: one optimizer step per batch
        "training.bucket_factor": 20,  # run.py BUCKET_FACTOR
        "training.train_on_prompt": True,  # run.py masks padding only, not the question
        "training.train_order": "stored",  # utils.BucketIterator: no shuffling
        "training.empty_cache_steps": 10,  # run.py ACCELERATOR_EMPTY_CACHE_SCHEDULE
        "data.hub.train.max_chars": 1300,  # data.py CHAR_LIMIT
        "data.hub.valid.n": 50,  # data.py VALID_SIZE
        "data.hub.valid.seed": 0,  # data.py np.random.seed(0)
        "data.hub.heldout.n": 100,  # data.py get_wiki_small(num_samples=100)
    },
    "image-gen": {
        "training.warmup_ratio": 0.0,  # utils.py: lr_scheduler None is a constant rate
        "training.grad_accumulation_steps": 1,
        "training.test_repeats": 3,  # run.py: num_repeats=3 for the test images
        "training.noise_levels": "scheduler",  # run.py: u indexes the scheduler's sigmas
    },
}
#: Our training keys that change what is logged or kept, not what is trained.
NO_EFFECT = {"training.log_steps", "training.checkpoint_steps", "training.keep_checkpoints"}
#: Published key -> why the preset deliberately differs there. Empty: the presets reproduce
#: every published train_config key (the differences in behaviour that are no config key, e.g.
#: explicit greedy decoding, are in the presets' header comments and the README).
DELIBERATE: dict[str, dict[str, str]] = {"MetaMathQA": {}, "image-gen": {}}
#: Published meta_info revision (dotted) -> our settings that must pin the same commit.
REVISIONS = {
    "MetaMathQA": {
        "model_info.sha": ("base_model.hub.revision",),
        "dataset_info.metamath.sha": ("data.hub.train.revision",),
        "dataset_info.gsm8k.sha": ("data.hub.valid.revision", "data.hub.test.revision"),
    },
    "image-gen": {
        "model_info.sha": ("base_model.hub.revision",),
        "dataset_info.sha": ("data.hub.revision",),
    },
}


def lookup(tree: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` of nested dicts, or ``ABSENT``."""
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return ABSENT
        node = node[part]
    return node


def same(a: Any, b: Any) -> bool:
    """Equal as JSON values: 1 == 1.0 and a tuple equals a list, but True != 1, None != 0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def _published_leaves(published: Mapping[str, Any], mapping: Mapping[str, Any]) -> dict:
    """Published keys as the mapping names them: a dict is split into its keys only where the
    mapping names them so (generation_kwargs.max_new_tokens), else compared whole."""
    leaves = {}
    for key, value in published.items():
        if isinstance(value, Mapping) and any(m.startswith(f"{key}.") for m in mapping):
            leaves.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            leaves[key] = value
    return leaves


def differences(suite: str, ours: Mapping[str, Any], published: Mapping[str, Any]) -> list[str]:
    """Every key where ``ours`` does not reproduce ``published`` (empty: it does)."""
    mapping, deliberate = MAPPING[suite], DELIBERATE[suite]
    problems = []
    for key, value in _published_leaves(published, mapping).items():
        entry = mapping.get(key)
        if entry is None:
            problems.append(f"{key}: published key not in MAPPING (map it to our setting)")
            continue
        if isinstance(entry, Fixed):
            if not same(entry.value, value):
                problems.append(f"{key}: published {value!r}, our code always {entry.value!r}")
            continue
        for path in entry.paths:
            mine = lookup(ours, path)
            mine = entry.absent if mine is ABSENT else entry.to_published(mine)
            if mine is ABSENT:
                problems.append(f"{key}: published {value!r}, ours ({path}) is not set")
            elif same(mine, value) and key in deliberate:
                problems.append(f"{key}: equal to the published value, remove it from DELIBERATE")
            elif not same(mine, value) and key not in deliberate:
                problems.append(f"{key}: published {value!r}, ours ({path}) {mine!r}")
    return problems


def suite_train_config(
    suite: str, config: Mapping[str, Any], known: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(train_config, rest)``: a run's effective training parameters ``config`` under the
    names and value conventions of the suite task ``suite`` (:data:`MAPPING`; e.g.
    ``generation_kwargs.max_length`` nested, a constant ``lr_scheduler`` as null), and the keys
    of ``config`` the suite has no name for, as they are.

    ``known``: values of published keys the run records outside ``config`` (``model_id``,
    ``seed``). Published keys held elsewhere in our task section (data, encoder, base model)
    are left out: a result file does not record them, and nothing is made up; so are
    :class:`Fixed` values that hold only of the presets.
    """
    train_config: dict[str, Any] = {}
    used: set[str] = set()
    for key, entry in MAPPING[suite].items():
        if key in known:
            value = known[key]
        elif isinstance(entry, Fixed):
            if not entry.every_run:
                continue
            value = entry.value
        else:
            names = [p.removeprefix("training.") for p in entry.paths if p.startswith("training.")]
            if not names:
                continue
            if names[0] in config:
                value = entry.to_published(config[names[0]])
                used.add(names[0])
            elif entry.absent is not ABSENT:
                value = entry.absent  # what our code does without the key
            else:
                continue
        parent, _, leaf = key.rpartition(".")
        (train_config.setdefault(parent, {}) if parent else train_config)[leaf] = value
    return train_config, {k: v for k, v in config.items() if k not in used}

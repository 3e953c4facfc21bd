"""Realistic summaries for the chart tests, crowded on purpose: the runs of issue 16 (nine math
and six image experiments of the embedded models, close together in memory and quality, a
failed run, a log axis over two decades) and the published suite's 63 MetaMathQA results plus
four FLUX.2 ones, imported through :func:`peftbench.analysis.published.import_published` from
result files written here (the fixture files of tests/data/published with their numbers
replaced)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from factories import make_base_result, make_result
from paths import PUBLISHED

from peftbench.analysis.published import import_published
from peftbench.analysis.summary import build_summary

#: This run's math experiments: (experiment, accuracy, memory GB, trainable params, train
#: minutes, file MB). Memory within 0.0016 GB, accuracies within 0.05: crowded.
MATH_RUNS: list[tuple[str, float, float, int, float, float]] = [
    ("lora/rank8-qv", 0.31, 0.0068, 2048, 0.50, 0.0092),
    ("lora/rank16-rslora", 0.33, 0.0070, 4096, 0.52, 0.018),
    ("lora/rank8-dora", 0.32, 0.0071, 2112, 0.61, 0.0095),
    ("lora/rank8-all-linear", 0.35, 0.0075, 8192, 0.55, 0.036),
    ("loha/rank8", 0.30, 0.0069, 4096, 0.58, 0.018),
    ("lokr/rank8", 0.29, 0.0068, 1024, 0.57, 0.0048),
    ("ia3/default", 0.20, 0.0066, 192, 0.45, 0.0012),
    ("full-finetuning/lr_0.001", 0.40, 0.0081, 35008, 0.70, 0.142),
    ("prompt_tuning/tokens20", 0.10, 0.0082, 640, 1.16, 0.0026),
]
#: This run's image experiments (similarity instead of accuracy), as close as a real run's.
IMAGE_RUNS: list[tuple[str, float, float, int, float, float]] = [
    ("lora/rank4", 0.7025, 0.0035, 13568, 1.02, 0.058),
    ("lora/rank16", 0.7040, 0.0037, 54272, 1.05, 0.22),
    ("loha/rank8", 0.7045, 0.0036, 27136, 1.10, 0.11),
    ("lokr/rank8", 0.7010, 0.0035, 3392, 1.08, 0.015),
    ("oft/block16", 0.7030, 0.0038, 6784, 1.20, 0.03),
    ("full-finetuning/default", 0.7026, 0.0058, 248000, 0.94, 0.995),
]
#: The published MetaMathQA results (Llama-3.2-3B): the same columns, from the suite's tables.
PUBLISHED_MATH: list[tuple[str, float, float, int, float, float]] = [
    ("lily/llama-3.2-3B-rank140-mlp-a2-b2-s8.0", 0.5262, 25.61, 9485280, 22.1, 835.057),
    ("hira/llama-3.2-3B-rank32-lr4.5e-3", 0.5133, 23.60, 9175040, 21.4, 36.714),
    ("lora/llama-3.2-3B-rank64-rslora", 0.5133, 22.56, 18350080, 16.1, 73.415),
    ("shira/llama-3.2-3B-lr_0.0003-random_seed_42", 0.5102, 21.67, 9175040, 16.7, 110.116),
    ("frod/llama-3.2-3B-default", 0.5087, 23.48, 5456808, 41.6, 62.612),
    ("lily/llama-3.2-3B-rank896-a2-b2-s2.0", 0.5049, 23.53, 18450432, 20.3, 1439.071),
    ("miss/llama-3.2-3B-bat", 0.5042, 25.20, 7340032, 23.5, 29.368),
    ("gralora/llama-3.2-3B-rank32", 0.4951, 22.30, 9175040, 18.3, 36.715),
    ("lora/llama-3.2-3B-rank10-target-mlp", 0.4943, 24.70, 9461760, 17.5, 37.869),
    ("oft/llama-3.2-3B-rank32", 0.4913, 22.33, 8171520, 19.9, 32.694),
    ("c3a/llama-3.2-3B-default", 0.4875, 22.06, 5505024, 19.5, 22.028),
    ("lora/llama-3.2-3B-rank14-target-mlp-bdlora", 0.4867, 24.69, 8429568, 20.6, 33.740),
    ("miss/llama-3.2-3B-default", 0.4867, 20.27, 7340032, 14.9, 29.367),
    ("deft/llama-3.2-3B-rank32", 0.4822, 23.62, 9175040, 17.6, 36.714),
    ("lora/llama-3.2-3B-rank32", 0.4784, 22.29, 9175040, 15.7, 36.715),
    ("randlora/llama-3.2-3B-default", 0.4776, 22.79, 9289728, 23.7, 2211.281),
    ("lora/llama-3.2-3B-rank64", 0.4738, 22.55, 18350080, 16.1, 73.415),
    ("full-finetuning/llama-3.2-3B-lr_0.00001", 0.4716, 38.87, 3212749824, 35.8, 6425.500),
    ("lora/llama-3.2-3B-rank32-dora", 0.4693, 24.53, 9289728, 19.8, 37.182),
    ("delora/llama-3.2-3B-rank32", 0.4678, 22.35, 9175096, 17.6, 37.418),
    ("lokr/llama-3.2-3B-rank32-factor4-lr0.003", 0.4663, 23.59, 2294656, 21.5, 9.200),
    ("ia3/llama-3.2-3B-all-attn-5k-lr0.005", 0.4549, 26.15, 630784, 17.7, 2.547),
    ("psoft/llama-3.2-3B-fast", 0.4496, 20.78, 1856512, 20.0, 7.448),
    ("peanut/llama-3.2-3B-rank32-relu-depth0-s2.0", 0.4488, 25.21, 7340032, 22.3, 29.375),
    ("psoft/llama-3.2-3B-default", 0.4488, 22.00, 1856512, 26.0, 7.448),
    ("deft/llama-3.2-3B-rank32-para", 0.4337, 21.51, 3670016, 17.5, 14.687),
    ("lora/llama-3.2-3B-rank32-mica", 0.4306, 22.24, 5505024, 16.3, 36.715),
    ("osf/llama-3.2-3B-rank128", 0.4268, 38.55, 194535936, 44.2, 389.155),
    ("glora/llama-3.2-3B-default", 0.4185, 21.53, 4587520, 18.1, 19.204),
    (
        "prefixtuning/llama-3.2-3B-tokens50-init_prefix-lr_0.005",
        0.4162,
        20.59,
        2867200,
        14.6,
        11.469,
    ),
    ("lora/llama-3.2-3B-rank32-lorafa", 0.4041, 22.24, 3670016, 19.3, 36.715),
    ("waveft/llama-3.2-3B-n_frequency-5000", 0.4026, 24.90, 280000, 35.2, 1.127),
    ("ia3/llama-3.2-3B-lr_0.001", 0.3980, 23.23, 286720, 15.7, 1.157),
    ("peanut/llama-3.2-3B-rank1-relu-depth0-s32.0", 0.3973, 25.13, 229376, 21.6, 0.932),
    ("loha/llama-3.2-3B-rank32", 0.3927, 23.91, 18350080, 23.3, 73.430),
    ("road/llama-3.2-3B-lr_0.001", 0.3851, 22.82, 229376, 16.3, 0.931),
    ("adaptionprompt/llama-3.2-3B-lr_5e-3", 0.3836, 22.46, 8601628, 19.0, 17.210),
    ("miss/llama-3.2-3B-mini", 0.3798, 20.21, 229376, 16.0, 0.925),
    ("adalora/llama-3.2-3B-rank32", 0.3730, 22.78, 18353664, 19.5, 35.131),
    ("glora/llama-3.2-3B-vector-paths", 0.3715, 21.45, 229376, 17.0, 1.756),
    ("prefixtuning/llama-3.2-3B-lr_0.005_zero_init", 0.3578, 21.95, 11468800, 16.9, 45.875),
    ("pvera/llama-3.2-3B-rank64", 0.3563, 21.57, 121856, 16.9, 2.861),
    ("vera/llama-3.2-3B-default", 0.3541, 21.62, 129024, 16.9, 6.822),
    ("pvera/llama-3.2-3B-default", 0.3533, 22.18, 143360, 18.0, 10.025),
    ("ptuning/llama-3.2-3B-default", 0.3495, 20.92, 28382208, 15.2, 0.246),
    ("adamss/llama-3.2-3B-rank32", 0.3450, 20.32, 293888, 75.9, 70.459),
    ("boft/llama-3.2-3B-default", 0.3434, 24.69, 802816, 115.4, 3.225),
    ("prompt_tuning/llama-3.2-3B-sample_vocab-lr_0.001", 0.3434, 24.41, 614400, 23.8, 2.458),
    ("vblora/llama-3.2-3B-default", 0.3336, 22.19, 1212416, 20.0, 4.865),
    ("beft/llama-3.2-3B-target-v_proj", 0.3207, 20.17, 28672, 14.7, 0.118),
    ("ia3/llama-3.2-3B-default", 0.3108, 23.23, 286720, 16.4, 1.157),
    ("frod/llama-3.2-3B-sparse0.02-lr_0.001", 0.2707, 23.88, 10741640, 43.5, 86.771),
    ("trainable_tokens/llama-3.2-3B-sos+eos", 0.2456, 20.94, 6144, 16.4, 0.049),
    ("prompt_tuning/llama-3.2-3B-lr_0.001", 0.2343, 24.39, 614400, 24.7, 2.458),
    ("adaptionprompt/llama-3.2-3B-lr_0.0005", 0.2115, 22.46, 8601628, 19.6, 17.210),
    ("prefixtuning/llama-3.2-3B-lr_0.001", 0.1857, 21.95, 11468800, 16.9, 45.875),
    ("fourierft/llama-3.2-3B-n_frequency-5000", 0.0955, 23.67, 280000, 28.7, 1.127),
    ("prompt_tuning/llama-3.2-3B-default", 0.0569, 24.39, 614400, 24.5, 2.458),
    ("tinylora/llama-3.2-3B-default", 0.0121, 20.12, 3584, 17.3, 2.392),
    ("tinylora/llama-3.2-3B-weight-tying", 0.0045, 20.13, 64, 17.3, 2.373),
    ("unilora/llama-3.2-3B-default", 0.0015, 22.31, 256, 17.9, 0.001),
    ("fourierft/llama-3.2-3B-default", 0.0000, 23.66, 56000, 28.3, 0.231),
    ("ln_tuning/llama-3.2-3B-default", 0.0000, 21.18, 175104, 15.3, 0.358),
]
#: Published FLUX.2 results: (experiment, similarity, memory GB).
PUBLISHED_IMAGE: list[tuple[str, float, float]] = [
    ("oft/flux2-klein-default", 0.61, 30.2),
    ("lora/flux2-klein-default", 0.63, 31.0),
    ("loha/flux2-klein-default", 0.60, 30.9),
    ("boft/flux2-klein-default", 0.59, 33.0),
]


def run_results(task: str) -> list[dict[str, Any]]:
    """This run's results of ``task``: the base model, the experiments above, a failed run."""
    rows = MATH_RUNS if task == "math" else IMAGE_RUNS
    if task == "math":
        base = make_base_result(
            test_accuracy=0.05,
            test_accuracy_ci_low=0.03,
            test_accuracy_ci_high=0.07,
            test_accuracy_published=0.05,
        )
    else:
        base = make_base_result(task="image", similarity=0.7026)
    results = [base]
    for experiment, quality, memory, params, minutes, size in rows:
        method, name = experiment.split("/")
        metrics: dict[str, Any] = {
            "train_memory_peak_bytes": int(memory * 1e9),
            "trainable_params": params,
            "train_time_s": minutes * 60,
            "file_size_bytes": int(size * 1e6),
        }
        if task == "math":
            metrics |= {
                "test_accuracy": quality,
                "test_accuracy_ci_low": quality - 0.03,
                "test_accuracy_ci_high": quality + 0.03,
                "test_accuracy_published": quality - 0.01,
            }
        else:
            metrics |= {
                "similarity": quality,
                "similarity_ci_low": quality - 0.002,
                "similarity_ci_high": quality + 0.002,
            }
        peft_type = None if method == "full-finetuning" else "LORA"
        results.append(make_result(method, name, task=task, peft_type=peft_type, **metrics))
    results.append(make_result("vera", "rank64", task=task, status="failed"))
    return results


def write_published(folder: Path) -> dict[str, Path]:
    """Published result files of both tasks under ``folder``; task -> its folder."""
    math, image = folder / "math", folder / "image"
    math.mkdir(parents=True)
    image.mkdir(parents=True)
    template = json.loads((PUBLISHED / "lora--llama-3.2-3B-rank32.json").read_text())
    for i, (experiment, accuracy, memory, params, minutes, size) in enumerate(PUBLISHED_MATH):
        document = copy.deepcopy(template)
        document["run_info"]["experiment_name"] = experiment
        info = document["train_info"]
        info["accelerator_memory_max"] = int(memory * 1e9)
        info["num_trainable_params"] = params
        info["train_time"] = minutes * 60
        info["file_size"] = int(size * 1e6)
        info["metrics"][-1]["test accuracy"] = accuracy
        (math / f"{i:03d}.json").write_text(json.dumps(document))
    template = json.loads((PUBLISHED / "oft--flux2-klein-default.json").read_text())
    for i, (experiment, similarity, memory) in enumerate(PUBLISHED_IMAGE):
        document = copy.deepcopy(template)
        document["run_info"]["experiment_name"] = experiment
        document["train_info"]["accelerator_memory_max"] = int(memory * 1e9)
        document["train_info"]["metrics"][-1]["test dino_similarity"] = similarity
        (image / f"{i:03d}.json").write_text(json.dumps(document))
    return {"math": math, "image": image}


def crowded_summary(folder: Path | None = None):
    """(results, published import or None, cross-task summary) of both tasks; with the
    published rows when ``folder`` (where their files are written) is given."""
    results = run_results("math") + run_results("image")
    published = import_published(write_published(folder)) if folder is not None else None
    return results, published, build_summary(results, published)

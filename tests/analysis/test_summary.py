"""Tests of the cross-task summary table, method families and per-item scores."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from factories import make_base_result, make_result
from paths import PUBLISHED

from peftbench.analysis.aggregate import summarize as task_summary
from peftbench.analysis.aggregate import write_summary
from peftbench.analysis.families import FAMILIES, method_colors, method_family
from peftbench.analysis.published import import_published
from peftbench.analysis.summary import (
    build_summary,
    cross_task_columns,
    curves_table,
    item_scores,
    key_settings,
    read_summary,
    table_item_scores,
    write_summary_files,
)
from peftbench.core.layout import run_dir

FIXTURES = PUBLISHED


def local_results():
    return [
        make_base_result(test_accuracy=0.1),
        make_result("lora", "r8", test_accuracy=0.40, train_memory_peak_bytes=10**10),
        make_result("lora", "r8", seed=1, test_accuracy=0.42, train_memory_peak_bytes=10**10),
        make_result("oft", "b16", test_accuracy=0.45, train_memory_peak_bytes=2 * 10**10),
        make_result("full-finetuning", "lr", peft_type=None, test_accuracy=0.3),
        make_result("ia3", "default", status="failed", error="RuntimeError: boom"),
    ]


@pytest.mark.parametrize(
    ("method", "peft_type", "family"),
    [
        ("lora", "LORA", "lora-like"),
        ("my-lora-variant", "LORA", "lora-like"),
        ("adalora", None, "lora-like"),
        ("oft", "OFT", "orthogonal"),
        ("boft", None, "orthogonal"),
        ("hra", None, "orthogonal"),
        ("ia3", "IA3", "multiplicative/scaling"),
        ("vera", None, "multiplicative/scaling"),
        ("beft", None, "multiplicative/scaling"),
        ("prompt_tuning", "PROMPT_TUNING", "prompt-based"),
        ("prefixtuning", None, "prompt-based"),
        ("whatever", "PREFIX_TUNING", "prompt-based"),
        ("full-finetuning", None, "full"),
        ("base", None, "base"),
        ("unheard-of", None, "other"),
        (None, None, "other"),
    ],
)
def test_method_family(method, peft_type, family):
    assert method_family(method, peft_type) == family


def test_method_colors_stable_and_distinct():
    pairs = {"lora": "lora-like", "loha": "lora-like", "oft": "orthogonal", "ia3": "other"}
    colors = method_colors(pairs)
    assert set(colors) == set(pairs)
    assert len(set(colors.values())) == len(pairs)
    assert all(c.startswith("#") and len(c) == 7 for c in colors.values())
    # Adding a method of another family does not change anyone else's colour.
    more = method_colors({**pairs, "prompt_tuning": "prompt-based"})
    assert all(more[m] == colors[m] for m in pairs)


def test_key_settings():
    text = key_settings(
        {"optimizer_kwargs": {"lr": 0.001}, "max_steps": 200, "batch_size": 32},
        {
            "r": 8,
            "lora_alpha": 16,
            "use_dora": True,
            "use_rslora": False,
            "target_modules": ["q_proj", "v_proj"],
        },
    )
    assert text == "r=8 alpha=16 dora targets=q_proj,v_proj lr=0.001 steps=200 batch=32"
    assert key_settings(None, None) == ""
    # OFT says r=0 when the block size is set: not shown.
    assert key_settings({}, {"r": 0, "oft_block_size": 16}) == "block=16"


def test_build_summary_columns_sources_and_frontiers():
    published = import_published({"math": FIXTURES})
    table = build_summary(local_results(), published)
    assert list(table.columns) == cross_task_columns()
    assert {"family", "source", "status", "error", "config_hash"} <= set(table.columns)
    this_run = table[table["source"] == "this run"]
    assert len(this_run) == 6 and len(table) == 6 + len(published.rows)
    assert set(table["source"]) == {"this run", "published"}
    assert set(table["family"]) <= set(FAMILIES)
    failed = table[table["status"] == "failed"].iloc[0]
    assert failed["error"] == "RuntimeError: boom" and not failed["on_frontier"]
    # Frontiers are per task and source: this run's and the published ones are separate.
    math_frontier = table[(table["task"] == "math") & table["on_frontier"]]
    assert set(math_frontier["experiment"]) == {
        "lora/r8",
        "oft/b16",
        "miss/llama-3.2-3B-default",
    }
    image = table[table["task"] == "image"].iloc[0]
    assert image["on_frontier"] and image["similarity"] == pytest.approx(0.70776, abs=1e-5)
    # Order: task, this run before published, base first, then quality descending.
    math_rows = table[table["task"] == "math"]
    assert math_rows["experiment"].iloc[0] == "base/no-finetuning"
    assert math_rows["source"].tolist().index("published") == 6
    assert table["trainable_params"].dtype == "Int64" and table["seed"].dtype == "Int64"
    row = table[(table["experiment"] == "lora/r8") & (table["seed"] == 1)].iloc[0]
    assert row["key_settings"].startswith("r=8")
    assert row["created_at"] == "2025-01-01T00:00:00+00:00"


def test_build_summary_without_published_and_empty():
    table = build_summary(local_results())
    assert set(table["source"]) == {"this run"}
    empty = build_summary([])
    assert list(empty.columns) == cross_task_columns() and empty.empty


def test_summary_files_roundtrip(tmp_path):
    table = build_summary(local_results(), import_published({"math": FIXTURES}))
    write_summary_files(table, tmp_path / "s.parquet", tmp_path / "s.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv", "s.parquet"]
    for name in ("s.parquet", "s.csv"):
        back = read_summary(tmp_path / name)
        assert list(back.columns) == cross_task_columns()
        assert back["experiment"].tolist() == table["experiment"].tolist()
        assert back["on_frontier"].tolist() == table["on_frontier"].tolist()
        assert back["error"].tolist() == table["error"].tolist()
    assert "9175040.0" not in (tmp_path / "s.csv").read_text()


def test_read_summary_accepts_a_per_task_summary(tmp_path):
    # results/<task>/summary.csv from the aggregate rule has neither family nor source.
    path = tmp_path / "summary.csv"
    write_summary(task_summary(local_results()), path)
    table = read_summary(path)
    assert set(table["source"]) == {"this run"}
    assert table.set_index("experiment").loc["oft/b16", "family"] == "orthogonal"


def write_predictions(folder: Path, answers: list[tuple[str, str | None]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "test_predictions.jsonl", "w") as handle:
        for answer, parsed in answers:
            item = {"query": "q", "answer": answer, "output": "o", "parsed": parsed}
            handle.write(json.dumps(item) + "\n")


def test_item_scores(tmp_path):
    write_predictions(tmp_path / "run", [("5", "5"), ("2.5", "2.50"), ("7", None), ("3", "4")])
    assert item_scores(tmp_path / "run", "math").tolist() == [1.0, 1.0, 0.0, 0.0]
    assert item_scores(tmp_path / "absent", "math") is None
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "test_predictions.jsonl").write_text("\n")
    assert item_scores(tmp_path / "empty", "math") is None


def test_table_item_scores_uses_run_folders(tmp_path):
    table = build_summary(local_results(), import_published({"math": FIXTURES}))
    write_predictions(run_dir(tmp_path, "math", "lora/r8", 1), [("1", "1"), ("2", "3")])
    scores = table_item_scores(table, tmp_path)
    assert len(scores) == 1
    (label,) = scores
    assert table.loc[label, "experiment"] == "lora/r8" and table.loc[label, "seed"] == 1
    assert np.array_equal(scores[label], [1.0, 0.0])
    assert table_item_scores(table, None) == {}


def write_published(folder: Path, lines: list[tuple[str, str | None, bool | None]]) -> None:
    """An item file whose lines hold our parse and, unless None, the published correctness."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "test_predictions.jsonl", "w") as handle:
        for answer, parsed, published in lines:
            item = {"query": "q", "answer": answer, "output": "o", "parsed": parsed}
            if published is not None:
                item["published_correct"] = published
            handle.write(json.dumps(item) + "\n")


def test_comparable_item_scores_are_the_published_correctness(tmp_path):
    # Ours accepts "1,000"; the published rule does not: the two vectors differ on that item.
    write_published(
        tmp_path / "run", [("1000", "1,000", False), ("5", "5", True), ("3", "4", False)]
    )
    assert item_scores(tmp_path / "run", "math").tolist() == [1.0, 1.0, 0.0]
    assert item_scores(tmp_path / "run", "math", comparable=True).tolist() == [0.0, 1.0, 0.0]
    table = build_summary(local_results(), import_published({"math": FIXTURES}))
    write_published(run_dir(tmp_path, "math", "lora/r8", 1), [("1", "1", True), ("2", "2", False)])
    scores = table_item_scores(table, tmp_path, comparable=True)
    (label,) = scores
    assert table.loc[label, "experiment"] == "lora/r8" and table.loc[label, "seed"] == 1
    assert scores[label].tolist() == [1.0, 0.0]


def test_comparable_item_scores_are_never_mixed(tmp_path):
    # A run older than the per-item published correctness, or partly so: nothing, not a mix.
    write_published(tmp_path / "old", [("5", "5", None), ("3", "3", None)])
    assert item_scores(tmp_path / "old", "math", comparable=True) is None
    assert item_scores(tmp_path / "old", "math").tolist() == [1.0, 1.0]
    write_published(tmp_path / "mixed", [("5", "5", True), ("3", "3", None)])
    assert item_scores(tmp_path / "mixed", "math", comparable=True) is None
    # The image task's similarity is the published score already: it has no second one.
    write_similarity(tmp_path / "image", [0.5, 0.25])
    assert item_scores(tmp_path / "image", "image", comparable=True) is None


def test_curves_table():
    published = import_published({"math": FIXTURES})
    curves = curves_table(local_results()[:2], published)
    assert list(curves.columns) == [
        "task",
        "source",
        "experiment",
        "method",
        "family",
        "seed",
        "step",
        "metric",
        "value",
    ]
    ours = curves[curves["source"] == "this run"]
    assert set(ours["metric"]) == {"train loss", "validation"}
    lora = ours[ours["experiment"] == "lora/r8"]
    assert lora[lora["metric"] == "train loss"]["value"].tolist() == [1.2, 0.85]
    assert (curves["source"] == "published").any()
    assert pd.api.types.is_float_dtype(curves["value"])


def image_results():
    return [
        make_base_result(task="image", similarity=0.3),
        make_result("lora", "r8", task="image", similarity=0.70, train_memory_peak_bytes=10**10),
        make_result("oft", "b16", task="image", similarity=0.60, train_memory_peak_bytes=8 * 10**9),
        make_result(
            "full-finetuning",
            "all",
            task="image",
            peft_type=None,
            similarity=0.65,
            train_memory_peak_bytes=30 * 10**9,
        ),
    ]


def test_build_summary_math_and_image_tasks_with_published_image_rows():
    published = import_published({"math": FIXTURES})
    table = build_summary([*local_results(), *image_results()], published)
    assert list(table.columns) == cross_task_columns()
    # similarity and drift are summary columns, each listed once.
    columns = cross_task_columns()
    assert columns.count("similarity") == 1 and columns.count("drift") == 1
    image = table[table["task"] == "image"]
    # The published FLUX.2 row is imported under our image task, next to this run's rows.
    assert set(image["source"]) == {"this run", "published"}
    assert "image-gen" not in set(table["task"])
    ours = image[image["source"] == "this run"]
    assert ours["experiment"].tolist() == [
        "base/no-finetuning",
        "lora/r8",
        "full-finetuning/all",
        "oft/b16",
    ]
    assert set(ours.loc[ours["on_frontier"], "experiment"]) == {"lora/r8", "oft/b16"}
    flux = image[image["source"] == "published"].iloc[0]
    assert flux["experiment"] == "oft/flux2-klein-default" and flux["on_frontier"]
    # The math frontier still uses test accuracy.
    math = table[(table["task"] == "math") & (table["source"] == "this run")]
    assert set(math.loc[math["on_frontier"], "experiment"]) == {"lora/r8", "oft/b16"}


def write_similarity(folder: Path, values: list[float]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "test_similarity.jsonl", "w") as handle:
        for i, value in enumerate(values):
            handle.write(json.dumps({"prompt": f"p{i // 2}", "repeat": i % 2, "similarity": value}))
            handle.write("\n")


def test_item_scores_reads_per_image_similarity(tmp_path):
    write_similarity(tmp_path / "run", [0.5, 0.25, 0.75])
    assert item_scores(tmp_path / "run", "image").tolist() == [0.5, 0.25, 0.75]
    table = build_summary(image_results())
    write_similarity(run_dir(tmp_path, "image", "oft/b16", 0), [0.1, 0.9])
    scores = table_item_scores(table, tmp_path)
    (label,) = scores
    assert table.loc[label, "experiment"] == "oft/b16"
    assert scores[label].tolist() == [0.1, 0.9]


def test_curves_table_image_validation_similarity():
    curves = curves_table(image_results()[1:2])
    validation = curves[curves["metric"] == "validation"]
    assert validation["value"].tolist() == [0.61] and set(curves["task"]) == {"image"}
    assert curves[curves["metric"] == "train loss"]["value"].tolist() == [1.2, 0.85]

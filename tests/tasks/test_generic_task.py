"""A task that is not built in flows through the analysis and the report without any generic
edit: summary columns, frontiers, charts, tables, captions and pages all read its spec.

The spec is built here and registered by putting it into the registry (as ``task_packages``
does); its results are math-shaped results re-labelled with its own metrics and curve.
"""

import copy
import json

import pytest
from factories import make_base_result, make_result

from peftbench.analysis import glossary
from peftbench.analysis.aggregate import (
    int_columns,
    load_results,
    summarize,
    summary_columns,
    validate_result,
)
from peftbench.analysis.noise import Bootstrap
from peftbench.analysis.summary import (
    build_summary,
    cross_task_columns,
    curves_table,
    item_scores,
    table_item_scores,
)
from peftbench.analysis.tables import multi_objective_table, task_frontiers
from peftbench.core.layout import run_dir
from peftbench.report.captions import chart_caption
from peftbench.report.charts import frontier_chart, legend_colors
from peftbench.report.html import html_table
from peftbench.report.pages import summary_page
from peftbench.report.pages_frontier import frontier_page
from peftbench.tasks import registry
from peftbench.tasks.spec import Column, TaskSpec

TOY = TaskSpec(
    name="toy",
    title="Toy regression",
    description="A toy task that lives only in this test.",
    quality=Column(
        "toy_score",
        "toy score",
        "Share of toy items predicted within tolerance.",
        direction="max",
        axis_title="Toy score",
        fraction=True,
    ),
    quality_description="share of toy items predicted within tolerance",
    proportion=True,
    side_effect=Column(
        "toy_shift", "toy shift", "How far predictions moved off-task.", direction="min"
    ),
    valid_curve="valid_toy",
    valid_value="score",
    item_file="toy_items.jsonl",
    item_score=lambda item: float(item["ok"]),
    columns=(
        Column("toy_epochs", "epochs", "Passes over the toy data.", integer=True),
        Column("toy_wall_min", "wall (min)", "Wall time, minutes.", metric="toy_wall_s", scale=60),
    ),
    metrics=("toy_score", "toy_score_ci_low", "toy_score_ci_high", "toy_shift", "toy_epochs",
             "toy_wall_s"),
)  # fmt: skip


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(registry._LOADED, "toy", TOY)
    return TOY


def toy_result(method, name, score, memory_gb, *, base=False, status="success", seed=0):
    """A result of the toy task: math's shape, the toy's metrics and validation curve."""
    result = make_base_result(seed) if base else make_result(method, name, seed=seed)
    result = copy.deepcopy(result)
    result["task"] = "toy"
    result["status"] = status
    metrics = result["metrics"]
    metrics.update(
        toy_score=score if status == "success" else None,
        toy_score_ci_low=None,
        toy_score_ci_high=None,
        toy_shift=0.1,
        toy_epochs=3,
        toy_wall_s=120.0,
        test_n=50,
        train_memory_peak_bytes=None if base else memory_gb * 10**9,
    )
    result["curves"] = {
        "train_loss": result["curves"]["train_loss"],
        "valid_toy": [{"step": 10, "score": score}],
    }
    return result


def toy_results():
    return [
        toy_result("base", "no-finetuning", 0.2, None, base=True),
        toy_result("lora", "r8", 0.6, 4),
        toy_result("lora", "r16", 0.7, 6),
        toy_result("full-finetuning", "all", 0.65, 20),
        toy_result("ia3", "broken", None, 3, status="failed"),
    ]


def test_toy_results_validate_and_summarize(toy):
    for result in toy_results():
        validate_result(result)
    missing = toy_results()[1]
    del missing["metrics"]["toy_shift"]
    with pytest.raises(ValueError, match=r"metrics\.toy_shift"):
        validate_result(missing, "toy.json")
    no_curve = toy_results()[1]
    del no_curve["curves"]["valid_toy"]
    with pytest.raises(ValueError, match=r"curves\.valid_toy"):
        validate_result(no_curve)

    columns = summary_columns()
    assert {"toy_score", "toy_score_ci_low", "toy_shift", "toy_epochs", "toy_wall_min"} <= set(
        columns
    )
    assert "toy_epochs" in int_columns()
    table = summarize(toy_results()).set_index("experiment")
    assert table.loc["lora/r16", "toy_score"] == pytest.approx(0.7)
    assert table.loc["lora/r16", "toy_wall_min"] == pytest.approx(2.0)  # 120 s, by the spec
    assert table.loc["lora/r16", "toy_epochs"] == 3 and table["toy_epochs"].dtype == "Int64"
    assert table["test_accuracy"].isna().all()  # another task's column: missing
    # The frontier is over the toy's quality.
    assert set(table.index[table["on_frontier"]]) == {"lora/r8", "lora/r16"}
    # Sorted by the toy's quality, base first.
    assert table.index.tolist()[:3] == ["base/no-finetuning", "lora/r16", "full-finetuning/all"]


def test_toy_frontier_chart_tables_and_pages(toy, tmp_path):
    summary = build_summary(toy_results())
    assert list(summary.columns) == cross_task_columns()
    # Per-item scores from the toy's own item file.
    folder = run_dir(tmp_path, "toy", "lora/r16", 0)
    folder.mkdir(parents=True)
    lines = [json.dumps({"ok": i % 10 < 7}) for i in range(50)]
    (folder / "toy_items.jsonl").write_text("\n".join(lines) + "\n")
    assert item_scores(folder, "toy").mean() == pytest.approx(0.7)
    items = table_item_scores(summary, tmp_path)
    assert len(items) == 1

    frontiers = task_frontiers(summary, "toy", items, options=Bootstrap(n_boot=200))
    memory = frontiers["memory"].set_index("experiment")
    assert set(memory.index[memory["on_frontier"]]) == {"lora/r8", "lora/r16"}
    assert memory.loc["lora/r16", "noise"] == "items"
    # One run with neither item scores nor a stored interval: no interval is made up.
    assert memory.loc["lora/r8", "noise"] == "none"
    assert "toy_shift" in memory.columns and "toy_score_low" in memory.columns

    chart = frontier_chart(
        frontiers["memory"], "memory_gb", "toy_score", legend_colors(summary), "toy"
    ).to_dict()
    assert any(layer["encoding"]["y"]["title"] == "Toy score" for layer in chart["layer"])
    points = next(layer for layer in chart["layer"] if layer["mark"]["type"] == "point")
    tooltips = {t["field"]: t["title"] for t in points["encoding"]["tooltip"]}
    assert tooltips["quality_text"] == "Toy score [95% interval]" and "toy_shift" in tooltips

    multi = multi_objective_table(summary, "toy")
    assert {"toy_score", "toy_shift", "memory_gb"} <= set(multi.columns)
    page = frontier_page("toy", frontiers, multi)
    assert "quality (toy_score)" in page and "Share of toy items" in page
    assert "A single run with neither" in page

    table = html_table(summary, ["experiment", "toy_score", "toy_epochs"])
    assert 'title="Toy regression: Share of toy items predicted within tolerance."' in table
    assert '<td class="num" data-v="0.7">0.700</td>' in table  # a fraction: three decimals
    assert '<td class="num" data-v="3">3</td>' in table  # a count
    assert "toy: A toy task that lives only in this test" in summary_page(summary)
    caption = chart_caption("memory", "toy")
    assert "(toy: share of toy items predicted within tolerance)" in caption
    assert "validation score" in chart_caption("curves", "toy")
    assert (
        glossary.direction("toy_shift") == "min" and glossary.axis_title("toy_score") == "Toy score"
    )

    curves = curves_table(toy_results())
    validation = curves[curves["metric"] == "validation"]
    assert set(validation["task"]) == {"toy"} and 0.7 in set(validation["value"])


def test_unknown_task_is_an_error_naming_the_file(tmp_path):
    result = toy_result("lora", "r8", 0.6, 4)  # the toy task is not registered here
    path = tmp_path / "result.json"
    path.write_text(json.dumps(result))
    with pytest.raises(ValueError, match=r"result\.json: unknown task 'toy'"):
        load_results([path])
    with pytest.raises(ValueError, match="unknown task 'toy'"):
        summarize([result])

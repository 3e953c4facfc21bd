"""The memory budget of a task's decision page: the range of its slider, the chart layers that
grey out what does not fit, and the advice of ``peftbench advise`` at every budget that changes
it.

The slider is a Vega-Lite parameter bound to a range input, so it works offline in the chart
itself, with no server. The advice cannot be computed in the browser (it is a bootstrap), but it
only changes where the budget passes an experiment's memory, so it is computed here once per
such step and the page shows the step the slider is in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from peftbench.analysis.summary import SOURCE_THIS_RUN
from peftbench.report.advice import advise, format_advice, reference_row

#: Name of the Vega-Lite parameter (a Vega signal) that holds the budget in GB.
BUDGET_PARAM = "budget"
#: Name of the veil layer over what does not fit. Vega gives the layer's SVG group the class
#: ``budget_veil_marks``; the page makes it transparent to the mouse, so the points under it
#: keep their tooltips.
VEIL_NAME = "budget_veil"
#: How many steps the slider has from 0 to its end, about (a power of ten per step).
_SLIDER_STEPS = 500


@dataclass(frozen=True)
class Slider:
    """The budget slider in GB: its range, its step, and where it starts."""

    low: float
    high: float
    step: float
    default: float


def slider_for(memory: Iterable[float]) -> Slider:
    """A slider over ``memory`` (the experiments' memory figures, GB): from a tenth below the
    smallest, where nothing fits, to a tenth past the largest, starting where every experiment
    fits. Its step is a power of ten, about 1/500 of the range, so tiny CPU figures (a few MB)
    get as fine a slider as GPU ones. Its ends and start lie on steps, because a range input
    snaps its value to them: the start is rounded up (rounding down would grey out the largest
    experiment at once) and the low end down."""
    values = [v for v in map(float, memory) if math.isfinite(v) and v > 0]
    smallest, largest = min(values, default=1.0), max(values, default=1.0)
    step = 10.0 ** math.floor(math.log10((largest - 0.9 * smallest) / _SLIDER_STEPS))
    default = _on_step(largest, step, up=True)
    low = _on_step(0.9 * smallest, step, up=False)
    high = _on_step(1.1 * largest, step, up=True)
    return Slider(low=low, high=max(high, default), step=step, default=default)


def _on_step(value: float, step: float, *, up: bool) -> float:
    """The multiple of ``step`` nearest to ``value`` at or above it (``up``) or at or below it,
    rounded to the step's digits (so 0.1 * 3 reads 0.3)."""
    digits = max(0, -math.floor(math.log10(step)))
    count = math.ceil(value / step - 1e-9) if up else math.floor(value / step + 1e-9)
    snapped = round(count * step, digits)
    if up and snapped < value:
        return round(snapped + step, digits)
    if not up and snapped > value:
        return round(snapped - step, digits)
    return snapped


def with_budget(chart: alt.LayerChart, slider: Slider, label: str) -> alt.LayerChart:
    """``chart`` (a layered chart of quality against memory on its x axis) with the budget: a
    slider named ``label`` under the chart, a dashed rule at the budget, and a translucent white
    veil over everything to its right (more memory than the budget), so what does not fit is
    greyed out while staying readable and hoverable."""
    if not isinstance(chart, alt.LayerChart):
        raise TypeError(f"with_budget needs a layered chart, not {type(chart).__name__}")
    budget = alt.param(
        name=BUDGET_PARAM,
        value=slider.default,
        bind=alt.binding_range(min=slider.low, max=slider.high, step=slider.step, name=label),
    )
    # Pixel position of the budget on the chart's x scale, kept inside the plot: a budget
    # past either end would otherwise draw outside it or flip the veil to the wrong side.
    at = f"clamp(scale('x', {BUDGET_PARAM}), 0, width)"
    # One empty datum: each layer draws one mark, placed by expressions, not by data.
    one = alt.Data(values=[{}])
    veil = (
        alt.Chart(one, name=VEIL_NAME)
        .mark_rect(
            color="white",
            x=alt.ExprRef(at),
            x2=alt.ExprRef("width"),
            y=alt.ExprRef("0"),
            y2=alt.ExprRef("height"),
        )
        # An encoding of its own: Vega-Lite 6 cannot normalise a layer without one.
        .encode(opacity=alt.value(0.72))
    )
    rule = (
        alt.Chart(one)
        .mark_rule(
            color="#333",
            strokeDash=[6, 3],
            strokeWidth=1.5,
            x=alt.ExprRef(at),
            y=alt.ExprRef("0"),
            y2=alt.ExprRef("height"),
        )
        .encode(opacity=alt.value(1))
    )
    return alt.layer(chart, veil, rule).add_params(budget)


@dataclass(frozen=True)
class BudgetAdvice:
    """What ``advise`` answers for every budget from ``low`` up to (not including) ``high``
    GB (``high`` None: no end), computed at ``low``."""

    low: float
    high: float | None
    text: str


def experiment_memory(summary: pd.DataFrame, task: str, memory: str) -> pd.Series:
    """Each measured experiment's ``memory`` of this run: the mean over its successful seeds,
    the figure :func:`~peftbench.report.advice.advise` checks a budget against."""
    rows = summary[
        (summary["task"] == task)
        & (summary["source"] == SOURCE_THIS_RUN)
        & (summary["status"] == "success")
    ]
    values = pd.to_numeric(rows[memory], errors="coerce")
    return values.groupby(rows["experiment"]).mean().dropna().sort_values()


def advice_steps(
    summary: pd.DataFrame,
    task: str,
    items: Mapping[Any, np.ndarray] | None,
    *,
    memory: str,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[BudgetAdvice]:
    """The advice of this run's results for every budget, as steps: below the smallest
    experiment's memory (nothing fits), then from each experiment's memory to the next one's.
    Each text is what ``format_advice`` prints for ``advise`` at the step's lower end, with the
    base model as the reference, as ``peftbench advise`` does (same bootstrap seed)."""
    ends = sorted(set(experiment_memory(summary, task, memory)))
    reference = reference_row(summary, task)
    steps = []
    for low, high in zip([0.0, *ends], [*ends, None], strict=True):
        if high is not None and high <= low:
            continue  # an experiment that needed no memory: nothing is below it
        frontier, _, notes = advise(
            summary, task, low, items=items, n_boot=n_boot, seed=seed, memory=memory
        )
        text = format_advice(
            frontier,
            task,
            low,
            None,
            notes,
            reference=reference,
            n_boot=n_boot,
            memory=memory,
        )
        steps.append(BudgetAdvice(low=low, high=high, text=text))
    return steps

"""The search grid as rule aggregate writes it (``results/<task>/search.csv``) and the report
reads it back (peftbench.analysis.search.read_grid)."""

import pandas as pd
from test_search_choice import grid_results

from peftbench.analysis.aggregate import summarize
from peftbench.analysis.search import GRID_COLUMNS, grid_table, read_grid
from peftbench.report.pages_search import search_page


def test_a_written_grid_reads_back_as_it_was(tmp_path):
    grid = grid_table(summarize(grid_results([0.2, 0.5, 0.3], [0.9, 0.1, 0.8]), False))
    grid.to_csv(tmp_path / "search.csv", index=False)
    back = read_grid(tmp_path / "search.csv")
    pd.testing.assert_frame_equal(back, grid, check_dtype=False)
    assert back["chosen"].dtype == bool and back["point"].tolist() == grid["point"].tolist()
    assert search_page("math", back) == search_page("math", grid)


def test_an_empty_grid_reads_back_empty(tmp_path):
    grid_table(pd.DataFrame()).to_csv(tmp_path / "search.csv", index=False)
    back = read_grid(tmp_path / "search.csv")
    assert back.empty and list(back.columns) == GRID_COLUMNS
    assert "No experiment of this run has a search grid" in search_page("math", back)

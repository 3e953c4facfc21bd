"""Tests for the MetaMathQA/GSM8K loaders on small local fixtures in the real formats."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from paths import DATA

from peftbench.tasks.math.loaders import gsm8k_valid_subset, load_gsm8k, load_metamathqa

METAMATHQA = DATA / "metamathqa_sample.json"
GSM8K = DATA / "gsm8k_sample.jsonl"


@pytest.fixture(autouse=True)
def _isolated_datasets_cache(tmp_path, monkeypatch):
    # Keep the Arrow cache that `datasets` writes out of the user's ~/.cache.
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_metamathqa_filters_long_rows_and_keeps_order():
    raw = json.loads(METAMATHQA.read_text())
    rows = load_metamathqa(str(METAMATHQA), revision=None)
    expected = [r for r in raw if len(r["query"] + " " + r["response"]) <= 1300]
    assert len(expected) == len(raw) - 1  # the fixture has exactly one over-long row
    assert [r["query"] for r in rows] == [r["query"] for r in expected]
    assert all(set(r) == {"query", "response", "answer"} for r in rows)


def test_metamathqa_answers():
    rows = load_metamathqa(str(METAMATHQA), revision=None)
    # "The answer is:" outranks the "####" line that GSM-derived responses also contain.
    assert [r["answer"] for r in rows] == ["12", "\\frac{3}{4}", "9", "950", ""]


def test_metamathqa_max_chars_and_max_rows():
    all_rows = load_metamathqa(str(METAMATHQA), revision=None, max_chars=10_000)
    assert len(all_rows) == 6
    assert load_metamathqa(str(METAMATHQA), None, max_rows=2) == all_rows[:2]
    # max_rows applies after the length filter.
    assert len(load_metamathqa(str(METAMATHQA), None, max_rows=5)) == 5
    short = load_metamathqa(str(METAMATHQA), None, max_chars=120)
    assert 0 < len(short) < 5
    assert all(len(r["query"] + " " + r["response"]) <= 120 for r in short)


def test_metamathqa_jsonl_and_parquet_agree(tmp_path):
    raw = json.loads(METAMATHQA.read_text())
    jsonl = _write_jsonl(tmp_path / "mmqa.jsonl", raw)
    parquet = tmp_path / "mmqa.parquet"
    pd.DataFrame(raw).to_parquet(parquet)
    reference = load_metamathqa(str(METAMATHQA), None)
    assert load_metamathqa(str(jsonl), None) == reference
    assert load_metamathqa(str(parquet), None) == reference


def test_metamathqa_missing_column(tmp_path):
    raw = [{k: v for k, v in r.items() if k != "type"} for r in json.loads(METAMATHQA.read_text())]
    path = _write_jsonl(tmp_path / "no_type.jsonl", raw)
    with pytest.raises(ValueError, match="type") as err:
        load_metamathqa(str(path), None)
    assert str(path) in str(err.value)


def test_gsm8k_jsonl():
    rows = load_gsm8k(str(GSM8K), None, split="test")
    assert [r["answer"] for r in rows] == ["12", "180", "1234", "-2.5", "48"]
    first = json.loads(GSM8K.read_text().splitlines()[0])
    assert rows[0] == {"query": first["question"], "response": first["answer"], "answer": "12"}


def test_gsm8k_parquet(tmp_path):
    df = pd.read_json(GSM8K, lines=True)
    path = tmp_path / "test-00000-of-00001.parquet"
    df.to_parquet(path)
    assert load_gsm8k(str(path), None, "main", "test") == load_gsm8k(str(GSM8K), None, split="test")


def test_gsm8k_directory_snapshot(tmp_path):
    # Layout of a Hub snapshot: per-config folders declared in the README's YAML header.
    df = pd.read_json(GSM8K, lines=True)
    (tmp_path / "snap" / "main").mkdir(parents=True)
    df.iloc[:2].to_parquet(tmp_path / "snap" / "main" / "train-00000-of-00001.parquet")
    df.to_parquet(tmp_path / "snap" / "main" / "test-00000-of-00001.parquet")
    (tmp_path / "snap" / "README.md").write_text(
        "---\nconfigs:\n- config_name: main\n  data_files:\n"
        "  - split: train\n    path: main/train-*\n  - split: test\n    path: main/test-*\n---\n"
    )
    snap = str(tmp_path / "snap")
    assert len(load_gsm8k(snap, None, split="test")) == len(df)
    assert len(load_gsm8k(snap, None, split="train")) == 2
    with pytest.raises(ValueError, match="socratic"):
        load_gsm8k(snap, None, config_name="socratic", split="test")


def test_gsm8k_plain_directory(tmp_path):
    # A folder of split-named files has only the "default" config; config_name is then moot.
    lines = GSM8K.read_text().splitlines(keepends=True)
    (tmp_path / "train.jsonl").write_text("".join(lines[:3]))
    (tmp_path / "test.jsonl").write_text("".join(lines[3:]))
    assert [r["answer"] for r in load_gsm8k(str(tmp_path), None, split="test")] == ["-2.5", "48"]


def test_gsm8k_missing_hashes_names_file_and_row(tmp_path):
    path = _write_jsonl(
        tmp_path / "bad.jsonl",
        [{"question": "q0", "answer": "a #### 1"}, {"question": "q1", "answer": "no marker"}],
    )
    with pytest.raises(ValueError, match="row 1") as err:
        load_gsm8k(str(path), None, split="test")
    assert str(path) in str(err.value)


def test_gsm8k_missing_column(tmp_path):
    path = _write_jsonl(tmp_path / "no_answer.jsonl", [{"question": "q", "solution": "#### 1"}])
    with pytest.raises(ValueError, match="'answer'") as err:
        load_gsm8k(str(path), None, split="test")
    assert str(path) in str(err.value)


def test_gsm8k_requires_split():
    with pytest.raises(TypeError, match="split"):
        load_gsm8k(str(GSM8K), None)


def test_missing_local_path_is_not_sent_to_hub(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_gsm8k(str(tmp_path / "nope.jsonl"), None, split="test")
    with pytest.raises(FileNotFoundError):
        load_metamathqa("data/missing.json", None)


def test_unsupported_extension(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("question,answer\nq,#### 1\n")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_gsm8k(str(path), None, split="test")


def test_gsm8k_valid_subset_deterministic():
    rows = [{"query": str(i), "response": "", "answer": str(i)} for i in range(200)]
    a = gsm8k_valid_subset(rows, n=50, seed=0)
    assert a == gsm8k_valid_subset(rows, n=50, seed=0)
    assert len(a) == 50
    assert len({r["query"] for r in a}) == 50
    assert a != rows[:50]
    assert a != gsm8k_valid_subset(rows, n=50, seed=1)
    # The subset is a prefix of the same seeded permutation, whatever n is.
    assert gsm8k_valid_subset(rows, n=10, seed=0) == a[:10]


def _suite_valid_indices(n_rows: int, n: int, seed: int) -> list[int]:
    """The published suite's draw, as its data.py does it: seed NumPy's global generator,
    shuffle arange(n_rows), keep the first n (the global state is restored afterwards)."""
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        indices = np.arange(n_rows)
        np.random.shuffle(indices)
    finally:
        np.random.set_state(state)
    return [int(i) for i in indices[:n]]


@pytest.mark.parametrize(("n_rows", "n", "seed"), [(200, 50, 0), (7473, 50, 0), (31, 5, 3)])
def test_gsm8k_valid_subset_draws_the_published_rows(n_rows, n, seed):
    rows = [{"query": str(i)} for i in range(n_rows)]
    got = [int(r["query"]) for r in gsm8k_valid_subset(rows, n=n, seed=seed)]
    assert got == _suite_valid_indices(n_rows, n, seed)


def test_gsm8k_valid_subset_leaves_the_global_generator_alone():
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    gsm8k_valid_subset([{"query": str(i)} for i in range(100)], n=10, seed=0)
    assert np.random.random() == expected


def test_prepare_hub_valid_rows_are_the_published_ones(tmp_path):
    """On a local GSM8K-format train split, the prepared valid.jsonl holds exactly the rows the
    published suite validates on, in its order."""
    from peftbench.tasks.math.data import prepare_data

    n_rows = 300
    gsm8k_train = _write_jsonl(
        tmp_path / "train.jsonl",
        [{"question": f"q{i}", "answer": f"{i} + 0 = {i}\n#### {i}"} for i in range(n_rows)],
    )
    heldout = _write_jsonl(tmp_path / "wiki.jsonl", [{"text": "Article."}])
    hub = {
        "train": {"path": str(METAMATHQA), "revision": None, "split": "train", "max_chars": 1300},
        "valid": {"path": str(gsm8k_train), "revision": None, "split": "train", "n": 50, "seed": 0},
        "test": {"path": str(GSM8K), "revision": None, "split": "test"},
        "heldout": {"path": str(heldout), "revision": None, "split": "train", "n": 1},
    }
    prepare_data({"source": "hub", "hub": hub}, tmp_path / "data")
    lines = (tmp_path / "data/valid.jsonl").read_text().splitlines()
    valid = [json.loads(line) for line in lines]
    assert [r["query"] for r in valid] == [f"q{i}" for i in _suite_valid_indices(n_rows, 50, 0)]
    assert all(r["answer"] == r["query"][1:] for r in valid)


def test_gsm8k_valid_subset_small_input():
    rows = [{"query": "a"}, {"query": "b"}]
    assert sorted(r["query"] for r in gsm8k_valid_subset(rows, n=50)) == ["a", "b"]
    assert gsm8k_valid_subset([], n=5) == []


def test_prepare_hub_path_on_local_files(tmp_path):
    """The preset's data path (MetaMathQA + GSM8K + a text corpus) end to end on local files."""
    from peftbench.tasks.math.data import prepare_data

    heldout = tmp_path / "wiki.jsonl"
    heldout.write_text("".join(json.dumps({"text": f"Article {i}."}) + "\n" for i in range(5)))
    gsm8k = str(DATA / "gsm8k_sample.jsonl")
    hub = {
        "train": {
            "path": str(DATA / "metamathqa_sample.json"),
            "revision": None,
            "split": "train",
            "max_chars": 1300,
        },
        "valid": {"path": gsm8k, "revision": None, "split": "train", "n": 2, "seed": 0},
        "test": {"path": gsm8k, "revision": None, "split": "test"},
        "heldout": {"path": str(heldout), "revision": None, "split": "train", "n": 3},
    }
    prepare_data({"source": "hub", "hub": hub}, tmp_path / "data")
    manifest = json.loads((tmp_path / "data/manifest.json").read_text())
    assert manifest["rows"]["valid.jsonl"] == 2
    assert manifest["rows"]["heldout.jsonl"] == 3
    assert manifest["rows"]["train.jsonl"] == 5, "the over-long MetaMathQA row is filtered out"
    assert manifest["rows"]["test.jsonl"] == 5
    test_rows = [json.loads(x) for x in (tmp_path / "data/test.jsonl").read_text().splitlines()]
    assert all(set(r) >= {"query", "response", "answer"} for r in test_rows)
    assert "1234" in {r["answer"] for r in test_rows}

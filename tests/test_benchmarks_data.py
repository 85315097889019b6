"""Loading and sampling the benchmarks: every supported source gives the same questions, and a
seeded sample is stratified, nested and the same for every model."""

from __future__ import annotations

import collections
import gzip
import json

import pytest

from qatcmp.benchmarks import humaneval, mmlu_pro
from qatcmp.benchmarks.datasource import builtin_path
from qatcmp.errors import DataError


def builtin_rows(filename: str) -> list[dict]:
    with gzip.open(builtin_path(filename), "rt") as fh:
        return [json.loads(line) for line in fh]


def test_builtin_mmlu_pro_has_every_category():
    items, loaded = mmlu_pro.load("builtin")
    assert len(items) == 700 and loaded.revision.startswith("sha256:")
    counts = collections.Counter(item.category for item in items)
    assert len(counts) == 14 and set(counts.values()) == {50}


@pytest.mark.parametrize("kind", ["jsonl", "jsonl.gz", "parquet", "folder"])
def test_local_sources_load_the_same_questions(tmp_path, kind):
    import datasets

    rows = builtin_rows(mmlu_pro.BUILTIN_FILE)[:40]
    if kind == "parquet":
        path = tmp_path / "mmlu.parquet"
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    elif kind == "folder":
        path = tmp_path / "mmlu"
        path.mkdir()
        with (path / "test.jsonl").open("w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
    else:
        path = tmp_path / f"mmlu.{kind}"
        opener = gzip.open if kind.endswith(".gz") else open
        with opener(path, "wt") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
    items, loaded = mmlu_pro.load(str(path))
    assert [i.item_id for i in items] == [str(r["question_id"]) for r in rows]
    assert [i.answer for i in items] == [r["answer"] for r in rows]
    assert loaded.dataset == str(path.resolve())


def test_rows_that_are_not_questions_get_a_clear_error(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"task_id": "HumanEval/0", "prompt": "x"}) + "\n")
    with pytest.raises(DataError, match="row 1 is not an MMLU-Pro question"):
        mmlu_pro.load(str(path))


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "questions.csv"
    path.write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported file type"):
        mmlu_pro.load(str(path))


def test_mmlu_pro_sample_is_stratified_seeded_and_nested():
    items, _ = mmlu_pro.load("builtin")
    first = mmlu_pro.sample(items, 56, seed=5)
    assert first == mmlu_pro.sample(list(reversed(items)), 56, seed=5)  # input order is irrelevant
    assert mmlu_pro.sample(items, 140, seed=5)[:56] == first  # a larger run extends a smaller one
    assert set(collections.Counter(i.category for i in first).values()) == {4}  # 56 / 14 categories
    assert first != mmlu_pro.sample(items, 56, seed=6)


def test_humaneval_sample_and_prompt():
    items, _ = humaneval.load("builtin")
    assert len(items) == 164
    chosen = humaneval.sample(items, 200, seed=1)
    assert sorted(i.item_id for i in chosen) == sorted(i.item_id for i in items)
    text = humaneval.build_messages(items[0])[0]["content"]
    assert items[0].prompt in text and "```python" in text


def test_mmlu_pro_prompt_is_the_official_zero_shot_one():
    items, _ = mmlu_pro.load("builtin")
    item = next(i for i in items if len(i.options) == 10)
    text = mmlu_pro.build_messages(item)[0]["content"]
    assert text.startswith(f"The following are multiple choice questions (with answers) about {item.category}.")
    assert 'output the answer in the format of "The answer is (X)" at the end.' in text
    assert f"\nJ. {item.options[9]}\n" in text and text.endswith("Answer: Let's think step by step.")

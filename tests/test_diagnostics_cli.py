"""`caprese diagnose` end to end on a tiny model folder: statistics, errors and figures on disk."""

import csv
import json

import pytest

from caprese.cli import build_parser
from caprese.errors import CapreseError
from caprese.testing import save_tiny_model


def _parse(argv):
    return build_parser().parse_args(["diagnose", *argv])  # the real `caprese` parser


@pytest.fixture(scope="module")
def model_and_prompts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("diagnose")
    folder = save_tiny_model(tmp / "model", "LlamaForCausalLM")
    prompts = tmp / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": f"p{i}", "prompt": f"Question {i}: add {i} and {2 * i}."}) + "\n" for i in range(6))
    )
    return folder, prompts


@pytest.mark.slow
def test_diagnose_writes_statistics_errors_and_figures(model_and_prompts, tmp_path, capsys):
    folder, prompts = model_and_prompts
    out = tmp_path / "out"
    args = _parse(
        [
            "--model",
            str(folder),
            "--data",
            str(prompts),
            "--samples",
            "6",
            "--out",
            str(out),
            "--densities",
            "0.1",
            "0.5",
            "--ranks",
            "1",
            "2",
            "4",
            "--max-new-tokens",
            "12",
            "--quiet",
        ]
    )
    assert args.run(args) == 0
    assert "relative error" in capsys.readouterr().out
    for name in (
        "stats.json",
        "stats.csv",
        "errors.json",
        "errors.csv",
        "figure2.csv",
        "summary.json",
        "state.pt",
        "generations.jsonl",
    ):
        assert (out / name).stat().st_size > 0, name
    for figure in ("sparsity_vs_epsilon", "abs_z_quantiles", "error_vs_density"):
        assert (out / f"{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"{figure}.pdf").read_bytes()[:5] == b"%PDF-"
    stats = json.loads((out / "stats.json").read_text())
    assert [(e["layer"], e["phase"]) for e in stats["layers"]] == [
        (0, "prompt"),
        (0, "generated"),
        (1, "prompt"),
        (1, "generated"),
    ]
    errors = list(csv.DictReader(open(out / "errors.csv")))
    assert {(int(r["layer"]), float(r["density"]), int(r["rank"])) for r in errors} == {
        (layer, d, r) for layer in (0, 1) for d in (0.1, 0.5) for r in (0, 1, 2, 4)
    }
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == 6 and summary["ranks"] == [1, 2, 4] and summary["generated_tokens"] > 0
    assert all(int(r["tokens"]) > 0 and int(r["fit_tokens"]) > 0 for r in errors)
    # both phases: the generated tokens' errors (figure 2) and the prompt tokens' with the same corrections
    assert {r["phase"] for r in errors} == {"generated", "prompt"}
    figure2 = list(csv.DictReader(open(out / "figure2.csv")))
    generated = [r for r in errors if r["phase"] == "generated"]
    assert float(figure2[0]["relative_l2"]) == pytest.approx(
        sum(float(r["relative_l2"]) for r in generated if (r["density"], r["rank"]) == ("0.1", "0")) / 2
    )


@pytest.mark.slow
def test_the_explorer_opens_a_diagnose_folder_and_redraws_on_each_control(model_and_prompts, tmp_path):
    """The notebook's layer explorer, headless: it reads the folder alone (no model), and each
    control's callback puts another layer's / phase's numbers and PNG into the panels."""
    from caprese.diagnostics.view import DiagnosticsView
    from caprese.diagnostics.widgets import LayerExplorer

    folder, prompts = model_and_prompts
    out = tmp_path / "out"
    args = _parse(
        [
            "--model",
            str(folder),
            "--data",
            str(prompts),
            "--samples",
            "4",
            "--out",
            str(out),
            "--densities",
            "0.1",
            "0.5",
            "--ranks",
            "2",
            "--max-new-tokens",
            "8",
            "--quiet",
        ]
    )
    assert args.run(args) == 0
    view = DiagnosticsView.load(out)
    stats = json.loads((out / "stats.json").read_text())["layers"]
    entry = next(e for e in stats if (e["layer"], e["phase"]) == (1, "prompt"))
    numbers = view.numbers(1, "prompt", epsilon=2.0**-6)
    assert numbers["sparsity"] == pytest.approx(entry["fraction_le_eps"]["0.015625"])
    assert numbers["densities"][0]["topk_energy_kept"] == pytest.approx(entry["topk_energy_kept"]["0.1"])

    explorer = LayerExplorer(out)
    (_, text_a, image_a), (box_b, _, _) = explorer.panels
    first = image_a.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and "layer 0</b>, generated" in text_a.value
    assert box_b.layout.display == "none"
    explorer.layer.value = 1
    assert image_a.value != first and "layer 1</b>, generated" in text_a.value
    assert f"{view.numbers(1, 'generated')['sparsity']:.4f}" in text_a.value
    explorer.compare.value = 0
    assert box_b.layout.display is None and explorer.panels[1][2].value == first
    explorer.phase.value = "prompt"
    assert "layer 1</b>, prompt" in text_a.value and f"{numbers['sparsity']:.4f}" in text_a.value
    explorer.export()
    for name in ("layer1_prompt.png", "layer1_prompt.pdf", "layer0_prompt.png", "layer0_prompt.pdf"):
        assert (out / "explorer" / name).stat().st_size > 0
    with pytest.raises(CapreseError, match="not a finished diagnose folder: no summary.json, state.pt, errors.json"):
        DiagnosticsView.load(tmp_path / "nothing")


def test_diagnose_rejects_bad_values_with_one_line(model_and_prompts, tmp_path):
    folder, prompts = model_and_prompts
    for extra, message in (
        (["--densities", "0"], "density 0.0 is out of range"),
        (["--layers", "7"], "layer 7 is out of range"),
        (["--ranks", "99"], "rank 99 is out of range"),
    ):
        args = _parse(
            [
                "--model",
                str(folder),
                "--data",
                str(prompts),
                "--samples",
                "2",
                "--out",
                str(tmp_path),
                "--max-new-tokens",
                "2",
                "--quiet",
                *extra,
            ]
        )
        with pytest.raises(CapreseError, match=message) as info:
            args.run(args)
        assert "\n" not in str(info.value)

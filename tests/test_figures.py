"""`caprese figures`: every figure and table drawn from finished runs (fake run folders with
metrics.json shaped like caprese.experiment writes them), values traced back to the data,
missing sweeps reported in one line and not fatal."""

import argparse
import json
import shutil
from pathlib import Path

import nbformat
import pandas as pd
import papermill
import pytest

from caprese.commands import figures as figures_command
from caprese.errors import CapreseError
from caprese.figures import ITEMS, load_results, render_all
from caprese.figures.parameters import caprese_extra_parameters
from caprese.io import write_json
from caprese.sweep import check_spec, collect, load_spec

pytestmark = (
    pytest.mark.integration
)  # renders every figure from sweep results: make test runs it, make test-fast does not

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "figures.ipynb"
HIDDEN, INTERMEDIATE, LAYERS = 192, 768, 6
MODEL_PARAMS, FFN_PARAMS = 3_000_000, 3 * HIDDEN * INTERMEDIATE * LAYERS
LEVELS = ("1", "2", "3", "4", "5")


# ------------------------------------------------------------------------------ fake runs


def accuracy_of(method, sparsity, stage, rank, samples, seed):
    """A made-up but distinct number per configuration, so each plotted value can be traced."""
    if method == "dense":
        return 0.8
    value = 0.8 - 0.6 * sparsity + (0.0 if stage == "none" else 0.002 * rank + 0.00005 * samples)
    value += {"e2e": 0.05, "layerwise": 0.0, "none": 0.0}[stage] + 0.01 * seed
    return round(min(value, 0.95), 6)


def tokens_of(method, stage, level):
    return (
        20.0
        + 5 * int(level)
        + (8.0 if method != "dense" and stage == "none" else 0.0)
        + (1.0 if stage == "e2e" else 0.0)
    )


def layer_error(sparsity, layer, rank):
    return round(sparsity * (0.5 + 0.05 * layer) / (1 + 0.1 * rank), 6)


def fake_metrics(
    out_dir,
    *,
    model="toy-math",
    method="griffin",
    sparsity=0.5,
    layers="first_half",
    rank=0,
    samples=256,
    stage="none",
    seed=0,
    eval_samples=50,
    coverage_samples=0,
    language=True,
    reselect_every=0,
):
    config = {
        "model": model,
        "task": "toy-math",
        "method": method,
        "sparsity": sparsity,
        "layers": layers,
        "rank": rank,
        "samples": samples,
        "stage": stage,
        "seed": seed,
        "eval_samples": eval_samples,
        "eval_seed": 0,
        "max_new_tokens": 160,
        "batch_size": 64,
        "coverage_samples": coverage_samples,
        "coverage_prompts": 20,
        "temperature": 0.7,
        "language_samples": 50,
        "error_samples": 32,
        "out_dir": str(out_dir),
        "reselect_every": reselect_every,
    }
    dense = method == "dense"
    chosen = list(range(LAYERS)) if dense or layers == "all" else list(range(LAYERS // 2))
    accuracy = accuracy_of(method, 0.0 if dense else sparsity, stage, rank, samples, seed)
    per_level = {
        level: {
            "count": 10,
            "correct": round(10 * accuracy),
            "accuracy": accuracy - 0.02 * int(level),
            "mean_response_tokens": tokens_of(method, stage, level),
            "unfinished": 0,
        }
        for level in LEVELS
    }
    cut = 0.0 if dense else sparsity * 3 * HIDDEN * INTERMEDIATE * len(chosen)
    extra = caprese_extra_parameters(HIDDEN, rank, len(chosen)) if stage != "none" else 0
    active = (MODEL_PARAMS - cut + extra) / MODEL_PARAMS
    metrics = {
        "config": config,
        "task": "toy-math",
        "math": {
            "count": 50,
            "correct": round(50 * accuracy),
            "accuracy": accuracy,
            "mean_response_tokens": sum(v["mean_response_tokens"] for v in per_level.values()) / 5,
            "unfinished": 0,
            "per_level": per_level,
        },
        "params": {
            "method": method,
            "sparsity": 0.0 if dense else sparsity,
            "layers": chosen,
            "num_layers": LAYERS,
            "ffn_params_dense": FFN_PARAMS,
            "ffn_params_cut": cut,
            "model_params": MODEL_PARAMS,
            "model_active_fraction": (MODEL_PARAMS - cut) / MODEL_PARAMS,
            "extra_parameters": extra,
            "model_active_fraction_with_extra": active,
        },
        "seconds": 12.5,
    }
    metrics["params_measured"] = {
        **metrics["params"],
        "model_active_fraction_with_extra": measured_active(active, dense),
    }
    metrics["measured_sparsity"] = {
        "requested": metrics["params"]["sparsity"],
        "overall": metrics["params"]["sparsity"],
    }
    if language:
        metrics["language"] = {
            "short_answer_accuracy": 0.9 - (0.0 if dense else 0.1 * sparsity),
            "perplexity": 3.0 + (0.0 if dense else sparsity),
            "dense_perplexity": 3.0,
            "kl_dense_to_method": 0.0 if dense else 0.01 * sparsity / (1 + rank),
            "scored_tokens": 700,
        }
    if coverage_samples:
        pass_at = {str(k): round(min(1.0, accuracy * (1 + 0.1 * (k - 1))), 6) for k in range(1, coverage_samples + 1)}
        metrics["coverage"] = {
            "n": coverage_samples,
            "prompts": 20,
            "temperature": 0.7,
            "top_p": 1.0,
            "pass_at_k": pass_at,
            "active_fraction_requested": active,
            "active_fraction_measured": measured_active(active, dense),
            "relative_compute": {k: int(k) * measured_active(active, dense) for k in pass_at},
            "relative_compute_requested": {k: int(k) * active for k in pass_at},
            "mean_response_tokens": 30.0,
        }
    if not dense:
        metrics["ffn_error"] = {
            str(layer): {
                "method": {"relative_l2": layer_error(sparsity, layer, 0), "cosine": 0.9, "tokens": 900},
                **(
                    {"caprese": {"relative_l2": layer_error(sparsity, layer, rank), "cosine": 0.95, "tokens": 900}}
                    if stage != "none"
                    else {}
                ),
            }
            for layer in chosen
        }
    if stage != "none":
        decay = 0.3 if method == "cats" else 0.8  # CATS's corrections are lower rank (paper fig. 8)
        metrics["caprese"] = {
            "extra_parameters": extra,
            "model_parameters": MODEL_PARAMS,
            "ffn_parameters": FFN_PARAMS,
            "extra_percent_of_model": 100 * extra / MODEL_PARAMS,
            "extra_percent_of_ffn": 100 * extra / FFN_PARAMS,
            "singular_values": {
                str(layer): {
                    "singular_values": [0.01 * decay**i for i in range(rank)],
                    "normalised": [decay**i * (1 - 0.01 * layer) ** min(i, 1) for i in range(rank)],
                }
                for layer in chosen
            },
            "losses": {"layerwise": {str(layer): {"loss": 1e-5} for layer in chosen}},
        }
    return metrics


def write_sweep(runs, name, points, *, broken=()):
    """runs/<name>/ with sweep.json, one done run per point, plus failed / killed runs named in `broken`."""
    folder = runs / name
    listed = []
    for params in points:
        run_id = "_".join(
            f"{k}={v}"
            for k, v in params.items()
            if k in ("method", "sparsity", "stage", "rank", "samples", "seed", "reselect_every")
        )
        listed.append({"run_id": run_id, "params": params})
        write_json(folder / run_id / "params.json", params)
        write_json(folder / run_id / "metrics.json", fake_metrics(folder / run_id, **params))
    for run_id, state in broken:
        write_json(folder / run_id / "params.json", {"method": "griffin", "rank": 999})
        listed.append({"run_id": run_id, "params": {"method": "griffin", "rank": 999}})
        if state == "failed":
            write_json(folder / run_id / "error.json", {"error": "RuntimeError: boom"})
    write_json(folder / "sweep.json", {"name": name, "points": listed})
    return folder


def fig2_points():
    return [
        {"method": "topk", "layers": "all", "sparsity": s, "stage": st, "rank": r, "eval_samples": 20}
        for s in (0.3, 0.5, 0.8)
        for st, r in (("none", 0), ("layerwise", 8), ("layerwise", 32))
    ]


def sparsity_points():
    return [
        {"method": m, "layers": "all" if m == "cats" else "first_half", "sparsity": s, "stage": st, "rank": r}
        for m in ("cats", "griffin")
        for s in (0.3, 0.5, 0.7)
        for st, r in (("none", 0), ("layerwise", 16), ("layerwise", 32))
    ]


def rank_points():
    return [
        {"method": "griffin", "sparsity": 0.5, "stage": st, "rank": r}
        for st, r in (("none", 0), ("layerwise", 8), ("layerwise", 32), ("e2e", 8), ("e2e", 32))
    ]


def samples_points():
    return [
        {"method": "griffin", "sparsity": 0.5, "stage": "layerwise", "rank": 16, "samples": n, "seed": seed}
        for n in (32, 128, 512)
        for seed in (0, 1)
    ]


def measured_active(requested, dense):
    """A measured active fraction a little above the requested one (sparsity falls short of the target)."""
    return requested if dense else min(1.0, requested + 0.01)


def coverage_points():
    return [
        {"method": m, "stage": st, "rank": r, "coverage_samples": 8}
        for m, st, r in (("dense", "none", 0), ("griffin", "none", 0), ("griffin", "e2e", 16))
    ]


def reselect_points():
    return [
        {"method": "griffin", "sparsity": 0.5, "layers": "all", "stage": st, "rank": r, "reselect_every": rho}
        for rho in (0, 16, 4)
        for st, r in (("none", 0), ("layerwise", 16))
    ]


def make_runs(root, sweeps=("fig2", "sparsity", "rank", "samples", "coverage", "reselect")):
    runs = root / "runs"
    makers = {
        "reselect": reselect_points,
        "fig2": fig2_points,
        "sparsity": sparsity_points,
        "rank": rank_points,
        "samples": samples_points,
        "coverage": coverage_points,
    }
    for name in sweeps:
        write_sweep(
            runs,
            name,
            makers[name](),
            broken=[("rank=999", "failed"), ("rank=998", "killed")] if name == "rank" else (),
        )
    (runs / "_shared").mkdir(parents=True, exist_ok=True)  # distillation data shared by a sweep's runs: not a sweep
    return runs


# the shape of `caprese bench --out` (caprese.bench.FFNLatency.as_dict), with fixed numbers
LATENCY = {
    "ffn_stack": [
        {
            "shape": "Llama-3.1-8B",
            "layers": 2,
            "dtype": "float32",
            "device": "cpu",
            "ms": {"full": 41.0, "griffin": 34.0, "griffin_lora": 37.0, "caprese_merged": 34.2},
            "ratio_to_full": {
                "full": 1.0,
                "griffin": 34.0 / 41,
                "griffin_lora": 37.0 / 41,
                "caprese_merged": 34.2 / 41,
            },
            "bytes_limit": {"full": 1.0, "griffin": 0.5, "griffin_lora": 0.51, "caprese_merged": 0.512},
            "ratio_to_limit": {"full": 1.0, "griffin": 1.66, "griffin_lora": 1.77, "caprese_merged": 1.63},
        }
    ],
    "generation": {
        "model": "toy-math",
        "device": "cpu",
        "ms_per_token": {"full": 5.0, "griffin": 4.0},
        "ratio_to_full": {"full": 1.0, "griffin": 0.8},
    },
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    root = tmp_path_factory.mktemp("figures")
    runs = make_runs(root)
    out = root / "figures"
    write_json(out / "latency.json", LATENCY)
    return runs, out, render_all(runs, out)


# ------------------------------------------------------------------------------ tests


def test_every_figure_and_table_is_written_as_png_pdf_or_csv_md(rendered):
    runs, out, report = rendered
    assert [o.line() for o in report.not_made] == [] and report.ok
    for item in ITEMS:
        if item.kind == "figure":
            assert (out / f"{item.name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert (out / f"{item.name}.pdf").read_bytes()[:5] == b"%PDF-"
            assert not pd.read_csv(out / "data" / f"{item.name}.csv").empty
        else:
            assert not pd.read_csv(out / f"{item.name}.csv").empty
            assert (out / f"{item.name}.md").read_text().count("\n|") >= 2
    readme = (out / "README.md").read_text()
    assert all(f"`{item.name}." in readme for item in ITEMS) and "not made" not in readme
    assert len(report.pngs()) == sum(item.kind == "figure" for item in ITEMS)
    assert not list(out.rglob(".*.tmp"))  # atomic writes leave no temp files


def test_only_finished_runs_are_read(rendered):
    runs, _, _ = rendered
    results = load_results(runs)
    assert sorted(results.sweeps) == [
        "coverage",
        "fig2",
        "rank",
        "reselect",
        "samples",
        "sparsity",
    ]  # _shared is not a sweep
    assert len(results.sweeps["rank"]) == 5 and results.counts["rank"] == {"done": 5, "failed": 1, "incomplete": 1}


def test_fig5_plots_each_runs_accuracy_against_density(rendered):
    _, out, _ = rendered
    data = pd.read_csv(out / "data" / "fig5_accuracy_vs_density.csv")
    curves = data[data["method"] != "dense"]
    assert len(curves) == 2 * 3 * 3  # method x sparsity x (alone, r16, r32)
    for row in curves.itertuples():
        assert row.density == pytest.approx(1 - row.sparsity)
        assert row.accuracy == pytest.approx(accuracy_of(row.method, row.sparsity, row.stage, row.rank, 256, 0))
    # the dense reference comes from the coverage sweep (same model and evaluation settings)
    assert data[data["method"] == "dense"]["accuracy"].tolist() == [0.8]


def test_rank_and_samples_ablations_average_seeds_and_carry_the_references(rendered):
    _, out, _ = rendered
    rank = pd.read_csv(out / "data" / "ablation_rank.csv")
    e2e = rank[rank["stage"] == "e2e"].set_index("rank")
    assert e2e.loc[32, "accuracy"] == pytest.approx(accuracy_of("griffin", 0.5, "e2e", 32, 256, 0))
    assert e2e.loc[32, "ffn_error"] == pytest.approx(sum(layer_error(0.5, layer, 32) for layer in range(3)) / 3)
    assert set(rank.loc[rank["rank"] == 0, "series"]) == {"dense", "method alone"}
    samples = pd.read_csv(out / "data" / "ablation_samples.csv")
    at = samples[samples["stage"] == "layerwise"].set_index("samples")
    two_seeds = [accuracy_of("griffin", 0.5, "layerwise", 16, 128, seed) for seed in (0, 1)]
    assert at.loc[128, "accuracy"] == pytest.approx(sum(two_seeds) / 2) and at.loc[128, "runs"] == 2
    assert at.loc[128, "accuracy_min"] == pytest.approx(min(two_seeds)) and at.loc[
        128, "accuracy_max"
    ] == pytest.approx(max(two_seeds))
    # the method alone comes from the rank sweep: evaluated alike, so it is a fair reference
    alone = samples[samples["series"] == "method alone"]
    assert alone["accuracy"].tolist() == [pytest.approx(accuracy_of("griffin", 0.5, "none", 0, 256, 0))]


def test_fig2_uses_the_mean_error_over_layers_per_rank_and_density(rendered):
    _, out, _ = rendered
    data = pd.read_csv(out / "data" / "fig2_error_vs_density.csv").set_index(["rank", "density"])
    for sparsity in (0.3, 0.5, 0.8):
        for rank in (0, 8, 32):
            expected = sum(layer_error(sparsity, layer, rank) for layer in range(LAYERS)) / LAYERS
            assert data.loc[(rank, round(1 - sparsity, 10)), "relative_l2"] == pytest.approx(expected)
    assert data.loc[(0, 0.5), "runs"] == 1  # the method alone: its own run, not repeated per rank


def test_coverage_length_and_spectra_come_from_the_runs(rendered):
    _, out, _ = rendered
    cover = pd.read_csv(out / "data" / "fig3_coverage.csv")
    assert set(cover["series"]) == {"dense", "GRIFFIN", "GRIFFIN + Caprese r16 E2E"}
    dense = cover[cover["method"] == "dense"].set_index("k")
    assert dense.loc[8, "relative_compute"] == pytest.approx(8.0) and dense.loc[1, "pass_at_k"] == pytest.approx(0.8)
    caprese = cover[cover["stage"] == "e2e"].set_index("k")
    assert caprese.loc[4, "relative_compute"] < 4.0  # fewer active parameters per token than dense
    # the x axis is the measured compute; the requested one is kept beside it
    assert set(cover["compute"]) == {"measured"}
    assert caprese.loc[4, "relative_compute"] == pytest.approx(caprese.loc[4, "relative_compute_requested"] + 0.04)
    lengths = pd.read_csv(out / "data" / "fig4_7_response_length.csv", dtype={"level": str})
    row = lengths[(lengths["stage"] == "e2e") & (lengths["level"] == "3")]
    assert row["mean_response_tokens"].tolist() == [tokens_of("griffin", "e2e", "3")]
    spectra = pd.read_csv(out / "data" / "fig8_singular_values.csv")
    # matched on layers too: the fake GRIFFIN runs cover the first half only, CATS and top-k every layer
    assert set(spectra["method"]) == {"cats", "topk"}
    cats = spectra[(spectra["method"] == "cats") & (spectra["layer"] == 0)]
    assert cats["rank"].iloc[0] == 32 and len(cats) == 32  # the largest rank's spectrum
    assert cats["normalised"].iloc[2] == pytest.approx(0.3**2)


def test_fig6_reference_percentages_and_cut(rendered):
    from caprese.methods.accounting import active_ffn_parameters_from_config
    from caprese.models.reference import reference_config

    _, out, _ = rendered
    data = pd.read_csv(out / "data" / "fig6_parameters.csv")
    row = data[(data["model"] == "Qwen2.5-14B") & (data["method"] == "griffin") & (data["rank"] == 256)].iloc[0]
    accounting = active_ffn_parameters_from_config(reference_config("Qwen2.5-14B"), "griffin", 0.5, "first_half")
    assert row["extra_parameters"] == 2 * 5120 * 256 * 24
    assert row["extra_percent_of_model"] == pytest.approx(100 * row["extra_parameters"] / accounting["model_params"])
    assert row["active_parameters_cut"] == accounting["ffn_params_cut"] > 2e9  # the paper's "~2B cut"
    cats = data[(data["model"] == "Qwen2.5-14B") & (data["method"] == "cats") & (data["rank"] == 256)].iloc[0]
    assert cats["corrected_layers"] == 48 and cats["extra_parameters"] == 2 * row["extra_parameters"]
    measured = data[data["source"].str.startswith("run ")]
    toy = measured[(measured["method"] == "griffin") & (measured["rank"] == 16)].iloc[0]
    assert toy["hidden_size"] == HIDDEN and toy["corrected_layers"] == 3
    assert toy["extra_percent_of_model"] == pytest.approx(100 * caprese_extra_parameters(HIDDEN, 16, 3) / MODEL_PARAMS)


def test_tables_read_back(rendered):
    _, out, _ = rendered
    table1 = pd.read_csv(out / "table1_math_accuracy.csv")
    dense = table1[table1["method"] == "dense"]
    assert dense["accuracy"].tolist() == [0.8] and dense["sweeps"].tolist() == ["coverage"]
    # the rank and coverage sweeps both ran GRIFFIN alone, evaluated alike: one row, two runs
    # GRIFFIN alone at 50% ran in three sweeps, evaluated alike: one row, three runs
    alone = table1[(table1["method"] == "griffin") & (table1["stage"] == "none") & (table1["sparsity"] == 0.5)]
    alone = alone[alone["layers"] == "first_half"]  # the reselect sweep's GRIFFIN runs all layers
    assert alone["runs"].tolist() == [3] and alone["sweeps"].tolist() == ["coverage rank sparsity"]
    assert alone["accuracy"].tolist() == [pytest.approx(accuracy_of("griffin", 0.5, "none", 0, 256, 0))]
    # a coverage-sweep Caprese row: its recovered share against dense and GRIFFIN alone, evaluated alike
    corrected = table1[(table1["method"] == "griffin") & (table1["stage"] == "e2e") & (table1["sweeps"] == "coverage")]
    assert len(corrected) == 1
    row = corrected.iloc[0]
    lost = 0.8 - accuracy_of("griffin", 0.5, "none", 0, 256, 0)
    assert row["recovered"] == pytest.approx((row["accuracy"] - (0.8 - lost)) / lost)
    assert row["kind"] == "caprese" and row["extra_percent_of_model"] > 0
    table4 = pd.read_csv(out / "table4_language.csv")
    cats = table4[(table4["method"] == "cats") & (table4["stage"] == "none") & (table4["sparsity"] == 0.7)]
    assert cats["perplexity"].tolist() == [pytest.approx(3.7)] and cats["dense_perplexity"].tolist() == [3.0]
    table5 = pd.read_csv(out / "table5_latency.csv")
    assert table5["ms_per_token"].tolist() == [41.0, 34.0, 37.0, 34.2, 5.0, 4.0]
    assert table5["variant"].tolist()[:4] == ["full", "griffin", "griffin_lora", "caprese_merged"]
    assert "caprese_merged" in (out / "table5_latency.md").read_text()


def test_a_missing_sweep_is_one_line_and_the_rest_still_render(tmp_path, capsys):
    runs = make_runs(tmp_path, sweeps=("rank",))
    write_sweep(runs, "samples", [], broken=[("samples=32", "failed")])  # started, every run failed
    out = tmp_path / "figures"
    write_json(out / "data" / "fig3_coverage.csv", {})  # left over from an earlier render
    (out / "fig3_coverage.png").write_bytes(b"stale")
    parser = argparse.ArgumentParser()
    figures_command.add_parser(parser.add_subparsers())
    code = figures_command.run(parser.parse_args(["figures", "--runs", str(runs), "--out", str(out)]))
    printed = capsys.readouterr().out.splitlines()
    assert code == 0
    assert "fig3: no runs with coverage; run caprese sweep ablations/coverage.yaml" in printed
    assert any(
        line.startswith("fig5: no finished runs in") and line.endswith("run caprese sweep ablations/density.yaml")
        for line in printed
    )
    assert (
        f"samples: no finished runs in {runs / 'samples'} (1 failed); run caprese sweep ablations/samples.yaml"
        in printed
    )
    made = {line.split(":")[0] for line in printed if "<-" in line}
    assert made == {"fig4_7", "fig6", "fig8", "rank", "table1", "table4"}
    assert not (out / "fig3_coverage.png").exists() and not (out / "data" / "fig3_coverage.csv").exists()
    assert (out / "ablation_rank.png").exists() and "*not made:* no runs with coverage" in (
        out / "README.md"
    ).read_text()


def test_bad_inputs_fail_with_one_line(tmp_path):
    with pytest.raises(CapreseError, match="runs folder .* does not exist"):
        render_all(tmp_path / "nowhere", tmp_path / "figures")
    runs = make_runs(tmp_path, sweeps=("rank",))
    with pytest.raises(CapreseError, match="diagnostics folder .* does not exist"):
        render_all(runs, tmp_path / "figures", diagnostics=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    report = render_all(runs, tmp_path / "figures", diagnostics=tmp_path / "empty")
    fig2 = next(o for o in report.outcomes if o.item.key == "fig2")
    assert fig2.error and "has no figure2.csv" in fig2.reason and not report.ok
    write_json(tmp_path / "figures" / "latency.json", {"note": "nothing here"})
    report = render_all(runs, tmp_path / "figures")
    table5 = next(o for o in report.outcomes if o.item.key == "table5")
    assert table5.error and "not `caprese bench` output" in table5.reason
    assert "\n" not in table5.line() and report.figures_made  # the figures still rendered


def test_fig2_from_a_diagnose_folder(tmp_path):
    runs = make_runs(tmp_path, sweeps=("rank",))
    diagnostics = tmp_path / "diag"
    rows = [
        {"density": d, "rank": r, "relative_l2": round((1 - d) / (1 + r), 4), "cosine": 0.9, "layers": 6, "tokens": 100}
        for d in (0.1, 0.3, 0.5)
        for r in (0, 6, 12)
    ]
    diagnostics.mkdir()
    pd.DataFrame(rows).to_csv(diagnostics / "figure2.csv", index=False)
    report = render_all(runs, tmp_path / "figures", diagnostics=diagnostics)
    fig2 = next(o for o in report.outcomes if o.item.key == "fig2")
    assert "figure2.csv" in fig2.made.source
    data = pd.read_csv(tmp_path / "figures" / "data" / "fig2_error_vs_density.csv").set_index(["rank", "density"])
    assert data.loc[(12, 0.3), "relative_l2"] == pytest.approx(round(0.7 / 13, 4))
    assert set(data["stage"]) == {"none", "closed_form"}


def test_collected_results_csv_stands_in_for_deleted_run_folders(tmp_path):
    runs = make_runs(tmp_path, sweeps=("sparsity",))
    render_all(runs, tmp_path / "from_folders")
    collect(runs / "sparsity")
    for folder in (runs / "sparsity").iterdir():
        if folder.is_dir():
            shutil.rmtree(folder)
    (runs / "sparsity" / "sweep.json").unlink()
    render_all(runs, tmp_path / "from_csv")
    # fig 8 is refused alike from both: this sweep's GRIFFIN (first half) and CATS (all layers) do not match
    for out in ("from_folders", "from_csv"):
        assert not (tmp_path / out / "data" / "fig8_singular_values.csv").exists()
    for name in ("fig5_accuracy_vs_density",):
        from_folders = pd.read_csv(tmp_path / "from_folders" / "data" / f"{name}.csv")
        from_csv = pd.read_csv(tmp_path / "from_csv" / "data" / f"{name}.csv")
        pd.testing.assert_frame_equal(from_folders, from_csv, check_dtype=False)


def test_coverage_spec_checks_against_the_experiment_notebook():
    spec = load_spec(REPO / "ablations" / "coverage.yaml")
    check_spec(spec)  # names and types against notebooks/experiment.ipynb's parameters cell
    points = spec.points()
    rows = [(p.params["method"], p.params["stage"], p.params["kind"], p.params["rank"]) for p in points]
    assert rows[:5] == [
        ("dense", "none", "caprese", 0),
        ("griffin", "none", "caprese", 0),
        ("griffin", "layerwise", "caprese", 16),
        ("griffin", "e2e", "caprese", 16),
        ("griffin", "e2e", "lora", 16),
    ]  # dense, the method alone, Caprese, LoRA
    assert {p.params["method"] for p in points} == {"dense", "griffin", "cats"}
    assert all(p.params["coverage_samples"] == 8 for p in points)
    assert load_spec(REPO / "ablations" / "coverage.yaml", full=True).name == "coverage-full"


def test_figures_notebook_is_a_parameters_cell_and_a_call():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1
    assert list(papermill.inspect_notebook(str(NOTEBOOK))) == ["runs_dir", "out_dir", "diagnostics_dir", "latency_path"]
    assert "render_all(" in "".join(c.source for c in code)


@pytest.mark.slow
def test_figures_notebook_runs_headless_and_shows_the_pngs(tmp_path):
    runs = make_runs(tmp_path, sweeps=("coverage",))
    executed = papermill.execute_notebook(
        str(NOTEBOOK),
        str(tmp_path / "executed.ipynb"),
        kernel_name="caprese",
        progress_bar=False,
        parameters={"runs_dir": str(runs), "out_dir": str(tmp_path / "figures")},
        cwd=str(REPO),
    )
    images = [
        o
        for c in executed.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert len(images) == len(list((tmp_path / "figures").glob("*.png"))) >= 4
    assert json.loads(json.dumps(executed.metadata.papermill.parameters))["runs_dir"] == str(runs)


def test_accuracies_carry_95_percent_intervals_in_tables_and_figure_data(rendered):
    from caprese.stats.intervals import wilson_interval

    _, out, _ = rendered
    table1 = pd.read_csv(out / "table1_math_accuracy.csv")
    for _, row in table1.iterrows():  # pooled over the configuration's runs (50 problems each)
        assert row["accuracy_n"] == 50 * row["runs"]
        low, high = wilson_interval(round(row["accuracy"] * row["accuracy_n"]), int(row["accuracy_n"]))
        assert row["accuracy_ci_low"] == pytest.approx(low, abs=0.03) and row["accuracy_ci_low"] <= row["accuracy"]
        assert row["accuracy_ci_high"] == pytest.approx(high, abs=0.03) and row["accuracy_ci_high"] >= row["accuracy"]
    caprese = table1[table1["stage"] == "e2e"].dropna(subset=["recovered"])
    assert not caprese.empty and (caprese["recovered_ci_low"] < caprese["recovered_ci_high"]).all()
    for name in ("fig5_accuracy_vs_density", "ablation_rank", "ablation_samples"):
        data = pd.read_csv(out / "data" / f"{name}.csv")
        assert {"accuracy_ci_low", "accuracy_ci_high", "accuracy_n"} <= set(data.columns), name
        assert (data["accuracy_ci_low"] <= data["accuracy"]).all() and (
            data["accuracy"] <= data["accuracy_ci_high"]
        ).all()

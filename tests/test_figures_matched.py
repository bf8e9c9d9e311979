"""Table 3 (GRIFFIN reselection every ρ tokens), figure 8 from matched runs only, and figure 5 from
the density sweep (GRIFFIN and CATS): drawn from fake run folders shaped like caprese.experiment's."""

import pandas as pd
import pytest
from test_figures import fake_metrics

from caprese.figures import load_results
from caprese.figures.accuracy import fig5_accuracy_vs_density
from caprese.figures.common import Context, MissingData
from caprese.figures.reselection import fig_table3_reselection, table3_reselection
from caprese.figures.spectra import fig8_singular_values
from caprese.io import write_json

RHOS = (0, 64, 16, 4)


def write_runs(runs, sweep, points):
    """runs/<sweep>/<id>/metrics.json per point; `extra` (dotted keys) are set on top of fake_metrics."""
    listed = []
    for params in points:
        extra = params.pop("extra", {})
        run_id = "_".join(f"{k}={v}" for k, v in params.items())
        folder = runs / sweep / run_id
        metrics = fake_metrics(folder, **{k: v for k, v in params.items() if k != "reselect_every"})
        metrics["config"]["reselect_every"] = params.get("reselect_every", 0)
        for dotted, value in extra.items():
            target = metrics
            *parents, leaf = dotted.split(".")
            for part in parents:
                target = target.setdefault(part, {})
            target[leaf] = value
        write_json(folder / "params.json", params)
        write_json(folder / "metrics.json", metrics)
        listed.append({"run_id": run_id, "params": params})
    write_json(runs / sweep / "sweep.json", {"name": sweep, "points": listed})


def reselect_points():
    points = []
    for rho in RHOS:
        for stage, rank in (("none", 0), ("layerwise", 16)):
            correct = 30 + (0 if not rho else 64 // rho) + (20 if stage != "none" else 0)
            points.append({
                "method": "griffin", "sparsity": 0.5, "layers": "all", "stage": stage, "rank": rank,
                "reselect_every": rho, "extra": {
                    "math.correct": correct, "math.count": 100, "math.accuracy": correct / 100,
                    "params_measured.model_active_fraction_with_extra": 0.6 + (0.1 / rho if rho else 0.0),
                    "params_measured.reselection_params_per_token": 1000.0 / rho if rho else 0.0,
                    "measured_sparsity.overall": 0.5,
                },
            })  # fmt: skip
    return points


def context(tmp_path, sweeps):
    runs = tmp_path / "runs"
    for sweep, points in sweeps.items():
        write_runs(runs, sweep, points)
    return Context(load_results(runs), tmp_path / "figures")


def test_table3_has_every_rho_with_wilson_intervals_and_measured_compute(tmp_path):
    ctx = context(tmp_path, {"reselect": reselect_points()})
    made = table3_reselection(ctx)
    table = pd.read_csv(ctx.out_dir / "table3_reselection.csv", dtype={"rho": str})
    assert len(table) == 8 and set(table["rho"]) == {"∞", "64", "16", "4"}
    row = table[(table["rho"] == "4") & (table["stage"] == "layerwise")].iloc[0]
    assert row["accuracy"] == pytest.approx((30 + 16 + 20) / 100)
    assert row["accuracy_ci_low"] < row["accuracy"] < row["accuracy_ci_high"] and row["accuracy_n"] == 100
    assert row["compute_measured"] == pytest.approx(0.6 + 0.1 / 4)
    never = table[(table["rho"] == "∞") & (table["stage"] == "none")].iloc[0]
    assert never["reselection_params_per_token"] == 0.0
    assert (ctx.out_dir / "table3_reselection.md").read_text().startswith("# GRIFFIN reselection")
    assert made.data is not None
    fig = fig_table3_reselection(ctx)
    assert {p.name for p in fig.paths} >= {"fig_table3_reselection.png", "fig_table3_reselection.pdf"}
    data = pd.read_csv(ctx.out_dir / "data" / "fig_table3_reselection.csv")
    assert {"accuracy_ci_low", "accuracy_ci_high", "compute_measured"} <= set(data.columns)


def test_table3_needs_the_reselect_sweep(tmp_path):
    ctx = context(tmp_path, {"rank": [{"method": "griffin", "sparsity": 0.5, "stage": "none", "rank": 0}]})
    with pytest.raises(MissingData, match="ablations/reselect.yaml"):
        table3_reselection(ctx)


def spectra_point(method, sparsity, rank, samples=128):
    return {"method": method, "sparsity": sparsity, "layers": "all", "stage": "layerwise", "rank": rank,
            "samples": samples}  # fmt: skip


def test_fig8_draws_only_a_matched_pair_and_says_so(tmp_path):
    ctx = context(tmp_path, {
        "sparsity": [spectra_point("cats", 0.7, 16), spectra_point("cats", 0.5, 16)],
        "rank": [spectra_point("griffin", 0.5, 32), spectra_point("griffin", 0.5, 16)],
    })  # fmt: skip
    fig8_singular_values(ctx)
    data = pd.read_csv(ctx.out_dir / "data" / "fig8_singular_values.csv")
    assert set(data["method"]) == {"cats", "griffin"}
    assert set(data["rank"]) == {16} and set(data["sparsity"]) == {0.5} and set(data["samples"]) == {128}
    assert data["matched"].all()


def test_fig8_refuses_unmatched_methods(tmp_path):
    ctx = context(tmp_path, {"sparsity": [spectra_point("cats", 0.7, 16)], "rank": [spectra_point("griffin", 0.5, 32)]})
    with pytest.raises(MissingData, match=r"no matched pair .*ablations/spectra.yaml"):
        fig8_singular_values(ctx)


def test_fig8_pairs_only_runs_on_the_same_layers(tmp_path):
    first_half = {**spectra_point("griffin", 0.5, 32), "layers": "first_half"}
    ctx = context(tmp_path, {
        "density": [spectra_point("cats", 0.5, 32), first_half],      # same r, sparsity, samples; other layers
        "spectra": [spectra_point("cats", 0.5, 16), spectra_point("griffin", 0.5, 16)],
    })  # fmt: skip
    fig8_singular_values(ctx)
    data = pd.read_csv(ctx.out_dir / "data" / "fig8_singular_values.csv")
    assert set(data["rank"]) == {16} and set(data["layers"]) == {"all"}  # not the larger r32 pair


def test_fig5_prefers_the_density_sweep_with_both_methods(tmp_path):
    density = [
        {"method": m, "layers": "first_half" if m == "griffin" else "all", "sparsity": s, "stage": st, "rank": r}
        for m in ("griffin", "cats")
        for s in (0.3, 0.5, 0.7, 0.9)
        for st, r in (("none", 0), ("layerwise", 8), ("layerwise", 32))
    ]
    ctx = context(tmp_path, {"density": density, "sparsity": [spectra_point("cats", 0.7, 16)]})
    made = fig5_accuracy_vs_density(ctx)
    frame = made.data
    assert "runs/density" in made.source.replace("\\", "/")
    for method in ("griffin", "cats"):
        part = frame[frame["method"] == method]
        assert part["density"].nunique() == 4 and set(part["rank"]) == {0, 8, 32}
        assert part["accuracy_ci_low"].notna().all() and part["accuracy_ci_high"].notna().all()

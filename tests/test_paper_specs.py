"""The GPU recipes in ablations/paper/: each dry-runs offline (no download, no network), every point
is a valid experiment at the paper's settings, and its model family resolves through caprese's
adapter from the shipped dimension-only config."""

import socket
from pathlib import Path

import pytest

from caprese.arch import ffn_blocks
from caprese.commands import sweep as sweep_command
from caprese.experiment import ExperimentConfig
from caprese.methods import resolve_layers
from caprese.models.reference import meta_model
from caprese.sweep.spec import load_spec

PAPER = Path(__file__).resolve().parent.parent / "ablations" / "paper"
REFERENCE = {  # hub id -> its dimension-only config in caprese/models/reference_configs/
    "meta-llama/Llama-3.2-1B-Instruct": "Llama-3.2-1B",
    "Qwen/Qwen2.5-1.5B-Instruct": "Qwen2.5-1.5B",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": "DeepSeek-R1-Distill-Qwen-1.5B",
    "google/gemma-2-2b-it": "Gemma-2-2B",
}
SPECS = sorted(PAPER.glob("*.yaml"))


def test_there_is_one_spec_per_paper_model():
    assert sorted(load_spec(path).base["model"] for path in SPECS) == sorted(REFERENCE)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access during a dry run")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("full", [False, True], ids=["small", "full"])
@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_paper_spec_dry_runs_offline(path, full, tmp_path, capsys, no_network):
    runs = tmp_path / "runs"
    argv = [str(path), "--runs-dir", str(runs), "--dry-run"] + (["--full"] if full else [])
    assert sweep_command.main(argv) == 0
    out = capsys.readouterr().out
    assert "8 points, 0 done, 8 to run" in out
    assert not runs.exists()


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_paper_spec_points_are_valid_experiments_at_paper_settings(path):
    for full in (False, True):
        points = load_spec(path, full=full).points()
        for point in points:
            cfg = ExperimentConfig.from_params(point.params).to_params()  # validated, with the defaults
            assert (cfg["dtype"], cfg["device"]) == ("bfloat16", "cuda")
            assert (cfg["lr"], cfg["epochs"], cfg["distill_batch_size"], cfg["init"]) == (1e-3, 20, 128, "random")
            assert (cfg["e2e_epochs"], cfg["e2e_batch_size"]) == (3, 16) and 4e-6 <= cfg["e2e_lr"] <= 2e-4
            assert cfg["rank"] in (0, 256) and (cfg["rank"] == 0) == (cfg["stage"] == "none")
            if cfg["method"] == "griffin":
                assert cfg["layers"] == "first_half"
        methods = {(p.params["method"], p.params["stage"], p.params["kind"]) for p in points}
        assert {
            ("dense", "none", "caprese"),
            ("griffin", "e2e", "caprese"),
            ("griffin", "e2e", "lora"),
            ("cats", "layerwise", "caprese"),
        } <= methods
    assert load_spec(path, full=True).base["samples"] == 20000


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_paper_model_family_resolves_offline(path):
    base = load_spec(path).base
    blocks = ffn_blocks(meta_model(REFERENCE[base["model"]]))
    assert all(block.hidden_size >= 256 for block in blocks)  # rank 256 fits every layer
    assert len(resolve_layers("first_half", len(blocks))) == len(blocks) // 2

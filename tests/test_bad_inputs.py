"""Every verb fed bad input: one line on stderr naming the value, a non-zero exit code, no
traceback, nothing written to --out, and for distill no teacher response generated.

The CLI runs in-process (`caprese.cli.main`) on a tiny saved model, so the whole table takes
seconds; `test_a_few_bad_inputs_in_a_real_process` runs the console script for a few of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from caprese import cli
from caprese.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = REPO / "notebooks" / "experiment.ipynb"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Models, adapters, data files and places that cannot be written, shared by every case."""
    from caprese.distill.adapter import CapreseAdapter
    from caprese.distill.teacher import MethodChoice
    from caprese.models.loading import load_model
    from caprese.testing import save_tiny_model

    root = tmp_path_factory.mktemp("world")
    save_tiny_model(root / "tiny")
    other = save_tiny_model(root / "other", seed=1)  # same shapes, other weights
    (root / "empty").mkdir()
    (root / "garbage").mkdir()
    (root / "garbage" / "config.json").write_text("{this is not json")
    (root / "afile").write_text("a file where a folder should be\n")

    model, _ = load_model(str(other), tokenizer=False)
    good = CapreseAdapter.new(model, str(other), MethodChoice("griffin", 0.5, "all"), [0, 1], 2)
    good.save(root / "adapter_other")  # fits the shapes of `tiny`, not its weights
    for name in ("adapter_badjson", "adapter_truncated", "adapter_unknown_key"):
        good.save(root / name)
    (root / "adapter_badjson" / "caprese_adapter.json").write_text('{"kind": "caprese", ')
    weights = root / "adapter_truncated" / "adapter.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    config_path = root / "adapter_unknown_key" / "caprese_adapter.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "rnak": 2}))

    (root / "bad.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n{"question": oops}\n')
    (root / "list.jsonl").write_text('["not", "an", "object"]\n')
    (root / "bad.json").write_text('[{"question": "1+1?", "answer": "#### 2"}')  # truncated
    (root / "runs").mkdir()
    return root


def _spec(root: Path, name: str, **base) -> str:
    path = root / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {"notebook": str(EXPERIMENT), "name": name, "base": {"eval_samples": 2, **base}}, sort_keys=False
        )
    )
    return str(path)


def _model_cases(verb_args):
    """The model-source and device/dtype siblings, for one verb's argument list."""
    cases = []
    for model, needle in (
        ("toy-mth", "did you mean 'toy-math'"),
        ("{root}/empty", "empty"),
        ("{root}/garbage", "garbage"),
        ("nobody/no-such-model", "nobody/no-such-model"),
        ("{root}/afile", "afile"),
        ("./no/such/folder", "no/such/folder"),
    ):
        cases.append((verb_args(model), needle))
    cases.append((verb_args("{tiny}") + ["--device", "cuda:7" if _has_cuda() else "cuda"], "cuda"))
    cases.append((verb_args("{tiny}") + ["--device", "foo"], "'foo'"))
    return cases


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _inspect(m):
    return ["inspect", "--model", m]


def _eval(m):
    return ["eval", "--model", m, "--task", "toy-math", "--samples", "2", "--max-new-tokens", "4", "--out", "{out}"]


def _distill(m):
    return [
        "distill",
        "--model",
        m,
        "--method",
        "griffin",
        "--rank",
        "2",
        "--samples",
        "2",
        "--max-new-tokens",
        "4",
        "--epochs",
        "1",
        "--out",
        "{out}",
    ]


def _diagnose(m):
    return ["diagnose", "--model", m, "--data", "toy-math", "--samples", "2", "--max-new-tokens", "4", "--out", "{out}"]


def _bench(m):
    return ["bench", "--model", m, "--skip-ffn", "--repeats", "1", "--out", "{out}/latency.json"]


CASES = []
for _verb in (_inspect, _eval, _distill, _diagnose, _bench):
    CASES += _model_cases(_verb)
for _verb in (_inspect, _eval, _distill, _diagnose):
    CASES.append((_verb("{tiny}") + ["--dtype", "float8"], "'float8'"))
CASES += [
    # damaged adapters, for eval --adapter and distill --start-from
    *[
        (base + [flag, "{root}/" + name], needle)
        for base, flag in ((_eval("{tiny}"), "--adapter"), (_distill("{tiny}"), "--start-from"))
        for name, needle in (
            ("adapter_badjson", "caprese_adapter.json"),
            ("adapter_truncated", "adapter.safetensors"),
            ("adapter_unknown_key", "'rnak'"),
            ("no_such_adapter", "no_such_adapter"),
            ("adapter_other", "fingerprint"),
        )
    ],
    # data files
    (["eval", "--model", "{tiny}", "--task", "{root}/bad.jsonl", "--out", "{out}"], "bad.jsonl' line 2"),
    (["eval", "--model", "{tiny}", "--task", "{root}/list.jsonl", "--out", "{out}"], "list.jsonl' line 1"),
    (["eval", "--model", "{tiny}", "--task", "{root}/bad.json", "--out", "{out}"], "bad.json"),
    (["eval", "--model", "{tiny}", "--task", "toy-mat", "--out", "{out}"], "did you mean 'toy-math'"),
    (_distill("{tiny}")[:-2] + ["--data", "{root}/bad.jsonl", "--out", "{out}"], "bad.jsonl' line 2"),
    (_distill("{tiny}") + ["--mix-data", "{root}/bad.jsonl", "--mix-samples", "1"], "bad.jsonl' line 2"),
    (["diagnose", "--model", "{tiny}", "--data", "{root}/bad.jsonl", "--out", "{out}"], "bad.jsonl' line 2"),
    (_distill("{tiny}") + ["--method", "teal", "--calibration", "{root}/bad.jsonl"], "bad.jsonl' line 2"),
    # lm-eval: the harness verb checks its model, tasks, numbers and --out before lm-eval runs
    (["lm-eval", "--model", "toy-mth", "--tasks", "caprese_toy_math", "--out", "{out}"], "did you mean 'toy-math'"),
    (["lm-eval", "--model", "{tiny}", "--tasks", "caprese_toy_mth", "--out", "{out}"], "'caprese_toy_mth'"),
    (["lm-eval", "--model", "{tiny}", "--tasks", "caprese_toy_math", "--limit", "0", "--out", "{out}"], "--limit 0"),
    (
        [
            "lm-eval",
            "--model",
            "{tiny}",
            "--tasks",
            "caprese_toy_math",
            "--method",
            "griffin",
            "--sparsity",
            "1.5",
            "--out",
            "{out}",
        ],
        "1.5",
    ),
    (["lm-eval", "--model", "{tiny}", "--tasks", "caprese_toy_math", "--device", "foo", "--out", "{out}"], "'foo'"),
    (["lm-eval", "--model", "{tiny}", "--tasks", "caprese_toy_math", "--out", "{root}/afile/sub"], "afile"),
    # export-peft: a damaged or missing adapter, an unwritable OUT
    (["export-peft", "{root}/adapter_badjson", "{out}"], "caprese_adapter.json"),
    (["export-peft", "{root}/adapter_truncated", "{out}"], "adapter.safetensors"),
    (["export-peft", "{root}/no_such_adapter", "{out}"], "no_such_adapter"),
    (["export-peft", "{root}/adapter_other", "{root}/afile/sub"], "afile"),
    # bench numbers
    (["bench", "--layers", "0", "--out", "{out}/l.json"], "--layers 0"),
    (["bench", "--repeats", "0", "--out", "{out}/l.json"], "--repeats 0"),
    (["bench", "--shapes", "64x128", "--out", "{out}/l.json"], "--rank 256 (the default)"),
    (["bench", "--shapes", "0x128", "--out", "{out}/l.json"], "0x128"),
    (["bench", "--shapes", "big", "--out", "{out}/l.json"], "'big'"),
    (["bench", "--sparsity", "1.0", "--out", "{out}/l.json"], "sparsity 1.0"),
    (["bench", "--dtypes", "float9", "--out", "{out}/l.json"], "'float9'"),
    (["bench", "--device", "foo", "--out", "{out}/l.json"], "'foo'"),
    (["bench", "--model", "{tiny}", "--skip-ffn", "--model-rank", "999", "--out", "{out}/l.json"], "--model-rank 999"),
    (["bench", "--repeats", "x"], "'x'"),
    # distill: what the model decides, before any teacher response
    (_distill("{tiny}")[:-2] + ["--rank", "999", "--out", "{out}"], "rank 999"),
    (_distill("{tiny}") + ["--layers", "99"], "layer 99"),
    (_distill("{tiny}") + ["--method", "dense"], "dense"),
    (_distill("{tiny}") + ["--kind", "lora", "--method", "cats"], "'cats'"),
    (_distill("{tiny}") + ["--stage", "bogus"], "'bogus'"),
    (_distill("{tiny}") + ["--samples", "0"], "--samples 0"),
    (_distill("{tiny}") + ["--sparsity", "1.5"], "1.5"),
    (_distill("{tiny}") + ["--temperature", "-1"], "-1"),
    (_distill("{tiny}") + ["--method", "griffen"], "did you mean 'griffin'"),
    # eval numbers
    (_eval("{tiny}") + ["--samples", "0"], "--samples 0"),
    (_eval("{tiny}") + ["--batch-size", "0"], "batch_size 0"),
    (_eval("{tiny}") + ["--temperature", "-1"], "temperature -1"),
    (_eval("{tiny}") + ["--top-p", "0"], "top_p 0"),
    (_eval("{tiny}") + ["--coverage-prompts", "0"], "--coverage-prompts 0"),
    (_eval("{tiny}") + ["--levels", "1,x"], "1,x"),
    (_eval("{tiny}") + ["--merged"], "--merged"),
    # diagnose numbers
    (_diagnose("{tiny}") + ["--densities", "1.5"], "1.5"),
    (_diagnose("{tiny}") + ["--ranks", "999"], "999"),
    (_diagnose("{tiny}") + ["--ranks", "0"], "0"),
    (_diagnose("{tiny}") + ["--layers", "99"], "99"),
    (_diagnose("{tiny}") + ["--samples", "0"], "samples 0"),
    # an output that cannot be written (a file where a folder must be), on every verb that writes
    (_eval("{tiny}")[:-1] + ["{root}/afile/sub"], "afile"),
    (_distill("{tiny}")[:-1] + ["{root}/afile/sub"], "afile"),
    (_diagnose("{tiny}")[:-1] + ["{root}/afile/sub"], "afile"),
    (["bench", "--shapes", "64x256", "--rank", "8", "--out", "{root}/afile/sub/l.json"], "afile"),
    (["sweep", "{spec_ok}", "--runs-dir", "{root}/afile/sub"], "afile"),
    (["collect", "{root}/runs", "--out", "{root}/afile/sub/r.csv"], "afile"),
    (["figures", "--runs", "{root}/runs", "--out", "{root}/afile/sub"], "afile"),
    (_eval("{tiny}")[:-1] + ["{root}/afile"], "afile"),
    # sweep values, checked before a kernel starts
    (["sweep", "{spec_sparsity}", "--dry-run", "--runs-dir", "{out}"], "sparsity 1.0"),
    (["sweep", "{spec_rank}", "--dry-run", "--runs-dir", "{out}"], "rank -1"),
    (["sweep", "{spec_stage}", "--dry-run", "--runs-dir", "{out}"], "needs rank"),
    (["sweep", "{spec_model}", "--dry-run", "--runs-dir", "{out}"], "did you mean 'toy-math'"),
    (["sweep", "{spec_device}", "--dry-run", "--runs-dir", "{out}"], "'foo'"),
    (["sweep", "{spec_method}", "--dry-run", "--runs-dir", "{out}"], "did you mean 'griffin'"),
    (["sweep", "{spec_ok}", "--workers", "0", "--runs-dir", "{out}"], "--workers 0"),
    (["sweep", "{spec_ok}", "--timeout", "-5", "--runs-dir", "{out}"], "--timeout -5"),
    (["sweep", "{root}/no_such_spec.yaml", "--runs-dir", "{out}"], "no_such_spec.yaml"),
    (["collect", "{root}/no_such_sweep"], "no_such_sweep"),
    (["figures", "--runs", "{root}/no_such_runs", "--out", "{out}"], "no_such_runs"),
]

SPECS = {
    "spec_ok": {},
    "spec_sparsity": {"sparsity": 1.0},
    "spec_rank": {"rank": -1},
    "spec_stage": {"stage": "e2e", "rank": 0},
    "spec_model": {"model": "toy-mth"},
    "spec_device": {"device": "foo"},
    "spec_method": {"method": "griffen"},
}


def _fill(argv, root: Path, out: Path) -> list[str]:
    values = {
        "root": str(root),
        "tiny": str(root / "tiny"),
        "out": str(out),
        **{name: _spec(root, name, **base) for name, base in SPECS.items() if any(name in a for a in argv)},
    }
    return [a.format(**values) for a in argv]


@pytest.fixture(autouse=True)
def quiet_weight_loading():
    """transformers draws a "Loading weights" bar on stderr when a model loads; the cases refused
    after the model loaded (rank > D, layer indices, an adapter of another model) would count it
    as a line. It is transformers' own output, not caprese's: switched off here."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    yield
    logging.enable_progress_bar()


@pytest.fixture
def no_compute(monkeypatch):
    """Record any teacher generation, evaluation, diagnosis, timing or sweep run that starts."""
    import caprese.bench
    import caprese.commands.bench
    import caprese.commands.diagnose
    import caprese.commands.distill
    import caprese.commands.eval
    import caprese.diagnostics
    import caprese.distill.data
    import caprese.evaluate
    import caprese.sweep

    started = []

    def recorder(name):
        def record(*args, **kwargs):
            started.append(name)
            raise AssertionError(f"{name} started")

        return record

    # patched where each is defined and where each command looks it up (it imports them at its top)
    for module in (caprese.distill.data, caprese.commands.distill):
        monkeypatch.setattr(module, "distillation_rows", recorder("teacher generation"))
    for module in (caprese.evaluate, caprese.commands.eval):
        monkeypatch.setattr(module, "evaluate_accuracy", recorder("evaluation"))
    for module in (caprese.diagnostics, caprese.commands.diagnose):
        monkeypatch.setattr(module, "run_diagnostics", recorder("diagnostics"))
    for module in (caprese.bench, caprese.commands.bench):
        monkeypatch.setattr(module, "ffn_decode_latency", recorder("ffn timing"))
        monkeypatch.setattr(module, "generation_latency", recorder("generation timing"))
    monkeypatch.setattr("caprese.sweep.runner.run_point", recorder("sweep point"))
    return started


def _assert_refused(code, err: str, needle: str, out: Path, started: list) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code not in (0, None), f"exit {code}: {err}"
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{err}"
    assert needle in lines[0], lines[0]
    assert not out.exists(), f"{out} was written"
    assert not list(out.parent.glob(f".{out.name}.partial-*")), "a staging folder was left behind"
    assert not started, f"compute started: {started}"


@pytest.mark.parametrize(
    "argv, needle", CASES, ids=[" ".join(a[:1] + [x for x in a[1:] if not x.startswith("{")])[:80] for a, _ in CASES]
)
def test_bad_input_is_refused_in_one_line(argv, needle, world, tmp_path, capsys, no_compute):
    out = tmp_path / "out"
    code = _main(_fill(argv, world, out))
    captured = capsys.readouterr()
    _assert_refused(code, captured.err, needle.format(root=world), out, no_compute)


def _main(argv):
    try:
        return cli.main(argv)
    except SystemExit as exit:  # argparse's usage errors leave through SystemExit
        return exit.code


def test_table_covers_every_verb_that_takes_input():
    verbs = {argv[0] for argv, _ in CASES}
    assert verbs == set(cli.VERBS) - {"models"}  # `caprese models` takes no input
    assert len(CASES) >= 100


@pytest.mark.parametrize("verb", ["eval", "distill", "diagnose", "bench", "sweep", "collect", "figures"])
def test_a_full_disk_is_refused_before_compute(verb, world, tmp_path, capsys, monkeypatch, no_compute):
    """Simulated: the write probe's fsync fails with ENOSPC, as on a full disk (and EROFS on a
    read-only mount takes the same path; root ignores chmod, so that is not what this tests)."""
    import errno

    import caprese.io

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    argv = {
        "eval": _eval("{tiny}"),
        "distill": _distill("{tiny}"),
        "diagnose": _diagnose("{tiny}"),
        "bench": ["bench", "--shapes", "64x256", "--rank", "8", "--out", "{out}/l.json"],
        "sweep": ["sweep", "{spec_ok}", "--runs-dir", "{out}"],
        "collect": ["collect", "{root}/runs", "--out", "{out}/r.csv"],
        "figures": ["figures", "--runs", "{root}/runs", "--out", "{out}"],
    }[verb]
    out = tmp_path / "out"
    filled = _fill(argv, world, out)
    if verb == "collect":
        _fake_run(world / "runs" / "sweep1" / "a", {"x": 1})
    monkeypatch.setattr(caprese.io.os, "fsync", full)
    code = cli.main(filled)
    _assert_refused(code, capsys.readouterr().err, "No space left on device", out, no_compute)


def _fake_run(folder: Path, metrics) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.json").write_text(json.dumps({"x": 1}))
    (folder / "metrics.json").write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
    return folder


def test_ctrl_c_in_eval_and_distill_is_one_line_and_exit_130(world, tmp_path, capsys, monkeypatch):
    import caprese.distill.data
    import caprese.evaluate

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    import caprese.commands.distill
    import caprese.commands.eval

    monkeypatch.setattr(caprese.commands.eval, "evaluate_accuracy", interrupt)
    monkeypatch.setattr(caprese.commands.distill, "distillation_rows", interrupt)
    for argv in (_eval("{tiny}"), _distill("{tiny}")):
        out = tmp_path / argv[0]
        code = cli.main(_fill(argv, world, out))
        err = capsys.readouterr().err
        assert code == EXIT_INTERRUPTED and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1 and "interrupted" in err
        assert not out.exists() and not list(tmp_path.glob(".*partial-*"))


def test_debug_shows_the_traceback(world, tmp_path, monkeypatch):
    from caprese.errors import CapreseError

    with pytest.raises(CapreseError, match="toy-math"):
        cli.main(["--debug", "inspect", "--model", "toy-mth"])
    monkeypatch.setenv("CAPRESE_DEBUG", "1")
    with pytest.raises(CapreseError, match="toy-math"):
        cli.main(["inspect", "--model", "toy-mth"])


def test_a_few_bad_inputs_in_a_real_process(world, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    for argv, needle in (
        (["inspect", "--model", "toy-mth"], "did you mean 'toy-math'"),
        (["inspect", "--model", str(world / "tiny"), "--device", "foo"], "'foo'"),
        (
            ["eval", "--model", str(world / "tiny"), "--task", str(world / "bad.jsonl"), "--out", str(tmp_path / "o")],
            "line 2",
        ),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "caprese.cli", *argv], capture_output=True, text=True, env=env, timeout=120
        )
        assert proc.returncode == EXIT_BAD_INPUT, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "o").exists()

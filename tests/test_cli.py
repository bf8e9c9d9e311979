import subprocess
import sys

from caprese.cli import main
from caprese.testing import save_tiny_model


def test_help_lists_verbs():
    out = subprocess.run([sys.executable, "-m", "caprese.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for verb in ("models", "inspect"):
        assert verb in out.stdout


def test_models_lists_architectures_and_builtins(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "LlamaForCausalLM" in out and "Phi3ForCausalLM" in out and "Built-in models" in out


def test_inspect_a_folder(tmp_path, capsys):
    folder = save_tiny_model(tmp_path / "m", "GPTNeoXForCausalLM")
    assert main(["inspect", "--model", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "GPTNeoXForCausalLM" in out and "D=32" in out and "D_FF=64" in out and "non-gated" in out


def test_errors_are_one_line_with_exit_code_2(capsys):
    assert main(["inspect", "--model", "./nope/nope", "--dtype", "float32"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope" in err

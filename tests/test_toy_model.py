"""The committed toy-math checkpoint, its tokenizer, its model card and its training script."""

import re
import sys

import pytest

from caprese.data import toy_language, toy_math
from caprese.data.prompts import INSTRUCTION, plain_prompt, plain_response
from caprese.io import read_json
from caprese.models.builtins_registered import TOY_MATH_FOLDER, locate_toy_math


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOY_MATH_FOLDER)


def test_checkpoint_is_committed_small_and_a_swiglu_llama():
    from transformers import AutoConfig

    folder, extra = locate_toy_math()
    assert folder == TOY_MATH_FOLDER and extra == {}
    weights = folder / "model.safetensors"
    assert weights.stat().st_size <= 25 * 1024 * 1024
    config = AutoConfig.from_pretrained(folder)
    assert config.architectures == ["LlamaForCausalLM"] and config.hidden_act == "silu"
    assert config.num_hidden_layers >= 6
    assert config.intermediate_size == 4 * config.hidden_size
    assert config.hidden_size // config.num_attention_heads in (32, 64)
    assert (folder / "README.md").is_file()


def test_loading_never_trains():
    import subprocess

    code = (
        "import sys, caprese.models.loading as l; l.load_model('toy-math'); "
        "print('caprese.models.train_toy_math' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip().endswith("False")


def test_every_digit_is_its_own_token(tokenizer):
    for number in (0, 7, 10, 99, 305, 999):
        pieces = tokenizer.convert_ids_to_tokens(tokenizer(f"x {number}", add_special_tokens=False)["input_ids"])
        digits = [p.strip() for p in pieces[1:]]
        assert digits == list(str(number)), pieces


def test_round_trip_on_task_text(tokenizer):
    texts = []
    for row in toy_math.generate_rows(300, seed=5) + toy_language.generate_rows(200, seed=5):
        texts.append(plain_prompt(row["question"]) + plain_response(row["answer"]))
    texts += [row["text"] for row in toy_language.generate_texts(50, seed=5)]
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.unk_token_id not in ids, text
        assert ids[0] == tokenizer.bos_token_id
        assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_prompt_carries_the_instruction(tokenizer):
    from caprese.data.prompts import build_prompt

    prompt = build_prompt(tokenizer, "Ann has 3 eggs. How many eggs does Ann have now?")
    assert INSTRUCTION in prompt and prompt.endswith("Answer:")  # toy-math has no chat template


def card_table(readme: str) -> dict[str, float]:
    return {level: float(acc) for level, acc in re.findall(r"^\| (\d) \| ([\d.]+)% ", readme, flags=re.M)}


def test_model_card_states_command_data_and_measured_accuracy():
    readme = (TOY_MATH_FOLDER / "README.md").read_text()
    numbers = read_json(TOY_MATH_FOLDER / "card_metrics.json")
    assert "python -m caprese.models.train_toy_math --out caprese/models/toy_math" in readme
    assert "caprese eval --model toy-math --task toy-math --samples 2500" in readme
    assert "caprese.data.toy_math" in readme and "caprese.data.toy_language" in readme
    table = card_table(readme)
    assert set(table) == {"1", "2", "3", "4", "5"}
    for level, accuracy in table.items():  # the table is the measurement, 500 problems per level
        assert accuracy == pytest.approx(100 * numbers["math"]["per_level"][level]["accuracy"], abs=0.05)
        assert numbers["math"]["per_level"][level]["count"] == 500
    assert numbers["language"]["count"] == 500
    # the math targets, measured; the card states each verdict from the same numbers
    assert table["1"] >= 95 and table["3"] >= 80 and numbers["language"]["accuracy"] >= 0.95
    from caprese.models.train_toy_math import targets_line

    assert targets_line(numbers) in readme and "NOT met" not in readme  # the card states what was measured


def test_quick_accuracy_on_fresh_problems():
    """A small independent check of the card: 40 unseen level-1 and level-3 problems, 40 story questions."""
    from caprese.data.tasks import load_task_rows
    from caprese.evaluate import GenerationConfig, evaluate_accuracy
    from caprese.models.loading import load_model

    model, tokenizer = load_model("toy-math")
    rows = load_task_rows("toy-math", 40, seed=12345, levels=[1, 3])
    metrics = evaluate_accuracy(model, tokenizer, rows, GenerationConfig(max_new_tokens=80), progress=False).metrics
    assert metrics["per_level"]["1"]["accuracy"] >= 0.85
    assert metrics["per_level"]["3"]["accuracy"] >= 0.6
    language = load_task_rows("toy-language", 40, seed=12345)
    assert (
        evaluate_accuracy(model, tokenizer, language, GenerationConfig(max_new_tokens=24), progress=False).metrics[
            "accuracy"
        ]
        >= 0.9
    )


def test_training_script_runs_and_is_seeded(tmp_path):
    """A 3-step miniature run: same seed, same weights; the folder loads as a model."""
    from caprese.models import train_toy_math
    from caprese.models.loading import load_model

    def tiny_run(out, seed):
        train_toy_math.main(
            [
                "--out",
                str(out),
                "--steps",
                "3",
                "--batch-size",
                "4",
                "--d-model",
                "32",
                "--layers",
                "1",
                "--head-dim",
                "16",
                "--seed",
                str(seed),
                "--no-card",
                "--log-every",
                "1",
            ]
        )
        return (out / "model.safetensors").read_bytes()

    first, again, other = tiny_run(tmp_path / "a", 0), tiny_run(tmp_path / "b", 0), tiny_run(tmp_path / "c", 1)
    assert first == again and first != other
    record = read_json(tmp_path / "a" / "training_record.json")
    assert record["command"].startswith("python -m caprese.models.train_toy_math --out")
    model, tokenizer = load_model(str(tmp_path / "a"))
    assert model.config.intermediate_size == 128 and tokenizer.pad_token == "<pad>"

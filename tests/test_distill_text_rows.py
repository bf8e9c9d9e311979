"""Plain text as distillation data: split where perplexity splits it, kept in place in a mix."""

import pytest

from caprese.data import toy_language
from caprese.distill.batches import tokenize_pairs
from caprese.distill.data import distillation_rows, mixed_question_rows, text_row
from caprese.errors import CapreseError
from caprese.evaluate.language import PREFIX_TOKENS
from caprese.models.loading import load_tokenizer, resolve_source


@pytest.fixture(scope="module")
def tokenizer():
    source, extra = resolve_source("toy-math")
    return load_tokenizer(source, **extra)


def test_text_row_prompt_is_the_dense_prefix_that_perplexity_uses(tokenizer):
    for row in toy_language.generate_texts(20, split="distill"):
        pair = tokenize_pairs(tokenizer, [text_row(tokenizer, row)])[0]
        full = tokenizer(row["text"])["input_ids"]
        assert pair.prompt == full[:PREFIX_TOKENS]
        assert pair.prompt + pair.response == full + [tokenizer.eos_token_id]


def test_distillation_texts_are_not_the_evaluation_texts():
    train = {r["text"] for r in mixed_question_rows("toy-math", 1, "toy-language-text", 300)[1:]}
    assert len(train) == 300
    assert not train & {r["text"] for r in toy_language.generate_texts(500)}


def test_texts_keep_their_place_and_only_questions_are_answered(tokenizer):
    questions = mixed_question_rows("toy-math", 2, "toy-language-text", 2)
    questions = [questions[2], questions[0], questions[3], questions[1]]
    rows = distillation_rows(None, tokenizer, questions, responses="dataset", progress=False)
    assert [r["id"] for r in rows] == [q["id"] for q in questions]
    assert rows[0]["prompt"] + rows[0]["response"] == questions[0]["text"]
    assert rows[1]["question"] == questions[1]["question"] and "step by step" in rows[1]["prompt"]
    # texts alone need no model: nothing is generated
    assert distillation_rows(None, tokenizer, [questions[0]], responses="model", progress=False) == [rows[0]]


def test_too_short_text_is_a_one_line_error(tokenizer):
    with pytest.raises(CapreseError, match=r"'short' has \d+ tokens, needs more than prefix_tokens=16"):
        text_row(tokenizer, {"id": "short", "text": "Ann lives in Lima."})


def test_a_txt_file_mixes_in_one_text_per_line(tmp_path, tokenizer):
    stories = [row["text"] for row in toy_language.generate_texts(3, split="distill", seed=5)]
    path = tmp_path / "general.txt"
    path.write_text(stories[0] + "\n\n" + stories[1] + "\n" + stories[2] + "\n")
    questions = mixed_question_rows("toy-math", 1, str(path), 3)
    assert [q["id"] for q in questions[1:]] == ["general-0", "general-2", "general-3"]
    rows = distillation_rows(None, tokenizer, questions[1:], responses="dataset", progress=False)
    assert [r["prompt"] + r["response"] for r in rows] == stories
    with pytest.raises(CapreseError, match=r"'.*general.txt' has 3 rows, fewer than samples=4"):
        mixed_question_rows("toy-math", 1, str(path), 4)

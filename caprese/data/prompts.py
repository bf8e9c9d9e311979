"""How a question becomes a prompt. Every prompt carries the paper's instruction."""

from __future__ import annotations

INSTRUCTION = "Please reason step by step."
# chat models are also told where to put the answer, so scoring can find it reliably
CHAT_ANSWER_HINT = "Put your final answer after ####."


def plain_prompt(question: str) -> str:
    """The raw-text format toy-math is trained on; the response follows after one space."""
    return f"Question: {question}\n{INSTRUCTION}\nAnswer:"


def plain_response(answer: str) -> str:
    """What a model trained on `plain_prompt` is taught to continue with."""
    return f" {answer}"


def chat_user_message(question: str, answer_hint: str = CHAT_ANSWER_HINT) -> str:
    return f"{question}\n{INSTRUCTION} {answer_hint}"


def build_prompt(tokenizer, question: str, *, answer_hint: str = CHAT_ANSWER_HINT, few_shot=None) -> str:
    """Chat models get their chat template (told where the answer goes: `answer_hint`); raw models
    (like toy-math) get the plain format.

    `few_shot` (question, answer) pairs come first, as earlier turns answered in the format wanted
    (a chat's earlier user/assistant messages; plain Question/Answer blocks otherwise). A few-shot
    prompt carries no instruction: the solved examples show the format instead.
    """
    if few_shot:
        return _few_shot_prompt(tokenizer, question, few_shot)
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": chat_user_message(question, answer_hint)}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return plain_prompt(question)


def _few_shot_prompt(tokenizer, question: str, few_shot) -> str:
    if getattr(tokenizer, "chat_template", None):
        messages = []
        for shot_question, shot_answer in few_shot:
            messages += [{"role": "user", "content": shot_question}, {"role": "assistant", "content": shot_answer}]
        messages.append({"role": "user", "content": question})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    shots = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in few_shot)
    return f"{shots}Question: {question}\nAnswer:"

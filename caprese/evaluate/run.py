"""Every evaluation of one model configuration, as one dict with stable keys (documented here;
`caprese eval` and `caprese.experiment` write them into metrics.json).

`session` is what `apply_method` or `CapreseAdapter.apply` yields (its wrappers are already
installed on `model`). Keys:

    math        accuracy, mean_response_tokens, count, correct, unfinished, per_level{...}
    language    short_answer_accuracy, perplexity, dense_perplexity, kl_dense_to_method, scored_tokens
    coverage    n, prompts, temperature, pass_at_k{k: value}, relative_compute{k: N·measured active
                fraction}, relative_compute_requested{k: N·requested active fraction},
                active_fraction_measured, active_fraction_requested (measured on the sampled responses)
    params      ffn_params_active, model_params_active, model_active_fraction, extra_parameters, ...
                at the requested sparsity (and the amortised reselection cost)
    params_measured     the same from the sparsity and reselections measured on the greedy responses
    measured_sparsity   requested, overall and per layer, on generated tokens (post-EOS pads excluded)
    samples     per-sample generations (written to samples.jsonl, not metrics.json)
"""

from __future__ import annotations

from typing import Any

from ..config import EvalConfig, GenerationConfig
from ..data.tasks import load_task_rows, task_scoring
from ..data.toy_language import generate_texts
from ..errors import CapreseError
from .accuracy import evaluate_accuracy
from .language import language_scores
from .passk import coverage_curve, relative_compute


def evaluate_model(
    model,
    tokenizer,
    session,
    evaluation: EvalConfig,
    generation: GenerationConfig,
    *,
    extra_parameters: int = 0,
    progress: bool = True,
    coverage_rows: list[dict] | None = None,
    scoring: str | None = None,
) -> dict[str, Any]:
    """Every metric of one configuration: greedy task accuracy (`evaluation.samples` problems; 0
    skips it, the caller did it), language and pass@k coverage. Accuracy and language decode
    greedily with `generation`'s lengths and batch size; coverage samples at its temperature,
    top_p and seed. `scoring` defaults to the task's (caprese.data.tasks.task_scoring);
    `coverage_rows` are the prompts for coverage when `evaluation.samples` is 0."""
    if evaluation.coverage_samples and not generation.sampling:
        raise CapreseError(f"coverage sampling needs temperature > 0, got {generation.temperature!r}")
    greedy = generation.greedy()
    task = evaluation.task
    out: dict[str, Any] = {"task": task}
    scoring = scoring or task_scoring(task)
    rows = coverage_rows or []
    if evaluation.samples:
        rows = load_task_rows(task, evaluation.samples, seed=evaluation.seed, levels=evaluation.level_numbers())
        if session is not None:
            session.reset_measurements()
        math = evaluate_accuracy(model, tokenizer, rows, greedy, progress=progress, desc=f"{task}", scoring=scoring)
        out.update(math=math.metrics, samples=math.samples)
    if session is not None:
        out["measured_sparsity"] = {"requested": session.sparsity, **session.measured_sparsity()}
        out["params_measured"] = _with_extra(session.measured_active_parameters(), extra_parameters)
    out["params"] = _with_extra(session.active_parameters() if session is not None else {}, extra_parameters)
    if evaluation.language_samples:
        out["language"] = _language(model, tokenizer, session, evaluation, greedy, progress)
    if evaluation.coverage_samples:
        if not rows:
            raise CapreseError("coverage needs prompts: give eval_samples > 0 or coverage_rows")
        prompts = rows[: evaluation.coverage_prompts]
        out["coverage"] = _coverage(
            model,
            tokenizer,
            prompts,
            evaluation.coverage_samples,
            generation,
            out["params"],
            progress,
            scoring,
            session,
            extra_parameters,
        )
    return out


def _with_extra(params: dict, extra_parameters: int) -> dict:
    """An active-parameter summary with the adapter's `extra_parameters` added to the model's."""
    params = {**params, "extra_parameters": extra_parameters}
    if "model_params_active" in params:
        params["model_params_active_with_extra"] = params["model_params_active"] + extra_parameters
        params["model_active_fraction_with_extra"] = params["model_params_active_with_extra"] / params["model_params"]
    return params


def _language(model, tokenizer, session, evaluation: EvalConfig, greedy: GenerationConfig, progress: bool) -> dict:
    """Toy-language short answers (greedy) and teacher-forced perplexity / KL on held-out texts."""
    n, seed = evaluation.language_samples, evaluation.seed
    language = evaluate_accuracy(
        model, tokenizer, load_task_rows("toy-language", n, seed=seed), greedy, progress=progress, desc="toy-language"
    )
    texts = [row["text"] for row in generate_texts(n, split="test", seed=seed)]
    scores = language_scores(model, tokenizer, texts, session, batch_size=greedy.batch_size)
    return {
        "short_answer_accuracy": language.metrics["accuracy"],
        "short_answer_correct": language.metrics["correct"],
        "short_answer_count": language.metrics["count"],
        **scores.as_dict(),
    }


def _fraction(params: dict) -> float:
    return params.get("model_active_fraction_with_extra", params.get("model_active_fraction", 1.0))


def _coverage(
    model,
    tokenizer,
    rows,
    n,
    settings: GenerationConfig,
    params,
    progress,
    scoring="gsm",
    session=None,
    extra_parameters=0,
):
    """pass@k for k = 1..n from n sampled responses per prompt (figure 3); compute units from the
    sparsity measured on these responses (and, for comparison, the requested one)."""
    repeated = [row for row in rows for _ in range(n)]
    if session is not None:
        session.reset_measurements()
    result = evaluate_accuracy(
        model, tokenizer, repeated, settings, progress=progress, desc="coverage", scoring=scoring
    )
    correct = [[bool(s["correct"]) for s in result.samples[i * n : (i + 1) * n]] for i in range(len(rows))]
    curve = coverage_curve(correct)
    requested = _fraction(params)
    measured = (
        requested if session is None else _fraction(_with_extra(session.measured_active_parameters(), extra_parameters))
    )
    return {
        "n": n,
        "prompts": len(rows),
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "correct_per_prompt": [sum(outcomes) for outcomes in correct],  # for intervals over prompts
        "pass_at_k": {str(k): v for k, v in curve.items()},
        "active_fraction_measured": measured,
        "active_fraction_requested": requested,
        "relative_compute": {str(k): relative_compute(k, measured) for k in curve},
        "relative_compute_requested": {str(k): relative_compute(k, requested) for k in curve},
        "mean_response_tokens": result.metrics["mean_response_tokens"],
    }

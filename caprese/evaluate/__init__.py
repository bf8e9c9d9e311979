"""Evaluate a model object in memory: batched generation, accuracy, perplexity."""

from .accuracy import EvalResult, evaluate_accuracy, summarise
from .generation import Generation, GenerationConfig, GenerationSettings, generate
from .perplexity import PerplexityResult, perplexity

__all__ = [
    "EvalResult",
    "Generation",
    "GenerationConfig",
    "GenerationSettings",
    "evaluate_accuracy",
    "generate",
    "perplexity",
    "PerplexityResult",
    "summarise",
]

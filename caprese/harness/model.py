"""`CapreseLM`: lm-evaluation-harness's `HFLM`, run inside a caprese method or adapter session.

Registered with lm-eval as model `caprese`:

    simple_evaluate(model="caprese",
                    model_args="pretrained=toy-math,method=griffin,sparsity=0.5,layers=first_half",
                    tasks=["caprese_toy_math"], task_manager=caprese.harness.task_manager())
    simple_evaluate(model=CapreseLM(pretrained=model, tokenizer=tokenizer, adapter="runs/x/adapter"), ...)

Semantics are caprese's: prompt tokens run the full FFN, generated tokens the method.

- generate_until: the context is the prompt (one dense prefill), every generated token runs the
  method, exactly as in `caprese eval` (same stop ids: the generation config's and the tokenizer's
  end-of-sequence tokens).
- loglikelihood / loglikelihood_rolling: the continuation is scored as if it had been generated —
  one teacher-forced forward with the context as the prompt (`session.teacher_forced`), which equals
  prefilling the context and decoding the continuation token by token. The first continuation
  token is predicted from the last context position, which is a prompt position, so a one-token
  continuation scores the same as dense; longer continuations see the method from their second
  token on.

The method (or adapter) is installed for the duration of each request batch and removed after it,
so a model passed in as an object is left as it was between calls.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import inspect
from collections import defaultdict
from typing import Any

import torch

from ..distill.adapter import CapreseAdapter
from ..distill.teacher import MethodChoice
from ..errors import CapreseError
from ..evaluate.generation import stop_token_ids
from ..methods.cli_options import add_method_arguments, method_from_args
from ..models.loading import load_model, load_tokenizer

try:
    from lm_eval.api.registry import register_model
    from lm_eval.models.huggingface import HFLM
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise CapreseError(
        f"the lm-evaluation-harness integration needs lm-eval: pip install 'caprese[eval]' ({err})"
    ) from None


def _method_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="caprese model_args", add_help=False, exit_on_error=False)
    add_method_arguments(parser)
    return parser


def method_option_names() -> set[str]:
    """model_args keys that describe the efficient method (the `caprese eval` method flags)."""
    return {action.dest for action in _method_parser()._actions if action.option_strings}


def method_spec(options: dict[str, Any]):
    """model_args method keys -> a validated MethodSpec, through the same flags `caprese eval` takes."""
    parser = _method_parser()
    actions = {action.dest: action for action in parser._actions if action.option_strings}
    argv: list[str] = []
    for key, value in options.items():
        if value is None:
            continue
        action = actions[key]
        flag = action.option_strings[0]
        if isinstance(action, argparse._StoreTrueAction):
            if _truthy(key, value):
                argv.append(flag)
            continue
        if key == "layers" and isinstance(value, str):
            value = value.replace(";", ",").replace(":", ",")  # model_args are comma-separated already
        if key == "layers" and isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        argv += [flag, str(value)]
    try:
        args = parser.parse_args(argv)
    except (argparse.ArgumentError, SystemExit) as err:
        raise CapreseError(f"caprese model_args {options!r}: {err}") from None
    return method_from_args(args)


def _truthy(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no", ""):
        return False
    raise CapreseError(f"model_args {key}={value!r} is not a boolean (allowed: true, false)")


OWN_ARGUMENTS = ("pretrained", "tokenizer", "adapter", "merged", "dtype", "device")


def _check_hflm_arguments(kwargs: dict[str, Any], method_keys: set[str]) -> None:
    """HFLM ignores unknown keyword arguments when given a model object: refuse them instead."""
    allowed = {
        name
        for name, p in inspect.signature(HFLM.__init__).parameters.items()
        if p.kind is p.POSITIONAL_OR_KEYWORD and name != "self"
    }
    for key in kwargs:
        if key not in allowed:
            known = sorted(allowed | method_keys | set(OWN_ARGUMENTS))
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise CapreseError(
                f"unknown caprese model argument {key!r}{hint} (caprese's: "
                f"{', '.join(sorted(set(OWN_ARGUMENTS) | method_keys))}; or any of HFLM's)"
            )


@register_model("caprese")
class CapreseLM(HFLM):
    """HFLM whose requests run under a caprese efficient method or a trained Caprese/LoRA adapter.

    pretrained: a built-in name (toy-math), model folder or hub id (loaded by `caprese.load_model`),
    or a model object (then pass `tokenizer` too). method/sparsity/layers and the method options
    (reselect_every, prune, cats_threshold, teal_allocation, calibration, calibration_samples) are
    `caprese eval`'s flags; `adapter=DIR` (with `merged=true` for eqs 9-10) brings its own method.
    Everything else goes to HFLM (batch_size, max_length, ...).
    """

    def __init__(
        self,
        pretrained: Any,
        tokenizer: Any = None,
        *,
        adapter: str | None = None,
        merged: Any = False,
        dtype: str = "float32",
        device: str = "cpu",
        **kwargs: Any,
    ) -> None:
        method_keys = method_option_names()
        options = {key: kwargs.pop(key) for key in list(kwargs) if key in method_keys}
        _check_hflm_arguments(kwargs, method_keys)
        for key in ("peft", "delta", "parallelize", "tp_plan", "autogptq", "gptqmodel", "gguf_file"):
            if kwargs.get(key):
                raise CapreseError(
                    f"model_args {key}={kwargs[key]!r} is not supported by the caprese model "
                    f"(export a Caprese adapter with `caprese export-peft` to use it with model=hf)"
                )
        merged = _truthy("merged", merged)
        self.spec = method_spec(options)
        self.model_name = pretrained if isinstance(pretrained, str) else type(pretrained).__name__
        if isinstance(pretrained, str):
            model, loaded_tokenizer = load_model(pretrained, dtype=dtype, device=device)
            tokenizer = tokenizer or loaded_tokenizer
        else:
            model = pretrained
            if tokenizer is None:
                raise CapreseError("the caprese model given a model object needs tokenizer=... too")
        if isinstance(tokenizer, str):
            tokenizer = load_tokenizer(tokenizer)
        self.adapter = None
        self.adapter_path = adapter
        self.merged = merged
        if adapter:
            if self.spec.name != "dense":
                raise CapreseError(
                    f"method={self.spec.name!r} conflicts with adapter=..., which carries its own method"
                )
            self.adapter = CapreseAdapter.load(adapter, model)
        elif merged:
            raise CapreseError("merged=true needs adapter=DIR")
        self._choice = None
        self.last_session: dict[str, Any] | None = None
        super().__init__(pretrained=model, tokenizer=tokenizer, backend="causal", **kwargs)
        self.tokenizer.padding_side = "left"

    # -- the method scope ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def method_session(self):
        """The method (or adapter) installed on the model for one batch of requests."""
        if self.adapter is not None:
            context = self.adapter.apply(self.model, self.tokenizer, merged=self.merged)  # as `caprese eval --adapter`
        else:
            if self._choice is None:  # calibration statistics, when needed, are gathered once and reused
                self._choice = MethodChoice.from_spec(self.spec)
            context = self._choice.apply(self.model, self.tokenizer)
        with context as session:
            session.reset_measurements()
            self._session = session
            try:
                yield session
            finally:
                self._session = None
            self.last_session = {"method": session.describe(), "measured_sparsity": session.measured_sparsity()}

    def describe(self) -> dict[str, Any]:
        """What this model evaluates, JSON-able (for metrics.json)."""
        return {
            "model": self.model_name,
            "method": self.spec.describe() if self.adapter is None else self.adapter.choice.describe(),
            "adapter": None
            if self.adapter is None
            else {
                "path": str(self.adapter_path),
                "kind": self.adapter.kind,
                "rank": self.adapter.config.rank,
                "stage": self.adapter.config.stage,
                "merged": self.merged,
            },
            "loglikelihood": "continuation scored as generated tokens (teacher-forced, context = prompt)",
        }

    def generate_until(self, requests, disable_tqdm: bool = False):
        with self.method_session():
            return super().generate_until(requests, disable_tqdm=disable_tqdm)

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        with self.method_session():
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        with self.method_session():
            return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)

    # -- generation: caprese's stop tokens ----------------------------------------------------------
    def _model_generate(self, context, max_length: int, stop: list[str], **generation_kwargs):
        generation_kwargs.setdefault("eos_token_id", stop_token_ids(self.model, self.tokenizer))
        if not generation_kwargs.get("do_sample") and generation_kwargs.get("temperature", 0.0) == 0.0:
            generation_kwargs.update(top_p=None, top_k=None)
        return super()._model_generate(context, max_length, stop, **generation_kwargs)

    # -- loglikelihood: the continuation as generated tokens ----------------------------------------
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        """Remember each request's model input and how much of it is context, then let HFLM batch."""
        prompts: dict[int, dict[tuple, int]] = defaultdict(dict)
        for _, context_enc, continuation_enc in requests:
            inp = tuple((context_enc + continuation_enc)[-(self.max_length + 1) :][:-1])
            prompt_length = max(0, len(inp) - (len(continuation_enc) - 1))
            known = prompts[len(inp)].setdefault(inp, prompt_length)
            if known != prompt_length:
                raise CapreseError(
                    "two loglikelihood requests share their input tokens but split context and "
                    "continuation differently; the caprese model cannot tell their prompts apart"
                )
        self._prompt_index = prompts
        try:
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        finally:
            self._prompt_index = None

    def _prompt_lengths(self, inps: torch.Tensor) -> list[int] | None:
        index = getattr(self, "_prompt_index", None)
        if not index:
            return None
        lengths = sorted(index, reverse=True)
        out = []
        for row in inps.tolist():
            for n in lengths:
                if n <= len(row) and not any(row[n:]) and tuple(row[:n]) in index[n]:
                    out.append(index[n][tuple(row[:n])])
                    break
            else:
                raise CapreseError(
                    "a loglikelihood batch row matches no request (caprese cannot find its prompt length)"
                )
        return out

    def _model_call(self, inps: torch.Tensor, attn_mask=None, labels=None) -> torch.Tensor:
        lengths = self._prompt_lengths(inps)
        session = None if lengths is None else getattr(self, "_session", None)
        if session is None:
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)
        with session.teacher_forced(lengths):
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)

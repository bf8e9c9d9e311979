"""Layer-wise diagnostics: reconstruction error per layer (figure 2), the diagnostics run, figures.

    from caprese.diagnostics import DiagnoseConfig, load_prompts, run_diagnostics
    result = run_diagnostics(model, tokenizer, load_prompts("toy-math", tokenizer, 16), DiagnoseConfig())
    result.write("runs/diagnostics")      # stats.json/csv, errors.json/csv, figures (PNG + PDF)

Any FFN approximation plugs into the same measurement: `ResidualStudy.observe(layer, x, FF(x),
{label: FF̂(x)})`, or `teacher_callback(study, label)` for `caprese.methods.apply_method`.
"""

from .error import ErrorMeter
from .pipeline import (
    DiagnoseConfig,
    DiagnosticsResult,
    GeneratedSample,
    generate_continuations,
    load_prompts,
    run_diagnostics,
)
from .reconstruction import OracleTopKProbe, ResidualStudy, default_ranks, oracle_labels, split_of, teacher_callback

__all__ = [
    "DiagnoseConfig",
    "DiagnosticsResult",
    "ErrorMeter",
    "GeneratedSample",
    "OracleTopKProbe",
    "ResidualStudy",
    "default_ranks",
    "generate_continuations",
    "load_prompts",
    "oracle_labels",
    "run_diagnostics",
    "split_of",
    "teacher_callback",
]

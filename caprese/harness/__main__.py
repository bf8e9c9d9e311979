"""lm-eval's own command line with the `caprese` model registered and caprese's tasks included:

    python -m caprese.harness --model caprese \\
        --model_args pretrained=toy-math,method=griffin,sparsity=0.5,layers=first_half \\
        --tasks caprese_toy_math --limit 50 --output_path runs/harness

takes every `lm_eval run` option (layer lists in model_args use ';', e.g. layers=0;1;2).
"""

from __future__ import annotations

import sys

from . import TASKS_DIR
from . import model as _model  # noqa: F401  (registers the lm-eval model "caprese")


def main(argv: list[str] | None = None) -> None:
    from lm_eval.__main__ import cli_evaluate  # lm-eval is an optional extra

    args = list(sys.argv[1:] if argv is None else argv)
    if "--include_path" not in args:
        args += ["--include_path", str(TASKS_DIR)]
    sys.argv = ["lm_eval", *args]
    cli_evaluate()


if __name__ == "__main__":
    main()

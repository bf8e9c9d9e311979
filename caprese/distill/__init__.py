"""Caprese: the low-rank path, its layer-wise (eq 7) and end-to-end (eq 8) distillation,
merged inference (eqs 9-10), the LoRA baseline (eq 11), and adapters on disk."""

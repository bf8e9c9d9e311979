"""Task data: toy generators, GSM8K-format loaders, reasoning-gym adapter, answer scoring.

Import submodules directly (`caprese.data.tasks`, `caprese.data.scoring`, ...); nothing heavy
is imported here.
"""

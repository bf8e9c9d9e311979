"""Concurrent sweep workers share the CPU threads instead of oversubscribing them."""

import os

from caprese.sweep.runner import _worker_env


def test_workers_split_the_threads_and_user_settings_win(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert "OMP_NUM_THREADS" not in _worker_env(1)  # one run: torch's own default
    env = _worker_env(4)
    assert env["OMP_NUM_THREADS"] == "2" and env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert _worker_env(16)["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert _worker_env(4)["OMP_NUM_THREADS"] == "3"

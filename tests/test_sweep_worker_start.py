"""A kernel that dies or hangs before its first reply (a port taken between jupyter_client choosing it
and the kernel binding it) is started again, at most START_ATTEMPTS times; a failing cell never is."""

from pathlib import Path

import pytest
from papermill.exceptions import PapermillExecutionError

from caprese.sweep import worker
from caprese.sweep.layout import RunFolder


def _fake_papermill(monkeypatch, failures):
    calls = []

    def execute_notebook(*args, **kwargs):
        calls.append(kwargs["kernel_name"])
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]

    monkeypatch.setattr(worker.papermill, "execute_notebook", execute_notebook)
    return calls


def _run(tmp_path):
    worker._execute_notebook(Path("nb.ipynb"), RunFolder(tmp_path / "run"), {}, "caprese", tmp_path)


def test_a_kernel_that_did_not_start_is_started_again(tmp_path, monkeypatch):
    calls = _fake_papermill(
        monkeypatch,
        [
            RuntimeError("Kernel died before replying to kernel_info"),
            RuntimeError("Kernel didn't respond in 60 seconds"),
        ],
    )
    _run(tmp_path)
    assert calls == ["caprese"] * 3


def test_start_retries_are_bounded(tmp_path, monkeypatch):
    died = RuntimeError("Kernel died before replying to kernel_info")
    calls = _fake_papermill(monkeypatch, [died] * (worker.START_ATTEMPTS + 1))
    with pytest.raises(RuntimeError, match="kernel_info"):
        _run(tmp_path)
    assert len(calls) == worker.START_ATTEMPTS


@pytest.mark.parametrize(
    "failure",
    [
        PapermillExecutionError(3, 3, "x", "RuntimeError", "Kernel died before replying to kernel_info", []),
        RuntimeError("asked to fail"),
    ],
    ids=["cell", "other"],
)
def test_a_failure_after_the_start_is_not_retried(tmp_path, monkeypatch, failure):
    calls = _fake_papermill(monkeypatch, [failure])
    with pytest.raises(type(failure)):
        _run(tmp_path)
    assert len(calls) == 1

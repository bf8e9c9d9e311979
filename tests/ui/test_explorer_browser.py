"""The layer explorer in a real browser: JupyterLab from this environment, Chromium driven by Playwright.

`make test-ui` runs this (not part of `make test`: it needs a browser). It starts JupyterLab on a
free port with a token and its own config/runtime/settings folders, opens a parameterized copy of
notebooks/layerwise_diagnostics.ipynb (small parameters, toy-math), runs all cells from the Run
menu, then checks what the page shows: images (never a figure's `<Figure size ...>` text) whose
numbers match the run's folder, a new image and new numbers after the layer slider moves, the
comparison panel and the prompt/generated switch. Screenshots go to tests/ui/artifacts/ (or
$CAPRESE_UI_ARTIFACTS). Chromium: $CHROMIUM or /usr/bin/chromium (`apt-get install -y chromium`).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import nbformat
import pytest

from caprese.diagnostics.notebook import NOTEBOOK

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("CAPRESE_UI_ARTIFACTS", Path(__file__).parent / "artifacts"))
PARAMETERS = {
    "model": "toy-math",
    "data": "toy-math",
    "samples": 4,
    "max_new_tokens": 24,
    "densities": [0.1, 0.3],
    "ranks": [4],
    "batch_size": 4,
}
RUN_TIMEOUT_MS = 240_000  # all cells on 2 busy cores
STEP_TIMEOUT_MS = 60_000
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
SPARSITY = re.compile(r"layer (\d+)\s*, (\w+) tokens:.*?fraction \|Z\| ≤ ε=(\S+): ([0-9.]+|n/a)", re.S)


@pytest.fixture
def chromium() -> str:
    """The system's Chromium (checked before any server starts); a missing one fails, never skips."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"no Chromium at {path!r}: install Debian's (apt-get install -y chromium) or set CHROMIUM=/path; "
            "the browser test does not skip",
            pytrace=False,
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server serving a parameterized copy of the notebook; stopped even on failure."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    root, home = tmp_path / "root", tmp_path / "jupyter"
    root.mkdir()
    out = tmp_path / "diag"
    nb = parameterize_notebook(load_notebook_node(str(NOTEBOOK)), {**PARAMETERS, "out": str(out)})
    nbformat.write(nb, root / NOTEBOOK.name)
    # the "Jupyter news" notice would cover the page: its plugin is disabled in this server's own config
    (home / "config" / "labconfig").mkdir(parents=True)
    (home / "config" / "labconfig" / "page_config.json").write_text(
        '{"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": true}}'
    )
    port, token = free_port(), uuid.uuid4().hex
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "IPYTHONDIR": str(home / "ipython"),
        "MPLBACKEND": "agg",
        # kernels inherit the server's environment: they import caprese from this checkout
        "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
    }
    log = open(tmp_path / "jupyter.log", "w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--ServerApp.open_browser=False",
        ]
        + (["--allow-root"] if os.geteuid() == 0 else []),  # CI runs as root
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{(tmp_path / 'jupyter.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield {
            "url": f"{base}/lab/tree/{NOTEBOOK.name}?reset&token={token}",
            "out": out,
            "log": tmp_path / "jupyter.log",
        }
    finally:
        _stop(server)
        log.close()


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (the server and the kernels it started), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            pass
        try:
            server.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


def _panel(page, slot: str) -> dict:
    """What panel `slot` shows: its numbers as text and a hash of its image's bytes."""
    panel = page.locator(f".caprese-panel-{slot}")
    text = panel.locator(".caprese-numbers").inner_text(timeout=STEP_TIMEOUT_MS)
    assert panel.locator("img.caprese-figure[src]").count(), f"panel {slot} has no image yet"
    digest = panel.locator("img.caprese-figure").evaluate("""async (img) => {
        const bytes = await (await fetch(img.src)).arrayBuffer();
        const hash = await crypto.subtle.digest('SHA-256', bytes);
        return {size: bytes.byteLength, width: img.naturalWidth,
                hash: Array.from(new Uint8Array(hash)).map(b => b.toString(16).padStart(2, '0')).join('')};
    }""")
    match = SPARSITY.search(text)
    assert match, f"panel {slot} shows no layer numbers: {text!r}"
    layer, phase, eps, value = match.groups()
    return {"text": text, "layer": int(layer), "phase": phase, "epsilon": eps, "sparsity": value, **digest}


def _expect(view, shown: dict, layer: int, phase: str) -> None:
    assert (shown["layer"], shown["phase"]) == (layer, phase), shown["text"]
    expected = view.numbers(layer, phase)["sparsity"]
    assert shown["sparsity"] == f"{expected:.4f}", (
        f"layer {layer} {phase}: page says {shown['sparsity']}, run folder {expected:.4f}"
    )
    assert shown["width"] > 100 and shown["size"] > 10_000, (
        f"panel image of layer {layer} is not a rendered figure: {shown}"
    )


def _wait_for_panel(page, slot: str, layer: int, phase: str, previous_hash: str | None = None) -> dict:
    deadline = time.monotonic() + STEP_TIMEOUT_MS / 1000
    while True:
        try:
            shown = _panel(page, slot)
        except AssertionError:  # not drawn yet (a panel that just appeared)
            if time.monotonic() > deadline:
                raise
        else:
            if (shown["layer"], shown["phase"]) == (layer, phase) and shown["hash"] != previous_hash:
                return shown
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"panel {slot} still shows layer {shown['layer']} ({shown['phase']}, image "
                    f"{shown['hash'][:12]}) {STEP_TIMEOUT_MS // 1000} s after asking for layer "
                    f"{layer} ({phase}): the widget callback did not redraw"
                )
        page.wait_for_timeout(250)


def test_explorer_shows_each_layers_figure_and_numbers_in_jupyterlab(chromium, lab):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is missing: pip install -e '.[ui]' (make setup does)", pytrace=False)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        try:
            _drive(page, lab)
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "failure.png"), full_page=True)
            shutil.copy(lab["log"], ARTIFACTS / "jupyter.log")
            raise
        finally:
            browser.close()


def _no_dialog(page) -> None:
    dialog = page.locator(".jp-Dialog")
    assert not dialog.count(), f"a dialog blocks the notebook: {dialog.first.inner_text()!r}"


def _drive(page, lab) -> None:
    page.goto(lab["url"])
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=STEP_TIMEOUT_MS)
    # the kernel named by the notebook's kernelspec (`caprese`) is connected and idle: the status bar says so
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]"
        ".some(e => / \\| Idle$/.test(e.innerText)) || document.querySelector('.jp-Dialog')",
        timeout=STEP_TIMEOUT_MS,
    )
    _no_dialog(page)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    page.wait_for_timeout(1000)
    _no_dialog(page)

    explorer = page.locator(".caprese-explorer")
    # the first image the explorer shows (or, on a kernel that displays Figure objects, their text repr)
    page.wait_for_function(
        "() => document.querySelector('.caprese-explorer img.caprese-figure[src]') || "
        "document.body.innerText.includes('<Figure size') || document.querySelector('.jp-Dialog') || document.querySelector('.jp-OutputArea-output[data-mime-type=\"application/vnd.jupyter.stderr\"] pre')?.innerText.includes('Error')",
        timeout=RUN_TIMEOUT_MS,
    )
    _no_dialog(page)
    body = page.locator(".jp-Notebook").inner_text()
    assert "<Figure size" not in body, "the notebook shows a figure's text repr instead of its image: " + re.search(
        r"<Figure size[^>]*>", body
    ).group(0)
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    assert "Traceback" not in "".join(errors.all_inner_texts()), "\n".join(errors.all_inner_texts())[-3000:]
    explorer.wait_for(timeout=STEP_TIMEOUT_MS)
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(timeout=RUN_TIMEOUT_MS)
    static = page.locator(".jp-OutputArea-output img[src^='data:image/png']")
    assert static.count() >= 3, f"expected the notebook's 3 PNG figures above the explorer, saw {static.count()}"

    from caprese.diagnostics.view import DiagnosticsView

    view = DiagnosticsView.load(lab["out"])  # what the page must show, read from the run's folder
    layers = view.layers
    assert len(layers) >= 2
    first = _wait_for_panel(page, "a", layers[0], "generated")
    _expect(view, first, layers[0], "generated")
    explorer.screenshot(path=str(ARTIFACTS / f"explorer-layer{layers[0]}.png"))

    # move the slider one step with the keyboard, as a user would
    handle = page.locator(".caprese-layer .noUi-handle")
    handle.focus()
    handle.press("ArrowRight")
    second = _wait_for_panel(page, "a", layers[1], "generated", previous_hash=first["hash"])
    _expect(view, second, layers[1], "generated")
    assert second["hash"] != first["hash"]
    if view.numbers(layers[0], "generated")["sparsity"] != view.numbers(layers[1], "generated")["sparsity"]:
        assert second["sparsity"] != first["sparsity"]
    explorer.screenshot(path=str(ARTIFACTS / f"explorer-layer{layers[1]}.png"))

    # a second layer side by side, then the prompt phase for both
    page.locator(".caprese-compare select").select_option(label=f"layer {layers[0]}")
    compared = _wait_for_panel(page, "b", layers[0], "generated")
    assert compared["hash"] == first["hash"], "the comparison panel's image of layer 0 differs from the main panel's"
    page.locator(".caprese-phase button", has_text="prompt").click()
    prompt_a = _wait_for_panel(page, "a", layers[1], "prompt", previous_hash=second["hash"])
    prompt_b = _wait_for_panel(page, "b", layers[0], "prompt", previous_hash=first["hash"])
    _expect(view, prompt_a, layers[1], "prompt")
    _expect(view, prompt_b, layers[0], "prompt")
    explorer.screenshot(path=str(ARTIFACTS / "explorer-compare-prompt.png"))

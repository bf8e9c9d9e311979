import os

import pytest
import torch

# deterministic, quiet, offline: tests never reach a hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def tiny_llama():
    from caprese.testing import tiny_model

    return tiny_model("LlamaForCausalLM")


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster (2 CPUs) for every test that needs one; its address lets a separate
    driver process join it (`--address`). With RAY_ADDRESS set the tests join that cluster
    instead (e.g. `ray start --head --num-cpus 2`). Start-up is retried: on a loaded machine
    Ray's agents can miss their start-up deadline."""
    from pathlib import Path

    import ray

    root = str(Path(__file__).resolve().parent.parent)
    pythonpath = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    own = {} if os.environ.get("RAY_ADDRESS") else {"address": "local", "num_cpus": 2, "include_dashboard": False}
    for attempt in range(3):
        try:
            ray.init(
                **own, log_to_driver=False, logging_level="ERROR", runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}
            )
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()

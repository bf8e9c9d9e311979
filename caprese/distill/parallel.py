"""Layer-parallel layer-wise distillation: eq 7's per-layer fits fanned out across Ray workers.

Teacher forcing makes the layers of eq 7 independent: one teacher pass over the data yields
(x, residual) for every layer, and each layer's x L R then trains on its own. Here the driver
makes that one pass (a batch at a time, each layer's part going straight into Ray's object
store, which spills to disk beyond memory), and every layer's fit runs as its own Ray task on
whichever worker (CPU or GPU) the cluster has free. Each task runs `train_layerwise` itself for
its one layer, on the same sample batches in the same order with the same initial factors, so the
adapter is the serial one (same seed: equal to float rounding; on CPU bit for bit).

    from caprese.distill import distill
    from caprese.distill.parallel import LayerParallel
    adapter = distill(model, tok, rows, choice, rank=16, layer_parallel=LayerParallel(workers=8))
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

import caprese

from ..errors import CapreseError
from .layerwise import LayerwiseConfig, LayerwiseResult, NonFiniteLoss, StreamingTeacher, train_layerwise
from .path import LowRankPath


@dataclass
class LayerParallel:
    """How to fan the per-layer fits out: at most `workers` layers at once, each task asking Ray
    for `cpus` cores and `gpus` GPUs (fractions share one GPU; None: 1 when the model is on a GPU,
    else 0). `address`: the Ray cluster to join (default: the running one, else a local one)."""

    workers: int = 2
    address: str | None = None
    cpus: float = 1
    gpus: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise CapreseError(f"layer-parallel workers {self.workers!r} must be an integer >= 1")
        if isinstance(self.cpus, bool) or not isinstance(self.cpus, (int, float)) or not self.cpus > 0:
            raise CapreseError(f"layer-parallel cpus {self.cpus!r} must be a positive number")
        if self.gpus is not None and (
            isinstance(self.gpus, bool) or not isinstance(self.gpus, (int, float)) or self.gpus < 0
        ):
            raise CapreseError(f"layer-parallel gpus {self.gpus!r} must be a number >= 0 (fractions share a GPU)")


def _ray():
    try:
        import ray
    except ImportError:
        raise CapreseError("layer-parallel distillation runs on Ray: pip install 'caprese[ray]'") from None
    return ray


class _Replay:
    """The teacher's micro-batches of one layer, replayed in the serial path's order, so the
    per-layer fit sums its gradients exactly as `train_layerwise` does beside the live teacher."""

    def __init__(self, layer: int, data: list, batch_size: int):
        self.layer, self.data, self.batch_size = layer, data, batch_size

    def stream(self, indices: Sequence[int], sink) -> None:  # the batches are fixed: the first index names one
        for x, y in self.data[indices[0] // self.batch_size]:
            sink(self.layer, x, y)


def _fit_layer(
    layer: int,
    batch_refs: list,
    n_samples: int,
    hidden_size: int,
    config: LayerwiseConfig,
    initial: tuple[torch.Tensor, torch.Tensor] | None,
    device: str | None,
    threads: int,
):
    """A Ray task: `train_layerwise` for one layer on its residuals from the one teacher pass."""
    ray = _ray()
    torch.set_num_threads(threads)
    if device is None:
        device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    # per sample batch, this layer's micro-batches in the order the teacher produced them
    data = [[(x.to(device), y.to(device)) for x, y in chunks] for chunks in ray.get(batch_refs)]
    teacher = _Replay(layer, data, config.batch_size)

    start = {layer: tuple(t.to(device) for t in initial)} if initial is not None else None
    try:
        result = train_layerwise(
            teacher, n_samples, [layer], hidden_size, config, device=device, initial=start, progress=False
        )
        error = None
    except NonFiniteLoss as err:
        result, error = err.result, str(err)
    correction = result.corrections[layer]
    state = {k: v.detach().cpu() for k, v in correction.state_dict().items()}
    return layer, state, result.epoch_losses[layer], error


def train_layerwise_parallel(
    teacher: StreamingTeacher,
    n_samples: int,
    layers: Sequence[int],
    hidden_size: int,
    config: LayerwiseConfig,
    *,
    parallel: LayerParallel | None = None,
    device=None,
    initial: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
    progress: bool = True,
) -> LayerwiseResult:
    """`train_layerwise` with each layer's fit in its own Ray task (same arguments, same result)."""
    parallel = parallel or LayerParallel()
    config.check(hidden_size)
    if n_samples < 1:
        raise CapreseError(f"samples {n_samples!r} must be >= 1")
    ray = _ray()
    device = torch.device(device) if device is not None else torch.device("cpu")
    if not ray.is_initialized():
        root = str(Path(list(caprese.__path__)[0]).resolve().parent)
        pythonpath = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        address = parallel.address or os.environ.get("RAY_ADDRESS") or "local"
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})  # fmt: skip
    gpus = parallel.gpus if parallel.gpus is not None else (1.0 if device.type == "cuda" else 0.0)
    # where each fit runs: a GPU task on its GPU, a CPU task on the CPU (the serial path's device
    # when it is a CPU; the adapter's tensors come back to `device` either way)
    task_device = None if gpus > 0 else "cpu"

    batches = [list(range(s, min(s + config.batch_size, n_samples))) for s in range(0, n_samples, config.batch_size)]
    refs: dict[int, list] = {layer: [] for layer in layers}
    chunks: dict[int, list] = {}

    def keep(layer: int, x: torch.Tensor, residual: torch.Tensor) -> None:
        if layer in chunks:  # copies: the forward's own tensors are not kept
            chunks[layer].append((x.detach().to("cpu", copy=True), residual.detach().to("cpu", copy=True)))

    for indices in tqdm(batches, desc="teacher pass", disable=not progress, unit="batch"):
        chunks.update({layer: [] for layer in layers})
        teacher.stream(indices, keep)
        for layer in layers:
            refs[layer].append(ray.put(chunks[layer]))

    task = ray.remote(_fit_layer).options(num_cpus=parallel.cpus, num_gpus=gpus, max_retries=2)
    threads = max(1, math.floor(parallel.cpus))
    result = LayerwiseResult(corrections={}, epoch_losses={})
    queue, pending, errors = list(layers), {}, []
    bar = tqdm(
        total=len(layers),
        desc=f"layer-wise distillation ({parallel.workers} workers)",
        disable=not progress,
        unit="layer",
    )
    try:
        while queue or pending:
            while queue and len(pending) < parallel.workers:
                layer = queue.pop(0)
                start = tuple(t.detach().cpu() for t in initial[layer]) if initial and layer in initial else None
                pending[
                    task.remote(
                        layer, refs[layer], n_samples, hidden_size, replace(config), start, task_device, threads
                    )
                ] = layer
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                del pending[ref]
                layer, state, losses, error = ray.get(ref)
                correction = LowRankPath(hidden_size, config.rank, device=device, seed=config.seed + layer)
                correction.load_state_dict({k: v.to(device) for k, v in state.items()})
                result.corrections[layer] = correction
                result.epoch_losses[layer] = losses
                if error:
                    errors.append(error)
                bar.update(1)
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        bar.close()
    result.corrections = {layer: result.corrections[layer] for layer in layers}
    result.epoch_losses = {layer: result.epoch_losses[layer] for layer in layers}
    if errors:  # each diverged layer kept its last finite epoch; the others finished
        raise NonFiniteLoss("; ".join(errors), result)
    return result

"""One rank of the context-parallel tests (`test_parallel.py` starts two of them, gloo on CPU, torchrun-style
env vars RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT): it runs every scenario once and saves what it saw
to <out_dir>/rank<r>.pt; the test process computes the unsharded references and compares.

Real diffusers context parallelism on CPU (diffusers 0.42.1, torch 2.13 CPU build):
- Ulysses with the native attention backend works over gloo, with two workarounds:
  * `enable_parallelism` computes `rank % torch.accelerator.device_count()`, which is 0 without an
    accelerator: "ZeroDivisionError: integer modulo by zero" (modeling_utils._resolve_parallel_config); the
    workers report one device;
  * the transformer must be called with return_dict=False (as pipelines do): the split hook on the model
    rejects an output dataclass, "ValueError: Expected output to be a tensor or a list/tuple of tensors, but
    got <class 'diffusers.models.modeling_outputs.Transformer2DModelOutput'>".
- Ring attention cannot run on CPU: it needs the attention's log-sum-exp, and the only CPU backend says
  "ValueError: Native attention does not support return_lse=True" (the others need CUDA and fp16 / bf16).
  The ring path differs from Ulysses only inside attention; the cache sees the same sharded stack input.
Without the reduction, the Wan run below deadlocks: the ranks decide differently, one runs the stack and waits
in Ulysses' all-to-all for the other ("Timed out waiting 60000ms for send operation to complete").
"""

from __future__ import annotations

import datetime
import os
import sys
from pathlib import Path

import torch

try:
    from .tiny_models import build
except ImportError:  # run as a script
    from tiny_models import build

from cachepilot.policies.baselines import Threshold

STEPS = 8
DELTA = 0.1
SPLITS = {"equal": [5, 5], "uneven": [6, 5]}  # tokens per rank in the reduction scenario


class RecordingThreshold(Threshold):
    """`threshold:0.1` that keeps what it observed: (steps, 3, samples) change, accumulated, drift."""

    def __init__(self, delta: float = DELTA):
        super().__init__(delta)
        self.seen: list[torch.Tensor] = []

    def reset(self, num_steps: int, batch_size: int) -> None:
        self.seen = []

    def decide(self, obs):
        self.seen.append(torch.stack([obs.change, obs.accumulated, obs.drift]))
        return super().decide(obs)


def enable(model: torch.nn.Module) -> RecordingThreshold:
    import cachepilot

    policy = RecordingThreshold()
    cachepilot.enable(model, policy, num_inference_steps=STEPS)
    return policy


def result(model: torch.nn.Module, policy: RecordingThreshold, outputs: torch.Tensor | None = None) -> dict:
    import cachepilot

    out = {"decisions": cachepilot.last_stats(model).decisions, "observed": torch.stack(policy.seen)}
    if outputs is not None:
        out["outputs"] = outputs
    return out


def reduction_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, tokens, dim) a, b: the first tokens of a moved far from b, the last ones barely."""
    g = torch.Generator().manual_seed(3)
    b = torch.randn(3, 11, 4, generator=g)
    move = torch.randn(3, 11, 4, generator=g)
    move[:, :6] *= 0.5
    move[:, 6:] *= 0.01
    return b + move, b


def flux(batch: int = 2):
    """The tiny Flux with 6 text tokens (diffusers' Flux plan splits the text too: it must divide by 2)."""
    model, x, kwargs = build("flux", batch)
    context = torch.randn(batch, 6, 32, generator=torch.Generator().manual_seed(7))

    def kw(t):
        return {**kwargs(t), "encoder_hidden_states": context, "txt_ids": torch.zeros(6, 3)}
    return model, x, kw


def spread(x: torch.Tensor) -> torch.Tensor:
    """Sample 1 at twice the scale: its relative changes are smaller, so the two samples decide differently."""
    x = x.clone()
    x[1] *= 2
    return x


@torch.no_grad()
def sample(model: torch.nn.Module, x: torch.Tensor, kwargs, steps: int = STEPS) -> torch.Tensor:
    """The sampler-shaped loop of tiny_models.run, calling the model the way pipelines do (return_dict=False)."""
    outputs = []
    for i in range(steps):
        out = model(x, **kwargs(900 - 150 * i), return_dict=False)[0]
        x = x - 0.1 * out
        outputs.append(out)
    return torch.stack(outputs)


def drifting_latents(x: torch.Tensor, steps: int = STEPS) -> list[torch.Tensor]:
    """Latents fixed in advance (they do not follow the model), so a rank fed half of them sees exactly half of
    the unsharded stack input at every step: the first half of the tokens moves fast, the second half barely."""
    g = torch.Generator().manual_seed(11)
    velocity = torch.randn(x.shape, generator=g)
    half = x.shape[1] // 2
    velocity[:, :half] *= 0.12
    velocity[:, half:] *= 0.004
    return [x + i * velocity for i in range(steps)]


@torch.no_grad()
def drive(model: torch.nn.Module, latents: list[torch.Tensor], kwargs, tokens: slice = slice(None)) -> None:
    """Call the model on the given tokens of each step's latents (and their image ids): a manual sequence shard."""
    for i, x in enumerate(latents):
        kw = kwargs(900 - 100 * i)
        kw["img_ids"] = kw["img_ids"][tokens]
        model(x[:, tokens], **kw, return_dict=False)


def manual_parallel_config(rank: int, world: int):
    """The config `enable_parallelism` records on a model (its mesh included), without its sharding hooks."""
    from diffusers import ContextParallelConfig, ParallelConfig
    from torch.distributed.device_mesh import init_device_mesh

    context = ContextParallelConfig(ulysses_degree=world)
    mesh = init_device_mesh("cpu", context.mesh_shape, mesh_dim_names=context.mesh_dim_names)
    config = ParallelConfig(context_parallel_config=context)
    config.setup(rank, world, torch.device("cpu"), mesh=mesh)
    return config


def main(out_dir: str) -> None:
    import torch.distributed as dist
    from diffusers import ContextParallelConfig

    from cachepilot.runtime.engine import _relative_l1
    from cachepilot.runtime.parallel import SequenceReducer, context_parallel_group, l1_sums

    torch.set_num_threads(1)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    # a bounded wait: ranks that disagree fail in a minute instead of hanging for gloo's default 30
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    torch.accelerator.device_count = lambda: 1  # see the module docstring: diffusers divides by it
    results: dict = {}

    # 1. the reduction: each rank holds part of the tokens (equal halves, and 6 / 5 as the "anything" modes)
    a, b = reduction_tensors()
    reducer = SequenceReducer(dist.group.WORLD)
    for name, sizes in SPLITS.items():
        n = sum(sizes)
        a_part, b_part = a[:, :n].split(sizes, 1)[rank], b[:, :n].split(sizes, 1)[rank]
        (relative,), finite = reducer.relative_l1([l1_sums(a_part, b_part)], a_part)
        results[f"reduction_{name}"] = {"global": relative, "local": _relative_l1(a_part, b_part), "finite": finite}
    poisoned = a.split(SPLITS["uneven"], 1)[rank].clone()
    if rank == 1:
        poisoned[0, 0, 0] = float("nan")
    results["finite_poisoned"] = reducer.relative_l1([l1_sums(poisoned, poisoned)], poisoned)[1]

    # 2. decisions under a manual sequence shard, without and with the reduction
    model, x, kwargs = flux()
    tokens = slice(rank * x.shape[1] // world, (rank + 1) * x.shape[1] // world)
    latents = drifting_latents(x)
    policy = enable(model)
    drive(model, latents, kwargs, tokens)
    results["manual_without"] = result(model, policy)
    model._parallel_config = manual_parallel_config(rank, world)
    results["group_found"] = context_parallel_group(model) is not None
    drive(model, latents, kwargs, tokens)  # the config was set after enabling: picked up at the call's start
    results["manual_with"] = result(model, policy)

    # 3. real diffusers context parallelism (Ulysses), cachepilot enabled before and after it
    for order in ("cache_first", "parallel_first"):
        model, x, kwargs = flux()
        if order == "cache_first":
            policy = enable(model)
        model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world))
        if order == "parallel_first":
            policy = enable(model)
        results[f"flux_{order}"] = result(model, policy, sample(model, spread(x), kwargs))

    # 4. Wan's plan shards the input of blocks.0, where the stack hook lives: it must stay under the split
    model, x, kwargs = build("wan", 2)
    model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world))
    policy = enable(model)
    results["wan"] = result(model, policy, sample(model, spread(x), kwargs))

    dist.destroy_process_group()
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1])

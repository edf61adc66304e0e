"""torch.compile with the cache: regional compilation keeps full graphs, a whole-model compile breaks its graph
only around the engine's decision and bookkeeping (`torch.compiler.disable`, as diffusers' cache hooks do).

Backends: a counting wrapper of dynamo's eager backend (the plumbing and the graph breaks, without a C++
compiler in the test). Inductor's outputs are compared with eager ones by `python -m experiments.compiled`.
"""

import pytest
import torch
import torch._dynamo as dynamo

import cachepilot
from cachepilot.compile import compile_blocks
from cachepilot.runtime.adapters import get_adapter

from .tiny_models import FAMILIES, build, run

STEPS = 4


class CountingBackend:
    """A dynamo backend that runs the traced graph as is and counts graphs compiled and calls of them."""

    def __init__(self):
        self.graphs = 0
        self.calls = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1

        def forward(*args):
            self.calls += 1
            return gm.forward(*args)

        return forward


@pytest.fixture(autouse=True)
def fresh_dynamo():
    dynamo.reset()
    yield
    dynamo.reset()


def _cached(family: str, compile_step=None, order: str = "after"):
    model, x, kwargs = build(family, batch=2)
    if order == "before" and compile_step:
        compile_step(model)
    cachepilot.enable(model, "fixed:2", "taylor:1", num_inference_steps=STEPS)
    if order == "after" and compile_step:
        compile_step(model)
    out = run(model, x, kwargs, STEPS)
    return model, out


@pytest.mark.parametrize(("family", "order"), [*((f, "after") for f in FAMILIES), ("flux", "before"),
                                             ("sd3", "before")])
def test_regional_fullgraph_compile_before_or_after_enable(family, order):
    """Blocks compiled with `fullgraph=True` on a cached model, before or after `enable`: every block runs its
    compiled graph on the computing steps (a graph break would raise), the outputs equal the eager cached
    ones, and `disable` gives the blocks their compiled calls back."""
    _, eager = _cached(family)
    backend = CountingBackend()
    model, compiled = _cached(family, lambda m: compile_blocks(m, backend=backend, dynamic=False), order)
    stats = cachepilot.last_stats(model)
    assert stats.compute_fraction == 0.5
    assert torch.equal(compiled, eager)
    blocks = get_adapter(model).blocks(model)
    assert backend.graphs >= 1
    # fixed:2 over 4 steps computes at 2 of them: each compute runs every stack block's compiled graph once;
    # repeated blocks outside the stack (HunyuanVideo's token refiner) keep theirs and run at every step
    others = [m for m in model.modules() if getattr(m, "_compiled_call_impl", None) is not None]
    assert not set(map(id, others)) & set(map(id, blocks))  # the stack's compiled calls are the engine's
    assert backend.calls == stats.num_steps // 2 * len(blocks) + stats.num_steps * len(others)
    cachepilot.disable(model)
    assert all(block._compiled_call_impl is not None for block in blocks)


@pytest.mark.parametrize("family", ["flux", "dit"])
def test_whole_model_compile_breaks_only_around_the_engine(family):
    """`torch.compile(model)` of a cached model: the graph breaks are the engine's two disabled calls per stack
    call (decision, bookkeeping) plus at most one more; outputs equal the eager cached ones."""
    model, x, kwargs = build(family, batch=2)
    cachepilot.enable(model, "fixed:2", "taylor:1", num_inference_steps=STEPS)
    eager = run(model, x, kwargs, STEPS)
    explained = dynamo.explain(model)(x, **kwargs(900))
    assert explained.graph_break_count <= 3, [r.reason for r in explained.break_reasons]
    reasons = " ".join(r.reason for r in explained.break_reasons)
    assert "perf_counter" not in reasons
    compiled_model = torch.compile(model, backend=CountingBackend())
    compiled = run(compiled_model, x, kwargs, STEPS)
    assert cachepilot.last_stats(model).compute_fraction == 0.5
    assert torch.equal(compiled, eager)

"""DBCache-style structure: the first Fn / last Bn blocks computed at every step, the rest cached."""

import pytest
import torch

import cachepilot
from cachepilot.bench.counting import BlockCounter
from cachepilot.core.actions import Action
from cachepilot.core.policy import CachePolicy
from cachepilot.errors import InvalidInputError
from cachepilot.runtime.adapters import get_adapter
from cachepilot.runtime.hooks import get_engine
from cachepilot.runtime.structure import Structure, make_structure

from .tiny_models import build, run

STEPS = 6


def _perturbed(family: str, batch: int):
    """A tiny model whose blocks are far from identities (zero-initialised modulation would hide a wrong cache)."""
    model, x, kwargs = build(family, batch)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(7)
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model, x, kwargs


class Alternating(CachePolicy):
    """Sample i computes when (step + i) % 3 == 0, else REUSE (even i) or FORECAST (odd i)."""

    observes_probe = False

    def __init__(self, ids: list[int]):
        self.ids = torch.tensor(ids)

    def decide(self, obs):
        compute = (obs.step + self.ids) % 3 == 0
        skip = torch.where(self.ids % 2 == 0, int(Action.REUSE), int(Action.FORECAST))
        return torch.where(compute, int(Action.COMPUTE), skip)


def test_specs_parse_and_bad_ones_are_one_line_errors():
    assert make_structure("F1B0") == Structure(1, 0)
    assert make_structure(" f8b2 ") == Structure(8, 2)
    assert make_structure(None).is_whole_stack
    for bad in ("F1", "B2", "first:1", "F-1B0", ""):
        with pytest.raises(InvalidInputError, match="structure"):
            make_structure(bad)


@pytest.mark.parametrize("structure", ["F1B1", "G1,2"])  # G: groups (test_groups.py)
@pytest.mark.parametrize("family", ["flux", "dit"])
def test_always_compute_with_a_structure_is_bit_exact(family, structure):
    model, x, kwargs = _perturbed(family, 2)
    reference = run(model, x, kwargs, STEPS)
    cachepilot.enable(model, "always", structure=structure)
    assert torch.equal(run(model, x, kwargs, STEPS), reference)
    cachepilot.disable(model)
    assert torch.equal(run(model, x, kwargs, STEPS), reference)


def test_whole_stack_structure_is_the_default_cache():
    model, x, kwargs = _perturbed("flux", 2)
    cachepilot.enable(model, "fixed:2", "taylor:1")
    default = run(model, x, kwargs, STEPS)
    cachepilot.enable(model, "fixed:2", "taylor:1", structure="F0B0")
    assert torch.equal(run(model, x, kwargs, STEPS), default)


@pytest.mark.parametrize("family", ["flux", "dit"])
def test_the_fixed_blocks_run_every_step_and_compute_is_counted_in_blocks(family):
    model, x, kwargs = _perturbed(family, 2)
    full = run(model, x, kwargs, STEPS)
    cachepilot.enable(model, "fixed:2", "reuse")
    whole = run(model, x, kwargs, STEPS)
    cachepilot.enable(model, "fixed:2", "reuse", structure="F1B1")
    blocks = get_adapter(model).blocks(model)
    with BlockCounter(blocks[:1]) as first, BlockCounter(blocks[1:-1]) as middle, BlockCounter(blocks[-1:]) as last:
        structured = run(model, x, kwargs, STEPS)
    assert first.rows == last.rows == STEPS * 2  # every step, both rows
    assert middle.rows == (STEPS // 2) * 2 * (len(blocks) - 2)  # the computing steps only
    stats = cachepilot.last_stats(model)
    assert stats.stack_compute_fraction == pytest.approx(0.5)
    fixed, cached = 2, len(blocks) - 2
    assert stats.compute_fraction == pytest.approx((fixed + 0.5 * cached) / len(blocks))
    assert stats.summary()["block_evaluations"] == first.rows + middle.rows + last.rows
    assert not torch.equal(structured, whole) and not torch.equal(structured, full)
    # the first and last blocks correct a reused step: closer to full compute than reusing the whole stack
    assert (structured - full).abs().mean() < (whole - full).abs().mean()


def test_per_sample_decisions_with_a_structure_equal_single_sample_runs():
    batch = 3
    assert_batch_equals_single_samples(lambda model, ids: cachepilot.enable(
        model, Alternating(ids), "taylor:1", structure="F1B0"), batch)


def assert_batch_equals_single_samples(enable, batch: int) -> None:
    """`enable(model, sample ids)` caches a batch: each sample's output equals its own single-sample run's."""
    model, x, kwargs = _perturbed("flux", batch)
    enable(model, list(range(batch)))
    batched = run(model, x, kwargs, STEPS)
    for i in range(batch):
        enable(model, [i])
        single = run(model, x[i:i + 1], lambda t: {
            k: (v[i:i + 1] if isinstance(v, torch.Tensor) and v.shape[:1] == (batch,) else v)
            for k, v in kwargs(t).items()}, STEPS)
        torch.testing.assert_close(single[:, 0], batched[:, i], atol=2e-5, rtol=1e-5)


def test_a_structure_that_leaves_nothing_to_cache_is_refused_before_any_hook():
    model, _, _ = _perturbed("flux", 1)
    blocks = len(get_adapter(model).blocks(model))
    with pytest.raises(InvalidInputError, match=f"below {blocks}"):
        cachepilot.enable(model, "fixed:2", structure=f"F{blocks - 1}B1")
    assert get_engine(model) is None
    with pytest.raises(InvalidInputError, match="unknown structure"):
        cachepilot.enable(model, "fixed:2", structure="F1")
    assert get_engine(model) is None

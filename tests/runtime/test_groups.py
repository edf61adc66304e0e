"""Block groups (`G<a>,<b>`): the cached blocks split into consecutive groups, each with its own decisions,
residual history and forecaster."""

import pytest
import torch
from diffusers import DiffusionPipeline

import cachepilot
from cachepilot.bench.counting import BlockCounter
from cachepilot.errors import InvalidInputError
from cachepilot.runtime.adapters import get_adapter
from cachepilot.runtime.hooks import get_engine
from cachepilot.runtime.structure import Structure, make_structure

from ..tiny_pipelines import build_tiny_pipeline, call_kwargs, example_condition
from .test_structure import STEPS, Alternating, _perturbed, assert_batch_equals_single_samples
from .tiny_models import run


def test_group_specs_parse_and_bad_ones_are_one_line_errors():
    assert make_structure("G1,2") == Structure(0, 0, (1, 2))
    assert make_structure(" f1b0 g2, 3 ") == Structure(1, 0, (2, 3))
    assert make_structure("G1,2").spec() == "F0B0G1,2"
    assert not make_structure("G1,2").is_whole_stack and make_structure("G3").is_whole_stack
    for bad in ("G", "G1;2", "G1,", "groups:1,2"):
        with pytest.raises(InvalidInputError, match="unknown structure"):
            make_structure(bad)
    with pytest.raises(InvalidInputError, match="at least one block"):
        make_structure("G0,3")


@pytest.mark.parametrize("predictor", ["reuse", "taylor:1"])
def test_groups_on_one_schedule_equal_the_whole_stack(predictor):
    """Groups computed at the same steps: the group residuals add up to the stack's, and a linear forecaster of
    each adds up to the stack's forecast."""
    model, x, kwargs = _perturbed("flux", 2)
    cachepilot.enable(model, "fixed:3", predictor)
    whole = run(model, x, kwargs, STEPS)
    cachepilot.enable(model, "fixed:3", predictor, structure="G1,2")
    grouped = run(model, x, kwargs, STEPS)
    torch.testing.assert_close(grouped, whole, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["flux", "dit"])
def test_each_group_runs_on_its_own_schedule_and_is_counted_by_its_blocks(family):
    model, x, kwargs = _perturbed(family, 2)
    cachepilot.disable(model)
    full = run(model, x, kwargs, STEPS)
    cachepilot.enable(model, "fixed:2", "taylor:1")
    whole = run(model, x, kwargs, STEPS)
    cachepilot.enable(model, ["fixed:2", "always"], "taylor:1", structure="G1,2")
    blocks = get_adapter(model).blocks(model)
    with BlockCounter(blocks[:1]) as first, BlockCounter(blocks[1:]) as rest:
        grouped = run(model, x, kwargs, STEPS)
    assert first.rows == (STEPS // 2) * 2 and rest.rows == STEPS * 2 * 2
    stats = cachepilot.last_stats(model)
    assert [g.stack_blocks for g in stats.groups] == [1, 2]
    assert stats.block_evaluations == first.rows + rest.rows
    assert stats.compute_fraction == pytest.approx((0.5 * 1 + 2) / 3)
    assert len(stats.summary()["groups"]) == 2
    # the later blocks computed at every step: closer to full compute than the whole stack every other step
    assert (grouped - full).abs().mean() < (whole - full).abs().mean()


def test_per_sample_decisions_with_groups_equal_single_sample_runs():
    assert_batch_equals_single_samples(lambda model, ids: cachepilot.enable(
        model, [Alternating(ids), "fixed:2"], "taylor:1", structure="G2,1"), 3)


def test_bad_group_splits_and_policy_counts_are_refused_before_any_hook():
    model, _, _ = _perturbed("flux", 1)
    blocks = len(get_adapter(model).blocks(model))
    with pytest.raises(InvalidInputError, match=f"must add up to {blocks}"):
        cachepilot.enable(model, "fixed:2", structure=f"G1,{blocks}")
    with pytest.raises(InvalidInputError, match=f"must add up to {blocks - 1}"):
        cachepilot.enable(model, "fixed:2", structure="F1B0G1,1,1")
    with pytest.raises(InvalidInputError, match="3 policies given for a structure of 2 groups"):
        cachepilot.enable(model, "fixed:2|fixed:3|fixed:4", structure="G1,2")
    with pytest.raises(InvalidInputError, match="checkpoint's forecaster forecasts the whole cached stack"):
        cachepilot.enable(model, speed=0.3, structure="G1,2")
    assert get_engine(model) is None


def test_a_pipeline_with_true_cfg_counts_every_group_of_both_contexts(tmp_path):
    pipe = DiffusionPipeline.from_pretrained(build_tiny_pipeline("flux", tmp_path / "flux"), local_files_only=True)
    cachepilot.enable(pipe, "fixed:2|always", "taylor:1", structure="G1,2")
    condition = example_condition("flux", 0)
    pipe(**{**call_kwargs("flux"), "prompt": [condition["prompt"]] * 2}, num_inference_steps=4, output_type="np",
         negative_prompt=["", ""], true_cfg_scale=2.0, generator=[torch.Generator().manual_seed(s) for s in (3, 4)])
    stats = cachepilot.last_stats(pipe)
    assert set(stats.contexts) == {"cond", "uncond"} and len(stats.groups) == 2
    # two contexts x two samples: the first group every other step, the other two blocks at every step
    assert stats.block_evaluations == 4 * (4 // 2) * 1 + 4 * 4 * 2
    assert stats.compute_fraction == pytest.approx((0.5 + 2) / 3)


@pytest.mark.parametrize("structure", ["G1,2", "F0B1"])
def test_a_skipped_stack_passes_its_text_stream_on_with_the_cached_residual(structure):
    """Flux's blocks also update the text stream, and the blocks after a skipped group (or a structure's last
    blocks) read it: a skipped step passes on its input plus the residual of the last compute, not its bare input."""
    model, x, kwargs = _perturbed("flux", 2)
    cachepilot.enable(model, ["fixed:2", "always"] if structure.startswith("G") else "fixed:2", "reuse",
                      structure=structure)
    seen = []
    block = get_adapter(model).blocks(model)[0]
    handle = block.register_forward_hook(
        lambda module, args, kwargs, output: seen.append((kwargs["encoder_hidden_states"], output[0])),
        with_kwargs=True)
    try:
        run(model, x, kwargs, 2)
    finally:
        handle.remove()
    (given_0, passed_0), (given_1, passed_1) = seen
    torch.testing.assert_close(given_1, given_0)  # the same text at both steps
    assert not torch.allclose(passed_0, given_0, atol=1e-3)  # the computed step changed it
    torch.testing.assert_close(passed_1, passed_0)  # the skipped step: input + the reused residual


def test_one_policy_decides_once_per_step_for_every_group():
    """One policy for the groups: the first group observes and decides, the others take its decisions (no
    observation and no host sync of their own), each forecasting with its own forecaster and history."""
    from cachepilot.policies.baselines import Threshold

    class Counting(Threshold):
        decided = 0

        def decide(self, obs):
            Counting.decided += 1
            return super().decide(obs)

    model, x, kwargs = _perturbed("flux", 2)
    cachepilot.enable(model, Counting(0.5), "taylor:1|reuse", structure="G1,2")
    run(model, x, kwargs, STEPS)
    stats = cachepilot.last_stats(model)
    first, second = stats.groups
    assert Counting.decided == STEPS
    assert torch.equal(first.decisions, second.decisions) and 0 < stats.compute_fraction < 1
    engines = get_engine(model).groups
    assert [e.predictor.spec() for e in engines] == ["taylor:1", "reuse"]


def test_a_learned_checkpoint_decides_for_groups_that_forecast_on_their_own():
    pipe = cachepilot.load_pipeline()
    with pytest.raises(InvalidInputError, match="give a forecaster per group"):
        cachepilot.enable(pipe, speed=0.3, structure="G3,3")
    cachepilot.enable(pipe, speed=0.3, structure="G3,3", predictor="taylor:1|reuse")
    pipe(class_labels=[1, 2], num_inference_steps=10, generator=torch.Generator().manual_seed(0))
    stats = cachepilot.last_stats(pipe)
    assert torch.equal(stats.groups[0].decisions, stats.groups[1].decisions)
    assert stats.compute_fraction < 1

"""`cachepilot fit` counts what every stage spends, and says it before: the plan's counts are the counts measured
(exactly where the stage's count is fixed by its settings, an upper bound where it depends on the data)."""

import json

import pytest

from cachepilot import InvalidInputError
from cachepilot.bench.counting import StackCounter
from cachepilot.driver import SamplingDriver, unhooked_twin
from cachepilot.loading import load_pipeline
from cachepilot.train.fit import CONFIG_FILE, Fit, FitConfig, fit, plan
from cachepilot.train.plan import gate_counts, plan_fit, policy_gate_counts

from ..tiny_pipelines import build_tiny_pipeline, call_kwargs

STAGES = ("check", "collect", "predictors", "gate", "schedules", "policy", "policy_gate", "bench")


@pytest.fixture(scope="module")
def dit(tmp_path_factory):
    """A tiny DiT: batched classifier-free guidance, so every sample-step is 2 evaluations."""
    return load_pipeline(build_tiny_pipeline("dit", tmp_path_factory.mktemp("dit") / "pipe"))


def _config(**overrides) -> FitConfig:
    kwargs = {k: v for k, v in call_kwargs("dit").items() if k != "num_inference_steps"}
    # the learned policy ships whatever its validation (policy_margin): the bench runs its row
    return FitConfig.for_smoke(**{**dict(steps=6, call_kwargs=kwargs, search_samples=2, bench_samples=2,
                                     targets=[0.5], policy_margin=-1000.0), **overrides})


def test_the_counter_counts_twins_and_guidance_copies(dit):
    twin = unhooked_twin(dit)  # built before counting: its own transformer, counted at its first call
    with StackCounter(dit.transformer) as counter:
        SamplingDriver(twin, 3, {"guidance_scale": 4.0}).sample([{"class_labels": 1}] * 2, [0, 1])
        SamplingDriver(dit, 3, {"guidance_scale": 4.0}).sample([{"class_labels": 1}], [0])
    assert counter.evaluations == 2 * 3 * (2 + 1)  # copies x steps x samples
    SamplingDriver(dit, 3, {"guidance_scale": 4.0}).sample([{"class_labels": 1}], [0])
    assert counter.evaluations == 18  # nothing counted once closed


def test_every_stage_counts_what_its_plan_said(dit, tmp_path):
    out = tmp_path / "cache"
    record = fit(dit, out, None, _config(), progress=False)
    stored = json.loads((out / CONFIG_FILE).read_text())
    cost, planned = stored["cost"], stored["plan"]["stages"]
    assert set(cost) == set(STAGES) and all(c["evaluations"] > 0 and c["seconds"] > 0 for c in cost.values())
    # by hand: guidance copies 2; 16 sensitivity samples x 6 steps x (6 perturbed + 1 clean) runs; 4 samples of
    # `always` (6 computes) and of fixed:2 (6 bypassed + 3 cached computes); the DAgger round fixed:2 alone, with
    # round 0's step weights (same pipeline, steps, call kwargs and conditions), not computed again
    assert cost["collect"]["evaluations"] == 2 * (16 * 6 * 7 + 4 * 6 + 4 * (6 + 3))
    assert cost["predictors"]["evaluations"] == 2 * 4 * (6 + 3)
    weights = [(out / "work" / part / "step_weights.json").read_bytes() for part in ("collect", "collect-dagger")]
    assert weights[0] == weights[1]
    # bench: 2-step warm-ups of 2 samples (hooked, twin), full compute twice, then 7 methods each beside full
    # compute: always 6, learned / searched at most 3, fixed:2 x 3 forecasters 3 each, fewer steps 3
    assert cost["bench"]["evaluations"] == 2 * (2 * 2 * 2 + 2 * (2 * 6 + 7 * 6 + 6 + 2 * 3 + 3 * 3 + 3))
    # 10 classes, 1 step each; the probe and its warm-up: 2 steps of the fit's batch of 8
    assert cost["check"]["evaluations"] == 2 * (10 + 2 * 2 * 8)
    for stage in STAGES:
        if planned[stage]["bound"]:
            assert cost[stage]["evaluations"] <= planned[stage]["evaluations"], stage
        else:
            assert cost[stage]["evaluations"] == planned[stage]["evaluations"], stage
    readme = (out / "README.md").read_text()
    assert "## Cost per stage" in readme and f"| collect | {cost['collect']['evaluations']:,.0f} |" in readme

    again = fit(dit, out, None, _config(), progress=False)  # resumed: every stage keeps what it spent
    assert {k: v for k, v in again["cost"].items() if k != "check"} == {k: v for k, v in cost.items() if k != "check"}
    assert record["cost"]["collect"] == again["cost"]["collect"]


def test_plan_only_probes_and_writes_nothing(dit, tmp_path, capsys):
    result = plan(dit, None, _config())
    assert result.seconds_per_evaluation > 0 and result.copies == 2
    assert [s.stage for s in result.stages] == list(STAGES)
    assert "total" in capsys.readouterr().err
    again = plan_fit(_config(), probe=None, seconds_per_evaluation=0.28, copies=1, num_conditions=10)
    assert again.assumed and again.seconds() == pytest.approx(again.evaluations * 0.28)
    assert [s.evaluations for s in again.stages[1:]] == [s.evaluations / 2 for s in result.stages[1:]]  # per copy


def test_a_probe_that_fails_says_the_pipelines_message_before_any_stage(dit, tmp_path, monkeypatch):
    real = SamplingDriver.sample

    def sample(self, conditions, seeds, trajectory=False):
        if self.num_steps == 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore lines")
        return real(self, conditions, seeds, trajectory)

    monkeypatch.setattr(SamplingDriver, "sample", sample)
    with pytest.raises(InvalidInputError, match=r"fails a 2-step probe call.*CUDA out of memory\. Tried.*GiB$"):
        Fit(dit, tmp_path / "out", None, _config(), progress=False)
    assert not any((tmp_path / "out" / name).exists() for name in ("work", CONFIG_FILE, "conditions.json"))


def test_the_policy_is_scored_whole_at_every_count_the_gate_serves():
    assert policy_gate_counts(FitConfig()) == gate_counts(FitConfig()) == [20, 50, 100]
    assert policy_gate_counts(FitConfig(policy_steps=[30], gate_steps=[50])) == [30, 50]
    assert policy_gate_counts(FitConfig.for_smoke()) == [10]

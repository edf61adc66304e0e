"""`cachepilot fit` end to end on tiny random diffusers pipelines of every supported family, built offline
and loaded through the same loader users call; then `enable(checkpoint=...)` on the same pipeline, and the
checkpoint refused on another model."""

import json

import pytest
import torch

import cachepilot
from cachepilot import CheckpointError, InvalidInputError
from cachepilot.driver import SamplingDriver
from cachepilot.loading import load_pipeline
from cachepilot.predictors.gated import SCHEDULE_CHOICES
from cachepilot.train.fit import FitConfig, fit

from ..tiny_pipelines import build_tiny_pipeline, call_kwargs, example_condition

PROMPTS = ["a red circle", "a blue square", "a small green star", "a big yellow ring", "a black cross",
           "a white dot above a red line", "an orange triangle", "a purple circle below a blue square"]


def _prompts_file(tmp_path, family):
    path = tmp_path / "prompts.txt"
    if family == "dit":
        return None  # class-conditional: every class of the pipeline
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


@pytest.mark.parametrize("family", ["flux", "sd3", "pixart-sigma", "dit"])
def test_fit_end_to_end_then_enable_the_checkpoint(family, tmp_path):
    pipe = load_pipeline(build_tiny_pipeline(family, tmp_path / "pipe"))
    kwargs = {k: v for k, v in call_kwargs(family).items() if k != "num_inference_steps"}
    # a margin no policy misses: the learned policy ships (the searched one: see the test below)
    config = FitConfig.for_smoke(steps=6, call_kwargs=kwargs, search_samples=2, bench_samples=2, targets=[0.5],
                             policy_margin=-1000.0)
    out = tmp_path / "cache"
    record = fit(pipe, out, _prompts_file(tmp_path, family), config, progress=False)
    assert set(record["stage_seconds"]) == {"collect", "predictors", "gate", "schedules", "policy", "policy_gate",
                                            "bench"}
    for path in ("policy/config.json", "predictors/config.json", "predictors/forecaster_gate.json",
                 "searched_schedules.json", "conditions.json",
                 "bench/results.json", "README.md", "cachepilot_config.json"):
        assert (out / path).exists(), path
    assert (out / "README.md").read_text().startswith("# SMOKE FIT")  # a toy fit never reads as a broken product
    split = json.loads((out / "conditions.json").read_text())
    if family != "dit":  # prompts: evaluation prompts were never trained on
        train = {json.dumps(c, sort_keys=True) for c in split["train"]["conditions"]}
        assert not train & {json.dumps(c, sort_keys=True) for c in split["evaluation"]["conditions"]}
    rows = json.loads((out / "bench" / "results.json").read_text())
    learned = [r for r in rows if r["method"] == "learned-policy"]
    assert learned and all(0 < r["compute_fraction"] < 1 and r["psnr"] > 0 for r in learned)

    # a second run finds every stage complete and recomputes nothing
    again = fit(pipe, out, _prompts_file(tmp_path, family), config, progress=False)
    assert again["stage_seconds"] == record["stage_seconds"]

    driver = SamplingDriver(pipe, 6, kwargs)
    conditions = [example_condition(family, i) for i in range(2)]
    engine = cachepilot.enable(pipe, checkpoint=out, speed=0.5)
    assert engine.predictor.spec().startswith("gated:")  # the head with its calibrated fallback
    # and the forecaster chosen for the policy's own decisions at the fit's count, closed loop
    assert engine.predictor.schedules[6]["learned@0.5"] in SCHEDULE_CHOICES
    try:
        cached = driver.sample(conditions, [5, 6])
        stats = cachepilot.last_stats(pipe)
    finally:
        cachepilot.disable(pipe)
    assert stats.batch_size == 2 and stats.compute_fraction == pytest.approx(0.5)
    assert torch.isfinite(cached.images).all()


def test_a_checkpoint_is_refused_on_another_model(tmp_path):
    pipe = load_pipeline(build_tiny_pipeline("sd3", tmp_path / "sd3"))
    kwargs = call_kwargs("sd3")
    out = tmp_path / "cache"
    fit(pipe, out, _prompts_file(tmp_path, "sd3"),
        FitConfig.for_smoke(steps=5, call_kwargs=kwargs, search_samples=2, bench_samples=2, targets=[0.5]),
        progress=False)
    other = load_pipeline(build_tiny_pipeline("flux", tmp_path / "flux"))
    with pytest.raises(CheckpointError, match="backbone_class"):
        cachepilot.enable(other, checkpoint=out, speed=0.5)


def test_bad_input_fails_before_any_work(tmp_path, pipe):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(InvalidInputError, match="no conditions"):
        fit(pipe, tmp_path / "a", empty, FitConfig.for_smoke(), progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"class_labels": 1}\n{not json\n')
    with pytest.raises(InvalidInputError, match="line 2"):
        fit(pipe, tmp_path / "b", bad, FitConfig.for_smoke(), progress=False)
    with pytest.raises(InvalidInputError, match="rejects the condition.*unknown class id"):
        fit(pipe, tmp_path / "c", "classes:0-40", FitConfig.for_smoke(), progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InvalidInputError, match="cannot write"):
        fit(pipe, blocker / "out", None, FitConfig.for_smoke(), progress=False)
    assert not (tmp_path / "c" / "work").exists()


def test_policy_stage_trains_on_the_policy_step_counts(tmp_path, pipe, monkeypatch):
    """--policy-steps reaches the policy stage (collection and search stay at --steps); a fit directory
    written before the setting existed still resumes."""
    from cachepilot.driver import unhooked_twin
    from cachepilot.train import fit as fit_module, policy as policy_module

    seen = []
    monkeypatch.setattr(policy_module, "train_policy", lambda config, work, **kwargs: seen.append(config))
    monkeypatch.setattr(policy_module, "held_out_results", lambda *args, **kwargs: {})
    monkeypatch.setattr(policy_module, "export_policy", lambda *args, **kwargs: None)
    own = unhooked_twin(pipe)
    out = tmp_path / "cache"
    fit_module.Fit(own, out, None, FitConfig.for_smoke(steps=8, policy_steps=[6, 12]), progress=False)._stage_policy()
    assert seen[-1].step_counts == (6, 12) and seen[-1].batch_size == 12 and seen[-1].warm_start_episodes == 2
    fit_module.Fit(own, tmp_path / "plain", None, FitConfig.for_smoke(steps=8), progress=False)._stage_policy()
    assert seen[-1].num_steps == 8

    record = json.loads((out / fit_module.CONFIG_FILE).read_text())
    del record["fit"]["policy_steps"]  # as written before policy_steps existed
    (out / fit_module.CONFIG_FILE).write_text(json.dumps(record))
    fit_module.Fit(own, out, None, FitConfig.for_smoke(steps=8), progress=False)
    with pytest.raises(InvalidInputError, match="another fit"):
        fit_module.Fit(own, out, None, FitConfig.for_smoke(steps=8, policy_steps=[6, 12]), progress=False)
    with pytest.raises(InvalidInputError, match="policy_steps"):
        FitConfig.for_smoke(policy_steps=[2, 6]).check()
    fit_module.Fit(own, tmp_path / "pooled", None, FitConfig.for_smoke(steps=8, policy_seed_pool=2),
                   progress=False)._stage_policy()
    assert seen[-1].seed_pool == 2 and seen[-1].training_seeds == (200_000, 200_002)
    with pytest.raises(InvalidInputError, match="fit: policy setting seed_pool"):
        FitConfig.for_smoke(policy_seed_pool=0).check()


def test_fit_cli_passes_policy_steps(tmp_path, monkeypatch):
    from cachepilot import cli
    from cachepilot.train import fit as fit_module

    seen = []

    def fake_fit(pipe, out, prompts, config):
        seen.append(config)
        return {"stage_seconds": {}}

    monkeypatch.setattr(fit_module, "fit", fake_fit)
    base = ["fit", "--out", str(tmp_path / "o"), "--smoke", "--steps", "8"]
    assert cli.main(base + ["--policy-steps", "6", "12"]) == 0
    assert seen[-1].steps == 8 and seen[-1].policy_steps == [6, 12]
    assert cli.main(base) == 0
    assert seen[-1].policy_steps is None


def test_fit_cli_plan_and_budget(tmp_path, monkeypatch, capsys):
    """--plan prints the plan and fits nothing; --budget reaches the config; a malformed one is one line."""
    from cachepilot import cli
    from cachepilot.train import fit as fit_module

    fitted, planned = [], []
    monkeypatch.setattr(fit_module, "fit", lambda pipe, out, prompts, config: fitted.append(config) or
                        {"stage_seconds": {}})
    monkeypatch.setattr(fit_module, "plan", lambda pipe, prompts, config: planned.append(config))
    base = ["fit", "--out", str(tmp_path / "o"), "--smoke", "--steps", "8"]
    assert cli.main(base + ["--plan", "--budget", "90m"]) == 0
    assert planned[-1].budget == "90m" and not fitted and not (tmp_path / "o").exists()
    assert cli.main(base + ["--budget", "200000"]) == 0
    assert fitted[-1].budget == "200000"
    capsys.readouterr()
    assert cli.main(base + ["--budget", "90 minutes"]) != 0
    err = capsys.readouterr().err.strip()
    assert "budget '90 minutes'" in err and "\n" not in err and not fitted[1:]


def test_a_policy_that_does_not_beat_the_searched_schedule_ships_the_schedule(tmp_path):
    """The policy stage compares the learned policy with the searched schedule on the validation conditions
    (paired, at every target); below the margin (forced here: 1000 dB) the checkpoint records it and ships the
    searched schedule: `enable(checkpoint=...)` gives the searched schedule's images exactly, the policy gate and the
    bench score it once (no learned-policy row), and the README says so."""
    from cachepilot.cache_checkpoint import CacheCheckpoint, SearchedSchedulePolicy

    pipe = load_pipeline(build_tiny_pipeline("dit", tmp_path / "pipe"))
    kwargs = {k: v for k, v in call_kwargs("dit").items() if k != "num_inference_steps"}
    config = FitConfig.for_smoke(steps=6, call_kwargs=kwargs, search_samples=2, bench_samples=2, targets=[0.5],
                             policy_margin=1000.0)
    out = tmp_path / "cache"
    record = fit(pipe, out, None, config, progress=False)
    selection = json.loads((out / "policy" / "config.json").read_text())["selection"]
    assert selection["kind"] == "searched" and set(selection["validation"]) == {"0.5"}
    for row in selection["validation"].values():  # paired figures of both, at every fit target
        assert row["gain_db"] == pytest.approx(row["learned_psnr"] - row["searched_psnr"], abs=2e-3)
    assert selection["gain_db"] <= 1000.0
    cache = CacheCheckpoint(out)
    masks = cache.schedules().masks()
    assert isinstance(cache.policy(0.5), SearchedSchedulePolicy) and cache.policy(0.5).spec() == "schedule:" + masks[0.5]
    assert not isinstance(cache.policy(0.5, actor=True), SearchedSchedulePolicy)  # the actor, to measure it

    driver = SamplingDriver(pipe, 6, kwargs)
    conditions, seeds = [example_condition("dit", i) for i in range(3)], [5, 6, 7]
    images = {}
    for name, arguments in (("checkpoint", dict(checkpoint=out, speed=0.5)),
                            ("schedule", dict(policy="schedule:" + masks[0.5], predictor=cache.predictor_spec()))):
        cachepilot.enable(pipe, **arguments)
        try:
            images[name] = driver.sample(conditions, seeds).images
        finally:
            cachepilot.disable(pipe)
    assert torch.equal(images["checkpoint"], images["schedule"])

    gate = json.loads((out / "predictors" / "forecaster_gate.json").read_text())["schedules"]["6"]
    # the masks the schedules stage chose among (the shipped ones among them), not the unused policy's schedules
    choice = cache.schedules().settings["mask_choice"]["targets"]
    candidates = {f"schedule:{c['mask']}" for by in choice.values() for c in by["candidates"].values()}
    assert set(gate) == candidates and {f"schedule:{m}" for m in masks.values()} <= candidates
    rows = json.loads((out / "bench" / "results.json").read_text())
    assert "learned-policy" not in {r["method"] for r in rows} and "searched-schedule" in {r["method"] for r in rows}
    planned = record["plan"]["stages"]
    # (the shipped masks were scored whole when the schedules stage chose them: a policy gate with nothing left)
    assert "policy_gate" not in record["cost"]
    assert all(record["cost"][s]["evaluations"] <= planned[s]["evaluations"] for s in ("schedules", "policy", "bench"))
    readme = (out / "README.md").read_text()
    assert "did not beat the searched schedule on validation" in readme and "ships the searched schedule" in readme

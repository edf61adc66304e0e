"""A fit records the scheduler it was fitted with, so `enable(checkpoint=...)` can tell a pipeline running
another one (see tests/cachepilot/test_scheduler_mismatch.py)."""

import json

from diffusers import DPMSolverMultistepScheduler

from cachepilot.cache_checkpoint import CacheCheckpoint
from cachepilot.loading import load_pipeline
from cachepilot.runtime.fingerprint import scheduler_fingerprint
from cachepilot.train.fit import CONFIG_FILE, Fit, FitConfig

from ..tiny_pipelines import build_tiny_pipeline, call_kwargs


def test_the_fit_record_holds_the_scheduler_fingerprint(tmp_path):
    dit = load_pipeline(build_tiny_pipeline("dit", tmp_path / "pipe"))
    kwargs = {k: v for k, v in call_kwargs("dit").items() if k != "num_inference_steps"}
    Fit(dit, tmp_path / "out", None, FitConfig.for_smoke(steps=6, call_kwargs=kwargs, search_samples=2,
                                                       bench_samples=2, targets=[0.5]), progress=False)
    stored = json.loads((tmp_path / "out" / CONFIG_FILE).read_text())
    assert stored["scheduler"] == scheduler_fingerprint(dit.scheduler)
    assert stored["scheduler"]["scheduler_class"] == type(dit.scheduler).__name__
    checkpoint = CacheCheckpoint(tmp_path / "out")
    assert checkpoint.scheduler_differences(dit.scheduler) == []
    assert checkpoint.scheduler_differences(DPMSolverMultistepScheduler.from_config(dit.scheduler.config)) == [
        "scheduler_class"]

"""`cachepilot fit`: the whole recipe on a user's pipeline, one stage after another, each resumable.

conditions -> collect -> predictors -> forecaster gate -> schedule search -> policy -> export -> the policy's
forecaster choice -> bench report, written to one
cache checkpoint directory that `cachepilot.enable(pipe, checkpoint=DIR, speed=0.3)` loads:

    DIR/cachepilot_config.json   backbone and scheduler fingerprints, steps, call kwargs, condition split, stage timings
    DIR/conditions.json          train / validation / evaluation conditions (figures are on evaluation only)
    DIR/predictors/              the learned forecaster head, and its gate (learned vs. Taylor per step count
                                 and spacing, and for the policy's and searched schedules as a whole, measured
                                 closed loop: the forecaster never behind Taylor)
    DIR/searched_schedules.json  the best fixed schedule per budget (the policy's prior and its baseline)
    DIR/policy/                  the exported actor
    DIR/bench/                   results.json / results.md / pareto.png on the evaluation conditions
    DIR/README.md                model, conditions, budgets and figures
    DIR/work/                    resumable intermediate state (collection shards, Lightning and PPO checkpoints)

A stage whose output is complete is skipped, so an interrupted fit resumes where it stopped. `smoke=True`
runs every stage at toy sizes: the plumbing on a user's model in minutes before a long GPU run.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from cachepilot import seeds
from cachepilot.bench.counting import StackCounter
from cachepilot.cache_checkpoint import CacheCheckpoint
from cachepilot.conditions import ConditionSet, ConditionSplit, pipeline_conditions, split_conditions
from cachepilot.outputs import check_output_dir
from cachepilot.driver import SamplingDriver
from cachepilot.errors import InvalidInputError
from cachepilot.runtime.fingerprint import backbone_fingerprint, scheduler_fingerprint
from cachepilot.searched import SearchedSchedules
from cachepilot.train import distributed
from cachepilot.train.budget import budget_evaluations, parse_budget, size_to_budget
from cachepilot.train.plan import (PROBE_BATCH, FitPlan, Probe, gate_counts, plan_fit, policy_gate_counts,
                                   probe_pipeline)

CONFIG_FILE = "cachepilot_config.json"
FORMAT_VERSION = 1
RECIPES = ("full", "lean")
FULL_STAGES = ("collect", "predictors", "gate", "schedules", "policy", "policy_gate", "bench")
LEAN_STAGES = ("schedules", "bench")
console = Console(stderr=True)


@dataclass
class FitConfig:
    steps: int = 50
    call_kwargs: dict = field(default_factory=dict)
    targets: list[float] = field(default_factory=lambda: [0.2, 0.3, 0.4, 0.5])
    collect_samples: int = 256
    collect_policies: list[str] = field(default_factory=lambda: ["always", "fixed:3", "fixed:5"])
    collect_shards: int = 6
    predictor_steps: int = 3000        # round 0: on the collection above
    dagger_policies: list[str] = field(default_factory=lambda: ["always", "fixed:2", "fixed:3", "fixed:5",
                                                                 "threshold:0.05"])
    dagger_steps: int = 5000           # round 1: collection + trajectories forecast with the round-0 head
    predictor_patience: int | None = 3  # each round stops after this many validations (every 500 steps) without a
                                        # lower validation error, and keeps its best validated head (None: never
                                        # early)
    search_samples: int = 16
    select_samples: int = 0            # >0: the search's starts and path scored again on this many other training
                                       # samples, the best there kept (on the scenes model: +1.0 dB held-out at
                                       # 20 steps / 0.5, -1.2 at 50 steps / 0.2, so off by default)
    taylor_masks: bool = True          # the search's 3 best starts under Taylor-1 compete with the head's searched
                                       # mask, the best with its best forecaster on the gate's samples kept
                                       # (`train.mask_choice`)
    policy_timesteps: int = 100_000
    policy_envs: int = 16
    policy_lr: float = 1e-4
    policy_margin: float = 0.1         # dB: the learned policy ships only when its mean PSNR over the searched
                                       # schedules at the fit's targets (validation conditions, held-out seeds)
                                       # is above this; else the checkpoint ships the searched schedules
    policy_seed_pool: int | None = None  # K: the policy's episodes draw noise from K seeds, references kept (see
                                         # `PolicyConfig.seed_pool`); None: fresh seeds, a reference run per sample
    policy_steps: list[int] | None = None  # step counts the policy trains on (None: [steps]); the rest runs at steps
    gate_steps: list[int] | None = None  # step counts the forecaster gate is calibrated at (None: steps, policy_steps,
                                         # 20, 50, 100); a call at another count uses the nearest
    bench_samples: int = 64
    bench_repeats: int = 3
    batch_size: int = 64
    seed: int = 0
    budget: str | None = None          # transformer evaluations ("200000") or a duration ("1h", "90m"): every size
                                       # scaled down to fit it (`train.budget`)
    smoke: bool = False                # toy sizes (`for_smoke()`): the checkpoint's README says so first
    recipe: str = "full"               # "full": every stage; "lean": the searched schedules with a training-free
                                       # forecaster chosen on a few references, then the bench (`train.lean`,
                                       # `lean()`): no head, no policy

    @classmethod
    def lean(cls, **overrides: Any) -> "FitConfig":
        """The lean recipe at its sizes: 4 search samples, a bench of 4 samples timed once against full compute."""
        return cls(**{**dict(recipe="lean", search_samples=4, bench_samples=4, bench_repeats=1), **overrides})

    @property
    def stages(self) -> tuple[str, ...]:
        return LEAN_STAGES if self.recipe == "lean" else FULL_STAGES

    @classmethod
    def for_smoke(cls, **overrides: Any) -> "FitConfig":
        """Every stage at toy sizes (a few minutes on 2 CPU cores for a tiny model)."""
        sizes = {**dict(steps=10, targets=[0.3, 0.5], collect_samples=4, collect_policies=["always", "fixed:2"],
                        collect_shards=1, predictor_steps=20, dagger_policies=["fixed:2"], dagger_steps=20,
                        search_samples=4, select_samples=4, policy_timesteps=80,
                        policy_envs=4, bench_samples=4, bench_repeats=1, batch_size=8), **overrides}
        sizes.setdefault("gate_steps", [sizes["steps"]])  # the gate at the fit's own count only
        return cls(**{"smoke": True, **sizes})

    def check(self) -> None:
        for name in ("steps", "collect_samples", "collect_shards", "predictor_steps", "dagger_steps", "search_samples",
                     "policy_timesteps", "policy_envs", "bench_samples", "bench_repeats", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"fit: {name} must be an integer >= 1, got {value!r}")
        margin = self.policy_margin
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
            raise InvalidInputError(f"fit: policy_margin must be a finite number of dB, got {margin!r}")
        if isinstance(self.select_samples, bool) or not isinstance(self.select_samples, int) or self.select_samples < 0:
            raise InvalidInputError(f"fit: select_samples must be an integer >= 0, got {self.select_samples!r}")
        if not isinstance(self.taylor_masks, bool):
            raise InvalidInputError(f"fit: taylor_masks must be true or false, got {self.taylor_masks!r}")
        if self.recipe not in RECIPES:
            raise InvalidInputError(f"fit: recipe must be one of {RECIPES}, got {self.recipe!r}")
        if self.recipe != "lean" and distributed.launched()[1] > 1:
            raise InvalidInputError("fit: under torchrun only --recipe lean runs (every rank scores its share of the "
                                    "candidates); the full recipe's head and PPO train in one process: shard its "
                                    "stages with collect, search-schedule and calibrate-forecaster under torchrun")
        if self.budget is not None:
            parse_budget(self.budget)  # a malformed budget: one line, before any work
        patience = self.predictor_patience
        if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
            raise InvalidInputError(f"fit: predictor_patience must be None or an integer >= 1, got {patience!r}")
        if self.policy_seed_pool is not None:  # before any stage runs, not at the policy stage
            from cachepilot.train.policy import PolicyConfig

            try:
                PolicyConfig(seed_pool=self.policy_seed_pool).check()
            except InvalidInputError as err:
                raise InvalidInputError(f"fit: {err}") from None
        if self.steps < 4:
            raise InvalidInputError(f"fit: steps must be >= 4 for a cache to have anything to skip, got {self.steps}")
        if self.policy_steps is not None and (
                not isinstance(self.policy_steps, list) or not self.policy_steps
                or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 4 for n in self.policy_steps)):
            raise InvalidInputError(f"fit: policy_steps must be a list of step counts >= 4, got {self.policy_steps!r}")
        if self.gate_steps is not None and (
                not isinstance(self.gate_steps, list) or not self.gate_steps
                or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 4 for n in self.gate_steps)):
            raise InvalidInputError(f"fit: gate_steps must be a list of step counts >= 4, got {self.gate_steps!r}")
        if not self.targets or not all(0 < t < 1 for t in self.targets):
            raise InvalidInputError(f"fit: targets must be compute fractions in (0, 1), got {self.targets}")


def policy_config(config: FitConfig, predictor: str, prior: str):
    """The policy stage's PPO settings (smoke sizes below 2,000 timesteps); the plan counts its episodes from it."""
    from cachepilot.train.policy import PolicyConfig

    low, high = min(config.targets), max(config.targets)
    counts = tuple(config.policy_steps or [config.steps])
    policy = PolicyConfig(num_envs=config.policy_envs, num_steps=counts[0] if len(counts) == 1 else counts,
                          total_timesteps=config.policy_timesteps,
                          targets=(max(0.05, low - 0.05), min(0.95, high + 0.05)),
                          predictor=predictor, prior=prior, warm_start=True, seed=config.seed,
                          learning_rate=config.policy_lr, seed_pool=config.policy_seed_pool,
                          eval_samples=min(16, max(2, config.bench_samples)), eval_targets=tuple(config.targets))
    if config.policy_timesteps < 2_000:  # smoke sizes
        policy = replace(policy, rollout_episodes=1, batch_size=max(counts), n_epochs=1,
                         checkpoint_every=config.policy_timesteps, eval_every=config.policy_timesteps,
                         warm_start_episodes=len(counts), warm_start_epochs=5)
    return policy


def _check_pipeline_call(driver: SamplingDriver, split: ConditionSplit) -> None:
    """Every condition through a 1-step call (batched): a condition the pipeline rejects fails here, with the
    pipeline's own message, before any work."""
    probe = SamplingDriver(driver.pipe, 1, driver.call_kwargs, batch_size=driver.batch_size)
    every = list(dict.fromkeys(json.dumps(c, sort_keys=True) for part in (split.train, split.validation,
                                                                          split.evaluation) for c in part.conditions))
    every = [json.loads(c) for c in every]
    for start in range(0, len(every), driver.batch_size):
        batch = every[start:start + driver.batch_size]
        try:
            probe.sample(batch, list(range(len(batch))))
        except (TypeError, ValueError) as err:
            raise InvalidInputError(f"{type(driver.pipe).__name__} rejects the condition(s) {start + 1}..{start + len(batch)} "
                                    f"(first: {batch[0]}): {err}".splitlines()[0]) from None


def _distinct(split: ConditionSplit) -> int:
    """The distinct conditions of all parts (each checked with one 1-step call before any stage)."""
    return len({json.dumps(c, sort_keys=True) for part in (split.train, split.validation, split.evaluation)
                for c in part.conditions})


def sized_config(config: FitConfig, probe: Probe, num_conditions: int) -> FitConfig:
    """`config` with its sizes scaled to its budget (evaluations, or a duration at the probe's pace)."""
    evaluations = budget_evaluations(config.budget, probe.seconds_per_evaluation)
    return size_to_budget(config, evaluations, lambda c: plan_fit(c, probe=probe, num_conditions=num_conditions)
                          .evaluations, config.budget)


def plan(pipe, prompts: str | Path | ConditionSet | None = None, config: FitConfig | None = None) -> FitPlan:
    """`cachepilot fit --plan`: what the fit would spend per stage (its budget applied), printed; writes nothing."""
    config = config or FitConfig()
    config.check()
    split = split_conditions(pipeline_conditions(pipe, prompts), seed=config.seed)
    with torch.inference_mode(False):
        probe = probe_pipeline(pipe, config.call_kwargs, split.train.conditions[0],
                               min(PROBE_BATCH, config.batch_size))
    if config.budget is not None:
        config = sized_config(config, probe, _distinct(split))
    result = plan_fit(config, probe=probe, num_conditions=_distinct(split))
    console.print(result.table(), soft_wrap=True, markup=False, highlight=False)
    return result


class Fit:
    """The stages of one fit; `run()` runs those whose output is not complete yet."""

    def __init__(self, pipe, out: Path, prompts: str | Path | ConditionSet | None = None,
                 config: FitConfig | None = None, progress: bool = True):
        self.pipe, self.out, self.config, self.progress = pipe, Path(out), config or FitConfig(), progress
        self.config.check()
        self.rank = distributed.setup()[0]
        check_output_dir(self.out)
        self.work = self.out / "work"
        self.requested = self.config
        self.driver = SamplingDriver(pipe, self.config.steps, self.config.call_kwargs, self.config.batch_size)
        tic = time.perf_counter()
        with StackCounter(pipe.transformer) as counter:  # the conditions' check and the probe, before any stage
            self.split = self._split(pipeline_conditions(pipe, prompts))
            self.probe = probe_pipeline(pipe, self.config.call_kwargs, self.split.train.conditions[0],
                                        min(PROBE_BATCH, self.config.batch_size))
        distributed.barrier()  # every rank has read a stored split before rank 0 writes a new one
        distributed.on_rank_zero(self._write_conditions)
        stored = self._stored_record()
        if self.config.budget is not None:  # resumed with the same budget: the sizes it chose then
            self.config = (FitConfig(**stored["fit"]) if stored.get("budget") == self.config.budget
                           and isinstance(stored.get("fit"), dict)
                           else sized_config(self.config, self.probe, _distinct(self.split)))
            self.driver = SamplingDriver(pipe, self.config.steps, self.config.call_kwargs, self.config.batch_size)
        self.plan = plan_fit(self.config, probe=self.probe, num_conditions=_distinct(self.split))
        self._say(self.plan.table(), soft_wrap=True, markup=False, highlight=False)
        self.record = self._read_record(stored)
        self._add_cost("check", counter.evaluations, time.perf_counter() - tic)
        self._save_record()

    # -- bookkeeping ---------------------------------------------------------------------------------------
    def _say(self, *args: Any, **kwargs: Any) -> None:
        if self.rank == 0:  # under torchrun rank 0 alone prints
            console.print(*args, **kwargs)

    def _write_conditions(self) -> None:
        """Once the checks and the probe passed (a fit refused so far leaves nothing behind)."""
        if not (self.out / "conditions.json").exists():
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "conditions.json").write_text(json.dumps(self.split.to_json(), indent=2))

    def _split(self, conditions: ConditionSet) -> ConditionSplit:
        path = self.out / "conditions.json"
        split = split_conditions(conditions, seed=self.config.seed)
        if path.exists():
            stored = ConditionSplit.from_json(json.loads(path.read_text()))
            if stored.to_json() != split.to_json():
                raise InvalidInputError(f"{self.out} was fitted on other conditions: use another --out, or the "
                                        "same prompts to resume")
        else:
            _check_pipeline_call(self.driver, split)  # written once the probe passed too (`__init__`)
        return split

    def _stored_record(self) -> dict:
        path = self.out / CONFIG_FILE
        stored = json.loads(path.read_text()) if path.exists() else {}
        for key in ("fit", "requested"):  # settings added since that fit have their defaults there
            if isinstance(stored.get(key), dict):
                stored[key] = {**asdict(FitConfig()), **stored[key]}
        return stored

    def _read_record(self, stored: dict) -> dict:
        record = {
            "format_version": FORMAT_VERSION, "pipeline_class": type(self.pipe).__name__,
            "backbone": backbone_fingerprint(self.pipe.transformer), "num_steps": self.config.steps,
            "scheduler": scheduler_fingerprint(getattr(self.pipe, "scheduler", None)),
            "call_kwargs": self.config.call_kwargs, "budget": self.config.budget,
            "requested": asdict(self.requested), "fit": asdict(self.config),
            "conditions": {name: len(getattr(self.split, name)) for name in ("train", "validation", "evaluation")},
            "split_by": self.split.by, "plan": self.plan.to_json(), "stage_seconds": {}, "cost": {},
        }
        if stored:
            stored.setdefault("requested", stored.get("fit"))  # a fit written before budgets: as requested
            # a budgeted fit compares the settings asked for: the sizes its budget chose are kept from then
            for key in ("backbone", "num_steps", "call_kwargs", "budget", "requested" if self.config.budget else "fit"):
                if stored.get(key) != record[key]:
                    raise InvalidInputError(f"{self.out} holds a fit with another {key}: use another --out, or the "
                                            "same settings to resume")
            record["stage_seconds"] = stored.get("stage_seconds", {})
            record["cost"] = stored.get("cost", {})  # resumed stages keep what they spent
        return record

    def _add_cost(self, stage: str, evaluations: float, seconds: float) -> None:
        """A stage's block-stack evaluations of one sample (CFG copies included; under torchrun summed over the
        ranks) and wall seconds, added to what an interrupted run of it spent before."""
        evaluations = distributed.total(evaluations)
        before = self.record["cost"].get(stage, {"evaluations": 0, "seconds": 0.0})
        self.record["cost"][stage] = {"evaluations": round(before["evaluations"] + evaluations, 3),
                                      "seconds": round(before["seconds"] + seconds, 2)}

    def _save_record(self) -> None:
        if self.rank == 0:
            (self.out / CONFIG_FILE).write_text(json.dumps(self.record, indent=2))

    def _done(self, stage: str) -> bool:
        return {
            "collect": lambda: all((self.work / "collect" / "shards" / f"shard-{s:05d}-of-{self.config.collect_shards:05d}"
                                    / "dataset_info.json").exists() for s in range(self.config.collect_shards)),
            "predictors": lambda: (self.out / "predictors" / "config.json").exists(),
            "gate": lambda: self._gate_left() == [],
            "schedules": lambda: self._schedules_left() == [] and not self._masks_to_choose(),
            "policy": lambda: (self.out / "policy" / "config.json").exists(),
            "policy_gate": lambda: self._policy_gate_left() == [],
            "bench": lambda: (self.out / "bench" / "results.json").exists(),
        }[stage]()

    def run(self, stages: tuple[str, ...] | None = None) -> dict:
        """Run the stages (default: the recipe's) whose output is incomplete; returns the checkpoint record."""
        total = len(self.config.stages)
        for index, stage in enumerate(stages or self.config.stages, 1):
            if self._done(stage):
                self._say(f"[{index}/{total}] {stage}: complete, skipped")
                continue
            self._say(f"[{index}/{total}] {stage} ...")
            tic = time.perf_counter()
            counter = StackCounter(self.pipe.transformer)
            try:
                with counter:
                    if stage == "bench":  # rank 0 alone (its timings on one device); the others wait for it
                        distributed.on_rank_zero(self._stage_bench)
                    else:
                        getattr(self, f"_stage_{stage}")()
            finally:  # an interrupted stage keeps what it spent: its resumed run adds to it
                seconds = time.perf_counter() - tic
                self._add_cost(stage, counter.evaluations, seconds)
                self._save_record()
            self.record["stage_seconds"][stage] = round(seconds + self.record["stage_seconds"].get(stage, 0.0), 2)
            self._save_record()
            self._say(f"[{index}/{total}] {stage}: done in {seconds:.1f} s, "
                      f"{self.record['cost'][stage]['evaluations']:,.0f} transformer evaluations")
        if (self.out / "bench" / "results.json").exists():
            from cachepilot.bench.fit_report import write_readme

            distributed.on_rank_zero(write_readme, self.pipe, self.out)
        return self.record

    # -- stages --------------------------------------------------------------------------------------------
    def _collect_config(self, policies: list[str], predictor: str):
        from cachepilot.train.collect import CollectConfig

        return CollectConfig(samples_per_policy=self.config.collect_samples, steps=self.config.steps,
                             call_kwargs=self.config.call_kwargs, conditions=list(self.split.train.conditions),
                             policies=list(policies), predictor=predictor, num_shards=self.config.collect_shards,
                             batch_size=self.config.batch_size)

    def _stage_collect(self) -> None:
        from cachepilot.train.collect import collect

        collect(self.pipe, self.work / "collect", self._collect_config(self.config.collect_policies, "taylor:1"),
                progress=self.progress)

    def _train_head(self, data: list[Path], out: Path, work: Path, steps: int) -> None:
        from cachepilot.train.predictors import PredictorConfig, train_predictors

        if (out / "config.json").exists():
            return
        from cachepilot.train.collect import load_collection

        # the training rows (the data module holds out samples with sample % 10 == 0); a batch larger than
        # them would run zero optimisation steps, which the trainer refuses: smoke sizes shrink the batch
        rows = sum(int((torch.as_tensor(load_collection(d).with_format("numpy")["sample"]) % 10 != 0).sum())
                   for d in data)
        config = PredictorConfig(max_steps=steps, val_every=max(1, min(500, steps)),
                                 patience=self.config.predictor_patience)
        config.batch_size = max(1, min(config.batch_size, rows))
        accelerator = "gpu" if self.pipe.device.type == "cuda" else "cpu"
        train_predictors(data, out, work, config, resume=(work / "last.ckpt").exists(), accelerator=accelerator,
                         progress=self.progress)

    def _stage_predictors(self) -> None:
        """Round 0 on the collection; then one DAgger round: trajectories sampled while forecasting with the
        round-0 head (the states the cached sampler really visits), and the final head on both."""
        from cachepilot.train.collect import collect, reuse_step_weights

        round0 = self.work / "predictors-r0" / "head"
        self._train_head([self.work / "collect"], round0, self.work / "predictors-r0", self.config.predictor_steps)
        dagger = self.work / "collect-dagger"
        config = self._collect_config(self.config.dagger_policies, f"learned:{round0}")
        # the same pipeline, steps, call kwargs and conditions as round 0: its step weights, not computed again
        reuse_step_weights(self.work / "collect", dagger, config, self.pipe)
        collect(self.pipe, dagger, config, progress=self.progress)
        self._train_head([self.work / "collect", dagger], self.out / "predictors", self.work / "predictors-r1",
                         self.config.dagger_steps)

    def _gate_counts(self) -> list[int]:
        return gate_counts(self.config)

    def _gate_left(self) -> list[int]:
        from cachepilot.predictors.gated import GATE_FILE

        path = self.out / "predictors" / GATE_FILE
        done = json.loads(path.read_text())["counts"] if path.exists() else {}
        return [n for n in self._gate_counts() if str(n) not in done]

    def _stage_gate(self) -> None:
        from cachepilot.train.calibrate_forecaster import calibrate_gate

        calibrate_gate(self.pipe, self.out / "predictors", list(self.split.train.conditions), self._gate_counts(),
                       samples=self.config.search_samples, call_kwargs=self.config.call_kwargs,
                       out=self.out / "predictors", progress=self.progress)

    def _forecaster(self) -> str:
        """The head with its gate once calibrated (what `enable` loads), by the checkpoint's one rule."""
        return CacheCheckpoint(self.out).predictor_spec()

    def _schedules_path(self) -> Path:
        return CacheCheckpoint(self.out).schedules_path()

    def _schedules_left(self) -> list[float]:
        path = self._schedules_path()
        found = SearchedSchedules.read(path).schedules if path.exists() else {}
        return [t for t in self.config.targets if f"{t:g}" not in found]

    def _stage_schedules(self) -> None:
        if self.config.recipe == "lean":
            return self._stage_lean_schedules()
        from cachepilot.train.schedule_search import search_schedule

        path = self._schedules_path()
        record = SearchedSchedules.read(path) if path.exists() else SearchedSchedules(
            self.config.steps, self._forecaster(), settings={
                "samples": self.config.search_samples, "select_samples": self.config.select_samples,
                "seed": seeds.SEARCH})
        for target in self._schedules_left():  # one target at a time: an interruption keeps the ones found
            mask, score = search_schedule(self.driver, list(self.split.train.conditions), target,
                                          samples=self.config.search_samples, predictor=record.predictor,
                                          select_samples=self.config.select_samples,
                                          progress=self.progress)
            record.add(target, mask, score)
            record.write(path)
        if self._masks_to_choose():
            from cachepilot.train.mask_choice import choose_masks

            chosen = choose_masks(self.pipe, self.out / "predictors", path, list(self.split.train.conditions),
                                  self.config.call_kwargs, self.config.search_samples, self.config.batch_size,
                                  progress=self.progress)
            kept = {t: (c["kept"], c["candidates"][c["kept"]]) for t, c in chosen.items()}
            self._say("masks: " + ", ".join(f"{t}: {source}'s ({pair['forecaster']}, {pair['psnr']:.2f} dB)"
                                            for t, (source, pair) in kept.items()))

    def _masks_to_choose(self) -> bool:
        """The full recipe's choice between the head's masks and the best starts under Taylor-1
        (`train.mask_choice`), not made yet."""
        from cachepilot.train.mask_choice import CHOICE_KEY

        path = self._schedules_path()
        return (self.config.recipe == "full" and self.config.taylor_masks
                and (not path.exists() or CHOICE_KEY not in SearchedSchedules.read(path).settings))

    def _stage_lean_schedules(self) -> None:
        """The lean recipe's one search (`train.lean`): every target's mask, then its forecaster, all scored
        against one set of references; written once, each mask with its forecaster (what the checkpoint's
        `predictor_spec` then loads)."""
        from cachepilot.train.lean import LEAN_FORECASTERS, lean_search

        found = lean_search(self.driver, list(self.split.train.conditions), list(self.config.targets),
                            samples=self.config.search_samples)
        record = SearchedSchedules(self.config.steps, found.forecaster, settings={
            "samples": self.config.search_samples, "seed": seeds.SEARCH, "recipe": "lean",
            "forecasters": list(LEAN_FORECASTERS),
            "forecaster_scores": {f: {f"{t:g}": v for t, v in by.items()}
                                  for f, by in found.forecaster_scores.items()}})
        for target, (mask, score) in found.schedules.items():
            record.add(target, mask, score, predictor=found.forecasters[target])
        distributed.on_rank_zero(record.write, self._schedules_path())
        self._say("lean: forecasters " + ", ".join(f"{t:g}: {f}" for t, f in found.forecasters.items())
                      + " (each chosen on its target's searched mask)")

    def _stage_policy(self) -> None:
        """PPO from the searched schedules, then the choice of what ships: the policy where it beats them on the
        validation conditions (its final held-out evaluation, paired with theirs), else the searched schedules."""
        from cachepilot.train.policy import (_last_checkpoint, export_policy, held_out_results, policy_selection,
                                             train_policy)

        work = self.work / "policy"
        config = policy_config(self.config, self._forecaster(), str(self._schedules_path()))
        model = train_policy(config, work, resume=_last_checkpoint(work) is not None, progress=self.progress,
                             pipe=self.pipe, conditions=self.split.train, eval_conditions=self.split.validation,
                             call_kwargs=self.config.call_kwargs)
        results = held_out_results(work, model, self.pipe, config, self.split.validation, self.config.call_kwargs)
        selection = policy_selection(results, self.config.policy_margin)
        export_policy(model, self.out / "policy", self.pipe.transformer, config, selection=selection)
        console.print(f"policy: {selection['reason']}"
                      + ("; this checkpoint ships the searched schedule" if selection["kind"] == "searched" else ""))
        from cachepilot.api import disable

        disable(self.pipe)  # the env's hooks and class swap: later stages sample the plain pipeline

    def _policy_gate_left(self) -> list[str]:
        """The `learned@TARGET` schedules whose forecaster is not chosen yet at the policy's and the gate's step
        counts; for a checkpoint shipping its searched schedules, those schedules' masks at the fit's count."""
        from cachepilot.predictors.gated import GATE_FILE

        path = self.out / "predictors" / GATE_FILE
        done = (json.loads(path.read_text()).get("schedules") or {}) if path.exists() else {}
        if self._ships_searched():
            masks = SearchedSchedules.read(self._schedules_path()).masks().values()
            return [f"schedule:{m}" for m in masks if f"schedule:{m}" not in done.get(str(self.config.steps), {})]
        from cachepilot.policies.learned import SPEC_PREFIX

        return [f"{SPEC_PREFIX}{t:g}" for n in policy_gate_counts(self.config) for t in self.config.targets
                if f"{SPEC_PREFIX}{t:g}" not in done.get(str(n), {})]

    def _ships_searched(self) -> bool:
        return (self.out / "policy" / "config.json").is_file() and CacheCheckpoint(self.out).ships_searched

    def _stage_policy_gate(self) -> None:
        """The forecaster for the policy's decisions (and the searched masks) chosen on the whole schedule: the
        spacing table the policy trained with misjudges trajectories whose forecasts follow dense computes. At every
        count the gate serves, not only the policy's: left to the 20-step spacing table, the digits cache's policy lost
        1.3-2.4 dB held out at 20 steps. A checkpoint shipping its searched schedules scores those alone (the policy's
        decisions never run)."""
        from cachepilot.train.calibrate_forecaster import calibrate_gate

        searched = [f"searched:{self._schedules_path()}"]
        specs, counts = ((searched, [self.config.steps]) if self._ships_searched() else
                         ([f"learned:{t:g}" for t in self.config.targets] + searched, policy_gate_counts(self.config)))
        calibrate_gate(self.pipe, self.out / "predictors", list(self.split.train.conditions), self._gate_counts(),
                       samples=self.config.search_samples, call_kwargs=self.config.call_kwargs,
                       out=self.out / "predictors", progress=self.progress, schedules=specs,
                       schedule_counts=counts, policy_dir=self.out / "policy")

    def _stage_bench(self) -> None:
        from cachepilot.bench.fit_report import bench_checkpoint

        bench_checkpoint(self.pipe, self.out, self.split.evaluation, self.config)


def fit(pipe, out: Path, prompts: str | Path | ConditionSet | None = None, config: FitConfig | None = None,
        progress: bool = True) -> dict:
    """Run the whole recipe on `pipe` into the cache checkpoint directory `out` (see the module doc)."""
    with torch.inference_mode(False):
        return Fit(pipe, out, prompts, config, progress).run()

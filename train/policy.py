"""`cachepilot train policy` / `cachepilot export`: MaskablePPO over `CachingVecEnv`, exported to plain torch.

The SB3 zip in the work dir is a *training* checkpoint (periodic, `--resume` continues from the last
one); the release artefact is `export_policy`'s directory, loaded by `policies.learned.LearnedPolicy`
with no SB3 import.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback
from stable_baselines3.common.logger import configure

import cachepilot
from cachepilot.policies.learned import LearnedPolicy
from cachepilot.quality import psnr
from cachepilot.conditions import ConditionSet
from cachepilot.driver import SamplingDriver, unhooked_twin
from cachepilot.envs.vec_env import CachingVecEnv
from cachepilot.errors import CheckpointError
from cachepilot.embedded.digits.loading import load_pipeline
from cachepilot.policies.features import FEATURES
from cachepilot.policies.learned import FORMAT_VERSION
from cachepilot.policies.prior import SchedulePrior
from cachepilot.runtime.actions import Action
from cachepilot.runtime.fingerprint import backbone_fingerprint

CHECKPOINT_PREFIX = "ppo"


@dataclass
class PolicyConfig:
    num_envs: int = 16
    num_steps: int = 50
    total_timesteps: int = 200_000
    targets: tuple[float, float] = (0.15, 0.55)
    predictor: str = "learned"
    seeds: tuple[int, int] = (200_000, 300_000)  # training noise seeds: disjoint from bench and evaluate
    rollout_episodes: int = 2                      # PPO n_steps = rollout_episodes x num_steps per env
    batch_size: int = 400
    n_epochs: int = 10
    learning_rate: float = 3e-4
    gamma: float = 1.0                             # finite horizon; the shaping telescopes exactly
    gae_lambda: float = 0.95
    ent_coef: float = 0.01
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    checkpoint_every: int = 20_000
    eval_every: int = 25_000
    eval_targets: tuple[float, ...] = (0.2, 0.4)
    eval_samples: int = 16
    eval_seed: int = 400_000                        # held-out seeds: neither training (200k+) nor bench (20k+)
    prior: str | None = None                        # searched_schedules.json the policy observes (None: uniform)
    warm_start: bool = False                        # behaviour-clone the prior schedule before PPO
    warm_start_episodes: int = 8
    warm_start_epochs: int = 300
    seed: int = 0


class HeldOutEval(BaseCallback):
    """Every `eval_every` steps: the deterministic actor (exactly as exported) on held-out seeds, through
    the real pipeline on an unhooked twin; logs PSNR vs. full compute and compute fraction per target."""

    def __init__(self, pipe, config: PolicyConfig, conditions: ConditionSet, call_kwargs: dict | None = None):
        super().__init__()
        self.pipe = unhooked_twin(pipe)
        self.config, self.last = config, 0
        self.driver = SamplingDriver(self.pipe, config.num_steps, call_kwargs)
        self.conditions = [conditions.conditions[i % len(conditions)] for i in range(config.eval_samples)]
        self.seeds = [config.eval_seed + i for i in range(config.eval_samples)]
        self.reference = self.driver.sample(self.conditions, self.seeds).images

    def _on_step(self) -> bool:
        if self.num_timesteps - self.last >= self.config.eval_every:
            self.last = self.num_timesteps
            self.evaluate()
        return True

    def evaluate(self) -> dict[str, float]:
        state = actor_export(self.model, self.pipe.transformer, self.config)
        results = {}
        for target in self.config.eval_targets:
            cachepilot.enable(self.pipe, LearnedPolicy(state=state, target=target), self.config.predictor)
            try:
                images = self.driver.sample(self.conditions, self.seeds).images
                fraction = cachepilot.last_stats(self.pipe).compute_fraction
            finally:
                cachepilot.disable(self.pipe)
            results[f"eval/psnr_{target:g}"] = psnr(images, self.reference)
            results[f"eval/compute_fraction_{target:g}"] = fraction
        for key, value in results.items():
            self.logger.record(key, value)
        return results


def _prior(config: PolicyConfig) -> SchedulePrior:
    return SchedulePrior.from_file(config.prior) if config.prior else SchedulePrior()


def _last_checkpoint(work_dir: Path) -> Path | None:
    zips = sorted(work_dir.glob(f"{CHECKPOINT_PREFIX}_*_steps.zip"), key=lambda p: int(p.stem.split("_")[-2]))
    return zips[-1] if zips else None


def train_policy(config: PolicyConfig, work_dir: Path, resume: bool = False, progress: bool = True, pipe=None,
                 conditions: ConditionSet | None = None, eval_conditions: ConditionSet | None = None,
                 call_kwargs: dict | None = None):
    """PPO on `pipe` (default: the embedded digits one) over the training `conditions`; the periodic held-out
    evaluation samples `eval_conditions` (default: the training ones) with held-out seeds."""
    from sb3_contrib import MaskablePPO

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    pipe = pipe if pipe is not None else load_pipeline()
    env = CachingVecEnv(config.num_envs, pipe, num_steps=config.num_steps, predictor=config.predictor,
                        targets=tuple(config.targets), seeds=tuple(config.seeds), seed=config.seed,
                        prior=_prior(config), conditions=conditions, call_kwargs=call_kwargs)
    if resume:
        last = _last_checkpoint(work_dir)
        if last is None:
            raise FileNotFoundError(f"--resume: no {CHECKPOINT_PREFIX}_*_steps.zip checkpoint in {work_dir}")
        model = MaskablePPO.load(last, env=env)
    else:
        model = MaskablePPO(
            "MlpPolicy", env, n_steps=config.rollout_episodes * config.num_steps, batch_size=config.batch_size,
            n_epochs=config.n_epochs, learning_rate=config.learning_rate, gamma=config.gamma,
            gae_lambda=config.gae_lambda, ent_coef=config.ent_coef, seed=config.seed, verbose=0,
            policy_kwargs={"net_arch": list(config.net_arch), "activation_fn": torch.nn.Tanh},
        )
    model.set_logger(configure(str(work_dir / "logs"), ["csv"] + (["stdout"] if not progress else [])))
    if config.warm_start and not resume:
        from cachepilot.train.warm_start import behaviour_clone, prior_rollouts

        observations, actions, returns = prior_rollouts(env, config.warm_start_episodes, seed=config.seed)
        accuracy = behaviour_clone(model, observations, actions, returns, epochs=config.warm_start_epochs,
                                   progress=progress)
        model.logger.record("warm_start/accuracy", accuracy)
    (work_dir / "policy_config.json").write_text(json.dumps(asdict(config), indent=2))
    (work_dir / "backbone.json").write_text(json.dumps(backbone_fingerprint(pipe.transformer), indent=2))
    checkpoints = CheckpointCallback(max(config.checkpoint_every // config.num_envs, 1), str(work_dir),
                                     name_prefix=CHECKPOINT_PREFIX)
    evaluation = HeldOutEval(pipe, config, eval_conditions or env.conditions, call_kwargs)
    model.learn(config.total_timesteps, callback=[checkpoints, evaluation], progress_bar=progress,
                reset_num_timesteps=not resume)
    model.logger.record("time/total_timesteps", model.num_timesteps)
    for key, value in evaluation.evaluate().items():  # the final policy's figures, in the CSV too
        model.logger.record(key, value)
    model.logger.dump(model.num_timesteps)
    model.save(work_dir / f"{CHECKPOINT_PREFIX}_{model.num_timesteps}_steps")
    return model


def actor_export(model, transformer: torch.nn.Module | dict, config: PolicyConfig) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config, weights) of the actor path: mlp_extractor.policy_net then action_net, as the
    `nn.Sequential` that `policies.learned.build_actor` rebuilds (Linear layers at even indices)."""
    policy = model.policy
    layers = [m for m in policy.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear)]
    if len(layers) != len(config.net_arch):
        raise CheckpointError("the PPO actor does not match the configured net_arch")
    state = {}
    for i, layer in enumerate(layers + [policy.action_net]):
        state[f"{2 * i}.weight"] = layer.weight.detach().cpu().contiguous()
        state[f"{2 * i}.bias"] = layer.bias.detach().cpu().contiguous()
    return {
        "format_version": FORMAT_VERSION,
        "backbone": transformer if isinstance(transformer, dict) else backbone_fingerprint(transformer),
        "observation": list(FEATURES),
        "actions": [a.name for a in Action],
        "num_steps_range": [config.num_steps, config.num_steps],
        "targets_trained": list(config.targets),
        "predictor": config.predictor,
        "prior": _prior(config).to_dict(),
        "net_arch": list(config.net_arch),
        "activation": "tanh",
        "timesteps": int(model.num_timesteps),
    }, state


def export_policy(model, out_dir: Path, transformer: torch.nn.Module | dict, config: PolicyConfig) -> Path:
    """Write the actor as model.safetensors + config.json (a release artefact: no SB3 needed to load)."""
    policy_config, state = actor_export(model, transformer, config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out_dir / "model.safetensors"))
    (out_dir / "config.json").write_text(json.dumps(policy_config, indent=2))
    return out_dir

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
from stable_baselines3.common.callbacks import CheckpointCallback
from stable_baselines3.common.logger import configure

from cachepilot.envs.vec_env import CachingVecEnv
from cachepilot.errors import CheckpointError
from cachepilot.loading import load_pipeline
from cachepilot.policies.features import FEATURES
from cachepilot.policies.learned import FORMAT_VERSION
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
    seed: int = 0


def _last_checkpoint(work_dir: Path) -> Path | None:
    zips = sorted(work_dir.glob(f"{CHECKPOINT_PREFIX}_*_steps.zip"), key=lambda p: int(p.stem.split("_")[-2]))
    return zips[-1] if zips else None


def train_policy(config: PolicyConfig, work_dir: Path, resume: bool = False, progress: bool = True, pipe=None):
    from sb3_contrib import MaskablePPO

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    pipe = pipe if pipe is not None else load_pipeline()
    env = CachingVecEnv(config.num_envs, pipe, num_steps=config.num_steps, predictor=config.predictor,
                        targets=tuple(config.targets), seeds=tuple(config.seeds), seed=config.seed)
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
    (work_dir / "policy_config.json").write_text(json.dumps(asdict(config), indent=2))
    checkpoints = CheckpointCallback(max(config.checkpoint_every // config.num_envs, 1), str(work_dir),
                                     name_prefix=CHECKPOINT_PREFIX)
    model.learn(config.total_timesteps, callback=checkpoints, progress_bar=progress,
                reset_num_timesteps=not resume)
    model.save(work_dir / f"{CHECKPOINT_PREFIX}_{model.num_timesteps}_steps")
    return model


def export_policy(model, out_dir: Path, transformer: torch.nn.Module, config: PolicyConfig) -> Path:
    """Write the actor path (mlp_extractor.policy_net + action_net) as safetensors + config.json."""
    policy = model.policy
    layers = [m for m in policy.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear)]
    if len(layers) != len(config.net_arch):
        raise CheckpointError("the PPO actor does not match the configured net_arch")
    state = {}
    for i, layer in enumerate(layers + [policy.action_net]):
        state[f"{2 * i}.weight"] = layer.weight.detach().cpu().contiguous()
        state[f"{2 * i}.bias"] = layer.bias.detach().cpu().contiguous()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out_dir / "model.safetensors"))
    (out_dir / "config.json").write_text(json.dumps({
        "format_version": FORMAT_VERSION,
        "backbone": backbone_fingerprint(transformer),
        "observation": list(FEATURES),
        "actions": [a.name for a in Action],
        "num_steps_range": [config.num_steps, config.num_steps],
        "targets_trained": list(config.targets),
        "predictor": config.predictor,
        "net_arch": list(config.net_arch),
        "activation": "tanh",
        "timesteps": int(model.num_timesteps),
    }, indent=2))
    return out_dir

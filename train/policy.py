"""`cachepilot train policy` / `cachepilot export`: MaskablePPO over `CachingVecEnv`, exported to plain torch.

The SB3 zip in the work dir is a *training* checkpoint (periodic, `--resume` continues from the last
one); the release artefact is `export_policy`'s directory, loaded by `policies.learned.LearnedPolicy`
with no SB3 import.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import warnings
import zipfile
from dataclasses import asdict, dataclass, field, fields
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
from cachepilot.envs.caching_env import step_counts
from cachepilot.envs.vec_env import CachingVecEnv
from cachepilot.records import read_json_object
from cachepilot.seeds import POLICY_EVALUATION, POLICY_TRAINING
from cachepilot.errors import CachepilotError, CheckpointError, InvalidInputError
from cachepilot.finite import check_finite_weights
from cachepilot.errors import Interrupted
from cachepilot.loading import load_pipeline
from cachepilot.policies.features import FEATURES
from cachepilot.policies.learned import FORMAT_VERSION
from cachepilot.policies.baselines import Schedule
from cachepilot.policies.prior import SchedulePrior
from cachepilot.core.actions import Action
from cachepilot.runtime.fingerprint import backbone_fingerprint

CHECKPOINT_PREFIX = "ppo"


@dataclass
class PolicyConfig:
    num_envs: int = 16
    num_steps: int | tuple[int, ...] = 50            # one step count, or several drawn per batch of episodes
    total_timesteps: int = 200_000
    targets: tuple[float, float] = (0.15, 0.55)
    predictor: str = "learned"
    seeds: tuple[int, int] = POLICY_TRAINING  # training noise seeds: disjoint from bench and evaluate
    seed_pool: int | None = None                   # draw noise seeds from the first K only: references kept, reused
    rollout_episodes: int = 2                      # PPO n_steps = rollout_episodes x max(num_steps) per env
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
    eval_seed: int = POLICY_EVALUATION              # held-out seeds: neither training nor bench
    prior: str | list[str] | None = None            # searched_schedules.json(s) the policy observes (None: uniform)
    warm_start: bool = False                        # behaviour-clone the prior schedule before PPO
    warm_start_episodes: int = 8
    warm_start_epochs: int = 300
    seed: int = 0

    @property
    def step_counts(self) -> tuple[int, ...]:
        """The step counts trained on, ascending (the exported `num_steps_range` spans them)."""
        return step_counts(self.num_steps, "policy setting num_steps")

    @property
    def training_seeds(self) -> tuple[int, int]:
        """The range episodes draw noise seeds from: the pool's K seeds, or the whole training range."""
        low, high = self.seeds
        return (low, low + self.seed_pool) if self.seed_pool is not None else (low, high)

    @property
    def rollout_steps(self) -> int:
        """PPO's n_steps per env: fixed, so sized for the longest episodes (shorter ones end mid-rollout)."""
        return self.rollout_episodes * max(self.step_counts)

    def check(self) -> "PolicyConfig":
        """An `InvalidInputError` naming the first setting that would make training fail or do nothing."""
        step_counts(self.num_steps, "policy setting num_steps")
        for name in ("num_envs", "total_timesteps", "rollout_episodes", "batch_size", "n_epochs",
                     "checkpoint_every", "eval_every", "eval_samples", "warm_start_episodes", "warm_start_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"policy setting {name} must be an integer >= 1, got {value!r}")
        for name in ("learning_rate", "ent_coef", "gamma", "gae_lambda"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise InvalidInputError(f"policy setting {name} must be a finite number >= 0, got {value!r}")
        if self.learning_rate <= 0:
            raise InvalidInputError(f"policy setting learning_rate must be > 0, got {self.learning_rate!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2 ** 32:
            raise InvalidInputError(f"policy setting seed must be an integer in [0, 2**32), got {self.seed!r}")
        if (not isinstance(self.net_arch, (list, tuple)) or not self.net_arch
                or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in self.net_arch)):
            raise InvalidInputError(f"policy setting net_arch must be a list of layer widths >= 1, got {self.net_arch!r}")
        pool = self.seed_pool
        if pool is not None and (isinstance(pool, bool) or not isinstance(pool, int)
                                 or not 1 <= pool <= self.seeds[1] - self.seeds[0]):
            raise InvalidInputError(f"policy setting seed_pool must be None or an integer in "
                                    f"[1, {self.seeds[1] - self.seeds[0]}], got {pool!r}")
        targets = self.targets
        if (not isinstance(targets, (list, tuple)) or len(targets) != 2
                or not all(isinstance(t, (int, float)) and 0 < t <= 1 for t in targets) or targets[0] > targets[1]):
            raise InvalidInputError(f"policy setting targets must be two compute fractions low <= high in (0, 1], "
                                    f"got {targets!r}")
        return self

    @classmethod
    def from_json(cls, path: Path) -> "PolicyConfig":
        """The policy_config.json a training run wrote; a `CheckpointError` naming what is wrong with it."""
        path = Path(path)
        raw = read_json_object(path)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise CheckpointError(f"{path}: unknown setting(s) {unknown}")
        for name in ("num_steps", "targets", "seeds", "eval_targets"):
            if isinstance(raw.get(name), list):
                raw[name] = tuple(raw[name])
        try:
            return cls(**raw).check()
        except InvalidInputError as err:
            raise CheckpointError(f"{path}: {err}") from None


@dataclass
class PolicyCheckpoint:
    """What the release path reads from an SB3 zip: the policy's tensors and the timestep count, no pickle."""

    state: dict[str, torch.Tensor]
    num_timesteps: int
    path: Path | None = None


def read_checkpoint(path: Path) -> PolicyCheckpoint:
    """Read an SB3 zip without unpickling anything: `policy.pth` with `torch.load(weights_only=True)` and the
    plain-JSON `num_timesteps` of `data` (its pickled fields are never decoded). A `CheckpointError` for a
    truncated, garbage or non-finite checkpoint."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "policy.pth" not in names:
                raise CheckpointError(f"{path} is not a PPO checkpoint (no policy.pth inside)")
            state = torch.load(io.BytesIO(archive.read("policy.pth")), map_location="cpu", weights_only=True)
            data = json.loads(archive.read("data")) if "data" in names else {}
    except CheckpointError:
        raise
    except Exception as err:  # BadZipFile, truncated member (CRC), unpickling refused, bad JSON
        raise CheckpointError(f"the PPO checkpoint {path} could not be read, it looks truncated or corrupt: "
                              f"{type(err).__name__}: {err}".splitlines()[0]) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: policy.pth does not hold a state dict of tensors")
    check_finite_weights(state.items(), f"the PPO checkpoint {path}")
    timesteps = data.get("num_timesteps") if isinstance(data, dict) else None
    if not isinstance(timesteps, int) or isinstance(timesteps, bool):
        try:
            timesteps = int(path.stem.split("_")[-2])
        except (IndexError, ValueError):
            raise CheckpointError(f"{path}: the timestep count is missing") from None
    return PolicyCheckpoint(state, timesteps, path)


class HeldOutEval(BaseCallback):
    """Every `eval_every` steps: the deterministic actor (exactly as exported) on held-out seeds, through
    the real pipeline on an unhooked twin; logs PSNR vs. full compute and compute fraction per target, at each
    trained step count (keys end in `@<steps>` when there are several). With searched schedules for a prior, also
    their PSNR on the same seeds and conditions (scored once: they do not change) and the policy's gain over them
    (`eval/gain_<target>`): what `policy_selection` decides on."""

    def __init__(self, pipe, config: PolicyConfig, conditions: ConditionSet, call_kwargs: dict | None = None):
        super().__init__()
        self.pipe = unhooked_twin(pipe)
        self.config, self.last = config, 0
        self.conditions = [conditions.conditions[i % len(conditions)] for i in range(config.eval_samples)]
        self.seeds = [config.eval_seed + i for i in range(config.eval_samples)]
        self.drivers = {n: SamplingDriver(self.pipe, n, call_kwargs) for n in config.step_counts}
        self.references = {n: d.sample(self.conditions, self.seeds).images for n, d in self.drivers.items()}
        self.prior = _prior(config)
        self.searched: dict[tuple[int, float], float] = {}  # (steps, target) -> the searched schedule's PSNR

    def _on_step(self) -> bool:
        if self.num_timesteps - self.last >= self.config.eval_every:
            self.last = self.num_timesteps
            self.evaluate()
        return True

    def evaluate(self) -> dict[str, float]:
        state = actor_export(self.model, self.pipe.transformer, self.config)
        results = {}
        several = len(self.drivers) > 1
        for num_steps, driver in self.drivers.items():
            suffix = f"@{num_steps}" if several else ""  # one count: the keys of single-count runs
            for target in self.config.eval_targets:
                psnr_value, fraction = self._run(driver, LearnedPolicy(state=state, target=target),
                                                 self.references[num_steps])
                results[f"eval/psnr_{target:g}{suffix}"] = psnr_value
                results[f"eval/compute_fraction_{target:g}{suffix}"] = fraction
                if self.prior.by_steps:  # the searched schedule the checkpoint would ship instead, same seeds
                    key = (num_steps, target)
                    if key not in self.searched:
                        schedule = Schedule(self.prior.mask(target, num_steps))
                        self.searched[key] = self._run(driver, schedule, self.references[num_steps])[0]
                    results[f"eval/searched_psnr_{target:g}{suffix}"] = self.searched[key]
                    results[f"eval/gain_{target:g}{suffix}"] = psnr_value - self.searched[key]
        for key, value in results.items():
            self.logger.record(key, value)
        return results

    def _run(self, driver: SamplingDriver, policy, reference: torch.Tensor) -> tuple[float, float]:
        """(PSNR vs full compute, compute fraction) of `policy` on the driver's step count."""
        cachepilot.enable(self.pipe, policy, self.config.predictor)
        try:
            images = driver.sample(self.conditions, self.seeds).images
            fraction = cachepilot.last_stats(self.pipe).compute_fraction
        finally:
            cachepilot.disable(self.pipe)
        return psnr(images, reference), fraction


HELD_OUT_FILE = "held_out.json"  # the final held-out evaluation of a finished run, in its work dir


def policy_selection(results: dict[str, float], margin: float) -> dict:
    """What a checkpoint ships, from the final held-out evaluation (`HeldOutEval`): the learned policy when its
    mean PSNR gain over the searched schedules (paired: same seeds, conditions, forecaster, targets) is above
    `margin` dB, else the searched schedules (the policy then adds decisions that do not pay). {"kind": "learned" |
    "searched", "gain_db", "margin_db", "validation": per target, "reason"}; "learned" with no searched prior."""
    gains = {key.removeprefix("eval/gain_"): value for key, value in results.items() if key.startswith("eval/gain_")}
    if not gains:
        return {"kind": "learned", "reason": "no searched schedule to compare with"}
    gain = sum(gains.values()) / len(gains)
    validation = {name: {"learned_psnr": round(results[f"eval/psnr_{name}"], 3),
                         "searched_psnr": round(results[f"eval/searched_psnr_{name}"], 3),
                         "gain_db": round(value, 3),
                         "learned_compute_fraction": round(results[f"eval/compute_fraction_{name}"], 4)}
                  for name, value in sorted(gains.items())}
    won = gain > margin
    reason = (f"the learned policy {'beat' if won else 'did not beat'} the searched schedule on validation "
              f"({gain:+.2f} dB, margin {margin:g} dB)")
    return {"kind": "learned" if won else "searched", "gain_db": round(gain, 3), "margin_db": margin,
            "validation": validation, "reason": reason}


def add_prior(policy_dir: Path, schedule_files: list[Path]) -> list[int]:
    """Merge searched schedules (of other step counts, typically) into an exported policy's prior: at a call
    of N steps the policy then observes the masks searched nearest N instead of masks resampled from another
    count. Masks of a count the prior already holds are replaced. Returns the prior's searched counts."""
    LearnedPolicy(policy_dir)  # a loadable policy first: a clear error before anything is written
    config_path = Path(policy_dir) / "config.json"
    config = read_json_object(config_path)
    merged = SchedulePrior.from_files(schedule_files).by_steps
    for steps, masks in SchedulePrior(config.get("prior", {})).by_steps.items():
        merged.setdefault(steps, masks)
    combined: dict[float, list[str]] = {}
    for steps in sorted(merged):
        for target, mask in merged[steps].items():
            combined.setdefault(target, []).append(mask)
    prior = SchedulePrior(combined)
    config["prior"] = prior.to_dict()
    tmp = config_path.with_name(config_path.name + ".tmp")
    tmp.write_text(json.dumps(config, indent=2))
    tmp.replace(config_path)
    return prior.searched_steps()


def _prior(config: PolicyConfig) -> SchedulePrior:
    if not config.prior:
        return SchedulePrior()
    return SchedulePrior.from_files([config.prior] if isinstance(config.prior, str) else list(config.prior))


def _checkpoints(work_dir: Path) -> list[Path]:
    """The work dir's PPO zips, newest first."""
    zips = []
    for path in Path(work_dir).glob(f"{CHECKPOINT_PREFIX}_*_steps.zip"):
        try:
            zips.append((int(path.stem.split("_")[-2]), path))
        except ValueError:
            continue
    return [p for _, p in sorted(zips, reverse=True)]


def _last_checkpoint(work_dir: Path) -> Path | None:
    """The newest PPO zip that reads back; a truncated newest one (killed while saving) falls back to the
    previous good one with a warning."""
    skipped = []
    for path in _checkpoints(work_dir):
        try:
            read_checkpoint(path)
        except CheckpointError as err:
            skipped.append(path)
            warnings.warn(f"skipping the unreadable checkpoint {path.name}: {err}", stacklevel=2)
            continue
        if skipped:
            warnings.warn(f"falling back to the previous good checkpoint {path.name}", stacklevel=2)
        return path
    if skipped:
        raise CheckpointError(f"no readable PPO checkpoint in {work_dir}: {[p.name for p in skipped]} are all corrupt")
    return None


def _merge_logs(previous: Path, current: Path) -> None:
    """progress.csv after a resume = the rows before it, then the new ones (union of the columns)."""
    import csv

    rows, columns = [], []
    for path in (previous, current):
        if not path.exists():
            continue
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            for name in reader.fieldnames or []:
                if name not in columns:
                    columns.append(name)
            rows += list(reader)
    tmp = current.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(current)
    previous.unlink(missing_ok=True)


def train_policy(config: PolicyConfig, work_dir: Path, resume: bool = False, progress: bool = True, pipe=None,
                 conditions: ConditionSet | None = None, eval_conditions: ConditionSet | None = None,
                 call_kwargs: dict | None = None):
    """PPO on `pipe` (default: the embedded digits one) over the training `conditions`; the periodic held-out
    evaluation samples `eval_conditions` (default: the training ones) with held-out seeds."""
    from sb3_contrib import MaskablePPO

    config.check()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    last = None
    if resume:
        last = _last_checkpoint(work_dir)
        if last is None:
            raise FileNotFoundError(f"--resume: no {CHECKPOINT_PREFIX}_*_steps.zip checkpoint in {work_dir}")
    pipe = pipe if pipe is not None else load_pipeline()
    env = CachingVecEnv(config.num_envs, pipe, num_steps=config.step_counts, predictor=config.predictor,
                        targets=tuple(config.targets), seeds=config.training_seeds, seed=config.seed,
                        prior=_prior(config), conditions=conditions, call_kwargs=call_kwargs)
    model = MaskablePPO(
        "MlpPolicy", env, n_steps=config.rollout_steps, batch_size=config.batch_size,
        n_epochs=config.n_epochs, learning_rate=config.learning_rate, gamma=config.gamma,
        gae_lambda=config.gae_lambda, ent_coef=config.ent_coef, seed=config.seed, verbose=0,
        policy_kwargs={"net_arch": list(config.net_arch), "activation_fn": torch.nn.Tanh},
    )
    if resume:
        # No MaskablePPO.load: it unpickles the zip's `data`, so a crafted checkpoint would run code. The same
        # model is rebuilt from the config; its tensors (policy, optimizer) are read with weights_only=True.
        checkpoint = read_checkpoint(last)
        try:
            model.set_parameters(str(last), exact_match=True, device=model.device)
        except Exception as err:
            raise CheckpointError(f"the PPO checkpoint {last} does not fit this policy configuration: "
                                  f"{err}".splitlines()[0]) from None
        model.num_timesteps = checkpoint.num_timesteps
    logs = work_dir / "logs"
    previous_log = logs / "progress.previous.csv"
    if resume and (logs / "progress.csv").exists():
        if previous_log.exists():  # an earlier resume died before merging: merge it first
            _merge_logs(previous_log, logs / "progress.csv")
        (logs / "progress.csv").replace(previous_log)
    model.set_logger(configure(str(logs), ["csv"] + (["stdout"] if not progress else [])))
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
    remaining = config.total_timesteps - model.num_timesteps  # --timesteps is the total, resumed or not
    if remaining <= 0:
        warnings.warn(f"the checkpoint is already at {model.num_timesteps} >= {config.total_timesteps} "
                      "timesteps: nothing left to train", stacklevel=2)
        env.close()
        _close_logger(model)
        if previous_log.exists():
            _merge_logs(previous_log, logs / "progress.csv")
        return model
    evaluation = HeldOutEval(pipe, config, eval_conditions or env.conditions, call_kwargs)
    try:
        model.learn(remaining, callback=[checkpoints, evaluation], progress_bar=progress,
                    reset_num_timesteps=not resume)
    except KeyboardInterrupt:
        saved = work_dir / f"{CHECKPOINT_PREFIX}_{model.num_timesteps}_steps"
        model.save(saved)
        _close_logger(model)
        if previous_log.exists():
            _merge_logs(previous_log, logs / "progress.csv")
        raise Interrupted(f"interrupted at {model.num_timesteps} timesteps; saved {saved}.zip "
                          f"(continue with --resume)") from None
    finally:  # learn stops mid-episode: that pipeline call, paused in its thread, holds the pipeline's
        env.close()  # scheduler and class patched for stepping; aborted here, before anything samples it again
    model.logger.record("time/total_timesteps", model.num_timesteps)
    final = evaluation.evaluate()  # the final policy's figures, in the CSV too
    for key, value in final.items():
        model.logger.record(key, value)
    model.logger.dump(model.num_timesteps)
    model.save(work_dir / f"{CHECKPOINT_PREFIX}_{model.num_timesteps}_steps")
    _write_held_out(work_dir, model.num_timesteps, final)
    _close_logger(model)
    if previous_log.exists():
        _merge_logs(previous_log, logs / "progress.csv")
    return model


def _write_held_out(work_dir: Path, timesteps: int, results: dict[str, float]) -> None:
    path = Path(work_dir) / HELD_OUT_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"timesteps": int(timesteps), "results": results}, indent=2))
    tmp.replace(path)


def held_out_results(work_dir: Path, model, pipe, config: PolicyConfig, conditions: ConditionSet,
                     call_kwargs: dict | None = None) -> dict[str, float]:
    """The final held-out evaluation of `model` (`train_policy` wrote it at its end); evaluated again, and written,
    when the work dir holds none for the model's timesteps (a run that was already at its total)."""
    path = Path(work_dir) / HELD_OUT_FILE
    if path.is_file():
        stored = read_json_object(path, "the held-out evaluation")
        if stored.get("timesteps") == model.num_timesteps and isinstance(stored.get("results"), dict):
            return stored["results"]
    evaluation = HeldOutEval(pipe, config, conditions, call_kwargs)
    evaluation.init_callback(model)
    results = evaluation.evaluate()
    _write_held_out(work_dir, model.num_timesteps, results)
    return results


def _close_logger(model) -> None:
    for output in getattr(model.logger, "output_formats", []):
        output.close()


def _actor_state(policy_state: dict[str, torch.Tensor], net_arch: list[int]) -> dict[str, torch.Tensor]:
    """The actor path of an SB3 policy state dict (mlp_extractor.policy_net Linear layers, then action_net)
    renumbered as `build_actor`'s `nn.Sequential` (Linear layers at even indices)."""
    prefix = "mlp_extractor.policy_net."
    indices = sorted({int(k[len(prefix):].split(".")[0]) for k in policy_state
                      if k.startswith(prefix) and k.endswith(".weight")})
    if len(indices) != len(net_arch):
        raise CheckpointError(f"the PPO actor has {len(indices)} hidden layers, the configured net_arch "
                              f"{list(net_arch)} has {len(net_arch)}")
    names = [f"{prefix}{i}" for i in indices] + ["action_net"]
    state = {}
    for i, name in enumerate(names):
        for part in ("weight", "bias"):
            if f"{name}.{part}" not in policy_state:
                raise CheckpointError(f"the PPO checkpoint has no {name}.{part}")
            state[f"{2 * i}.{part}"] = policy_state[f"{name}.{part}"].detach().cpu().contiguous()
        if i < len(net_arch) and state[f"{2 * i}.weight"].shape[0] != net_arch[i]:
            raise CheckpointError(f"the PPO actor's layer {i} has width {state[f'{2 * i}.weight'].shape[0]}, "
                                  f"the configured net_arch says {net_arch[i]}")
    return state


def actor_export(model, transformer: torch.nn.Module | dict, config: PolicyConfig) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config, weights) of the actor path: mlp_extractor.policy_net then action_net, as the
    `nn.Sequential` that `policies.learned.build_actor` rebuilds (Linear layers at even indices).
    model: a live SB3 model, or a `PolicyCheckpoint` read from a zip without unpickling."""
    if isinstance(model, PolicyCheckpoint):
        policy_state, timesteps = model.state, model.num_timesteps
    else:
        policy_state, timesteps = model.policy.state_dict(), model.num_timesteps
    state = _actor_state(policy_state, list(config.net_arch))
    if isinstance(transformer, torch.nn.Module):
        backbone = backbone_fingerprint(transformer)
    else:
        _check_backbone_record(transformer)
        backbone = transformer
    return {
        "format_version": FORMAT_VERSION,
        "backbone": backbone,
        "observation": list(FEATURES),
        "actions": [a.name for a in Action],
        "num_steps_range": [min(config.step_counts), max(config.step_counts)],
        "targets_trained": list(config.targets),
        "predictor": config.predictor,
        "prior": _prior(config).to_dict(),
        "net_arch": list(config.net_arch),
        "activation": "tanh",
        "timesteps": int(timesteps),
    }, state


def _check_backbone_record(record) -> None:
    if not isinstance(record, dict) or not isinstance(record.get("backbone_class"), str):
        raise CheckpointError(f"the backbone fingerprint must be a JSON object with backbone_class, got {record!r}")


def export_policy(model, out_dir: Path, transformer: torch.nn.Module | dict, config: PolicyConfig,
                  selection: dict | None = None) -> Path:
    """Write the actor as model.safetensors + config.json (a release artefact: no SB3 needed to load).
    selection: `policy_selection`'s record, kept in config.json (`CacheCheckpoint.policy` reads it)."""
    policy_config, state = actor_export(model, transformer, config)
    if selection is not None:
        policy_config["selection"] = selection
    from cachepilot.policies.learned import check_policy_config

    check_policy_config(policy_config, str(out_dir))  # never write a directory LearnedPolicy cannot load
    check_finite_weights(state.items(), "the exported actor")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out_dir / "model.safetensors"))
    (out_dir / "config.json").write_text(json.dumps(policy_config, indent=2))
    return out_dir

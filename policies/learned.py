"""`LearnedPolicy`: the exported actor of a PPO policy, in plain torch (no stable-baselines3 here).

checkpoint directory: `config.json` (format version, backbone fingerprint, observation features,
actions, trained step range, actor layout, the prior schedules it observes) + `model.safetensors` (the actor MLP: SB3's
`mlp_extractor.policy_net` then `action_net`). Decisions: masked argmax of the logits, with the same
budget masks as training, so `predict(deterministic=True)` and this agree.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from cachepilot.errors import CheckpointError, InvalidInputError
from cachepilot.finite import check_finite_weights
from cachepilot.core.policy import CachePolicy, compute_where
from cachepilot.policies.budget import apply_masks, budget_computes, budget_masks
from cachepilot.policies.features import FEATURES, FeatureBuilder
from cachepilot.policies.prior import SchedulePrior
from cachepilot.core.actions import Action
from cachepilot.runtime.fingerprint import check_fingerprint
from cachepilot.core.observation import Observation

FORMAT_VERSION = 2
SPEC_PREFIX = "learned@"  # a learned policy's spec at a call: the forecaster gate names its entries by it
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def build_actor(config: dict) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = len(config["observation"])
    for hidden in config["net_arch"]:
        layers += [nn.Linear(width, hidden), ACTIVATIONS[config["activation"]]()]
        width = hidden
    layers.append(nn.Linear(width, len(config["actions"])))
    return nn.Sequential(*layers)


def check_policy_config(config, source: str) -> None:
    """A `CheckpointError` naming the first field of an exported policy config that cannot be built."""
    if not isinstance(config, dict):
        raise CheckpointError(f"policy checkpoint {source}: config.json must hold a JSON object, "
                              f"got a {type(config).__name__}")
    arch = config.get("net_arch")
    if (not isinstance(arch, list) or not arch
            or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in arch)):
        raise CheckpointError(f"policy checkpoint {source}: net_arch must be a list of layer widths, got {arch!r}")
    if config.get("activation") not in ACTIVATIONS:
        raise CheckpointError(f"policy checkpoint {source}: activation {config.get('activation')!r} is not one of "
                              f"{sorted(ACTIVATIONS)}")
    steps = config.get("num_steps_range")
    if (not isinstance(steps, list) or len(steps) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in steps)
            or steps[0] > steps[1]):
        raise CheckpointError(f"policy checkpoint {source}: num_steps_range must be [low, high] step counts, "
                              f"got {steps!r}")
    if not isinstance(config.get("backbone"), dict):
        raise CheckpointError(f"policy checkpoint {source}: backbone must be a fingerprint object, got "
                              f"{config.get('backbone')!r}")
    if not isinstance(config.get("prior", {}), dict):
        raise CheckpointError(f"policy checkpoint {source}: prior must be an object of schedules")


class LearnedPolicy(CachePolicy):
    def __init__(self, path: str | Path | None = None, target: float = 0.3,
                 state: tuple[dict, dict[str, torch.Tensor]] | None = None, per_batch: bool = False,
                 actor_outside_range: bool = False):
        """path: an exported policy directory; or state = (config, actor weights) already in memory
        (the training-time evaluation uses that). per_batch: one decision for the whole batch (the samples'
        action preferences averaged) instead of one per sample: the stack then always runs on the full
        batch, with no gathers or scatters, which can win on wall time where small sub-batches run poorly.

        At a step count outside the range the actor was trained on, where the prior's nearest searched count is
        outside that range too, the policy takes the prior's decisions (those masks, resampled to the call's count
        when it was not searched itself): on the scenes model (actor trained at 20 steps) the actor's deviations
        from masks searched at 50 and 100 steps lost 0.5-2.1 dB to them, and at 75 steps 1.0-1.9 dB to the 100-step
        masks resampled (held-out prompts); a PPO run at 50 steps never left its prior (206k steps). Where the
        nearest searched count is one the actor trained with (30 steps with an actor of 20), the actor decides.
        actor_outside_range=True lets the actor decide everywhere (to measure it)."""
        self.per_batch = bool(per_batch)
        self.actor_outside_range = bool(actor_outside_range)
        if state is not None:
            config, weights = state
            self._setup(config, weights, "<in-memory policy>", target)
            return
        path = Path(path)
        config_path, weights_path = path / "config.json", path / "model.safetensors"
        if not config_path.is_file() or not weights_path.is_file():
            raise CheckpointError(f"no policy checkpoint at {path} (config.json and model.safetensors needed)")
        try:
            config = json.loads(config_path.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{config_path} is not valid JSON ({err})") from None
        try:
            weights = load_file(str(weights_path))
        except Exception as err:
            raise CheckpointError(f"policy weights at {weights_path} could not be loaded, they look corrupt: "
                                  f"{err}") from err
        self._setup(config, weights, str(path), target)

    def _setup(self, config: dict, weights: dict[str, torch.Tensor], source: str, target: float) -> None:
        check_policy_config(config, source)
        for field, expected in (("format_version", FORMAT_VERSION), ("observation", list(FEATURES)),
                                ("actions", [a.name for a in Action])):
            if config.get(field) != expected:
                raise CheckpointError(f"policy checkpoint {source}: {field} is {config.get(field)!r}, this "
                                      f"version of cachepilot expects {expected!r}")
        self.config, self.source = config, source
        self.prior = SchedulePrior({float(t): m for t, m in config.get("prior", {}).items()})
        self.actor = build_actor(config)
        try:
            self.actor.load_state_dict(weights)
        except Exception as err:
            raise CheckpointError(f"policy weights of {source} do not fit its config: {err}") from err
        check_finite_weights(weights.items(), f"policy checkpoint {source}")
        self.actor.eval()
        self.set_target(target)

    def set_target(self, target: float) -> None:
        if not isinstance(target, (int, float)) or not 0 < target <= 1:
            raise InvalidInputError(f"target compute fraction must be in (0, 1], got {target!r}")
        self.target = float(target)

    def bind(self, transformer: torch.nn.Module) -> None:
        check_fingerprint(self.config.get("backbone", {}), transformer, f"the policy {self.source}")
        parameter = next(transformer.parameters())
        self.actor.to(parameter.device)

    def reset(self, num_steps: int, batch_size: int) -> None:
        low, high = self.config["num_steps_range"]
        outside = not low <= num_steps <= high
        nearest = self.prior.nearest_steps(num_steps, self.target)
        self.follow_prior = (outside and not self.actor_outside_range and nearest is not None
                             and not low <= nearest <= high)
        if outside and not self.follow_prior:
            warnings.warn(f"the policy {self.source} was trained for {low}..{high} steps, not {num_steps}: "
                          "its observations are normalised, but expect weaker decisions (`cachepilot add-prior` "
                          f"with a schedule searched at {num_steps} steps makes it follow that)", stacklevel=2)
        device = next(self.actor.parameters()).device
        self.allowed = torch.full((batch_size,), budget_computes(self.target, num_steps), device=device)
        self.prior_masks = self.prior.masks([self.target] * batch_size, num_steps).to(device)
        self.compute_last = self.prior.computes_last(num_steps) and not self.follow_prior  # as in training
        self.target_tensor = torch.tensor(self.target, device=device)  # once per call, not per step
        self.features = FeatureBuilder(self.target_tensor, self.allowed, self.prior_masks)
        self.dtype = next(self.actor.parameters()).dtype

    @torch.no_grad()
    def decide(self, obs: Observation) -> torch.Tensor:
        allowed = self.allowed
        masks = budget_masks(obs, allowed, self.compute_last)
        if self.follow_prior:  # searched nearest this count, outside the actor's: the searched decisions
            return apply_masks(compute_where(self.prior_masks[:, obs.step]), masks)
        logits = self.actor(self.features(obs).to(self.dtype))
        if self.per_batch:  # the batch's mean preference among the actions every sample may take
            choice = logits.log_softmax(1).mean(0, keepdim=True).masked_fill(~masks.all(0, keepdim=True), float("-inf"))
            return choice.argmax(1).expand(obs.batch_size)
        return logits.masked_fill(~masks, float("-inf")).argmax(1)

    def spec(self) -> str:
        return f"{SPEC_PREFIX}{self.target:g}" + ("/batch" if self.per_batch else "")

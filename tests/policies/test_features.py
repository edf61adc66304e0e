import torch

from cachepilot.policies.features import CLIP, NUM_FEATURES, FeatureBuilder, observation_features
from cachepilot.core.observation import Observation


def _reference(obs, target, allowed, prior):
    """The features as their docstring defines them, written out plainly."""
    steps_left = obs.num_steps - obs.step
    since, computes, drift = obs.since_compute.float(), obs.computes.float(), obs.drift
    columns = [torch.full_like(obs.change, obs.step / (obs.num_steps - 1)), since / obs.num_steps,
               (allowed - computes) / steps_left, target.expand_as(obs.change), obs.change, obs.accumulated,
               computes / allowed.clamp(min=1), prior[:, obs.step], prior[:, obs.step:].sum(1) / steps_left,
               10 * drift, drift * since]
    return torch.stack(columns, 1).clamp(0, CLIP)


def test_features_of_every_step_match_their_definition():
    generator = torch.Generator().manual_seed(0)
    batch, steps = 5, 12
    allowed = torch.tensor([3.0, 4.0, 6.0, 2.0, 12.0])
    prior = (torch.rand(batch, steps, generator=generator) < 0.4).float()
    target = torch.tensor([0.25, 0.3, 0.5, 0.2, 1.0])
    builder = FeatureBuilder(target, allowed, prior)
    for step in range(steps):
        obs = Observation(step, steps, torch.rand(batch, generator=generator), 3 * torch.rand(batch, generator=generator),
                          torch.randint(1, 4, (batch,), generator=generator),
                          torch.randint(0, 5, (batch,), generator=generator), torch.ones(batch, dtype=torch.bool),
                          torch.rand(batch, generator=generator))
        features = builder(obs)
        assert features.shape == (batch, NUM_FEATURES)
        torch.testing.assert_close(features, _reference(obs, target, allowed, prior))
        torch.testing.assert_close(observation_features(obs, target, allowed, prior), features)

"""Gymnasium environments of the caching decision."""

import gymnasium as gym

ENV_ID = "cachepilot/Caching-v0"

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="cachepilot.envs.caching_env:CachingEnv")

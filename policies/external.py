"""Policies whose actions come from outside the engine: how the gym env's agent acts through the very
engine (and the very pipeline call) the runtime uses."""

from __future__ import annotations

import queue

import torch

from cachepilot.core.policy import CachePolicy
from cachepilot.core.observation import Observation


class SteppingAborted(Exception):
    """Raised inside a stepped pipeline call to unwind it (the driver closes a call still running)."""


class SteppedActions(CachePolicy):
    """The decision point of a pipeline call running in a worker thread (`driver.SteppedCall`).

    `decide` hands the observation to the driver and blocks until the agent's actions arrive. Contexts
    of the same step after the first (true CFG runs the transformer twice a step) take the step's
    actions again, so both branches of a sample share its decision, as at inference."""

    def __init__(self) -> None:
        self.inbox: queue.Queue = queue.Queue()
        self.outbox: queue.Queue | None = None
        self.new_call()

    def new_call(self, outbox: queue.Queue | None = None) -> None:
        if outbox is not None:
            self.outbox = outbox
        self._step, self._actions = -1, None
        while not self.inbox.empty():  # nothing stale from an aborted call
            self.inbox.get_nowait()

    def decide(self, obs: Observation) -> torch.Tensor:
        if obs.step == self._step and self._actions is not None and self._actions.shape == (obs.batch_size,):
            return self._actions
        if self.outbox is None:
            raise RuntimeError("SteppedActions decides only inside a driver's stepped call")
        self.outbox.put(("obs", obs))
        actions = self.inbox.get()
        if actions is SteppingAborted:
            raise SteppingAborted()
        actions = torch.as_tensor(actions).long().view(-1)
        if actions.shape != (obs.batch_size,):
            raise RuntimeError(f"SteppedActions: got {tuple(actions.shape)} actions for {obs.batch_size} samples")
        self._step, self._actions = obs.step, actions
        return actions

    def spec(self) -> str:
        return "external"

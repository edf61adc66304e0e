"""Per-call statistics of a cached generation (field names follow cache-dit's summary where they fit)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch

from cachepilot.core.actions import Action


@dataclass(frozen=True)
class CacheStats:
    """decisions: (steps, samples) tensor of `Action` values, one row per denoising step.

    A call that runs its transformer in several cache contexts (Flux / Qwen-Image true CFG: "cond" and
    "uncond", one stack call each per step) has each context's stats in `contexts`, and is summed here:
    one column per (context, sample), so `compute_fraction` and `executed_steps` count every stack call.
    A pipeline call that runs several stacks one after another (experts, phases) stacks their rows
    (`of_phases`), each kept in `phases`. A structure with groups (`G<a>,<b>`) keeps each group's stats in
    `groups` (`of_groups`): `decisions` and the step counts are then the first group's, and the block counts and
    compute fractions every group's.
    """

    decisions: torch.Tensor
    policy_seconds: float
    predictor_seconds: float
    stack_seconds: float
    contexts: Mapping[str, CacheStats] = field(default_factory=dict)
    phases: tuple[CacheStats, ...] = ()
    fixed_blocks: int = 0  # blocks computed at every step outside the cached stack (a structure's Fn + Bn)
    stack_blocks: int = 1  # blocks of the cached stack (every group's)
    groups: tuple[CacheStats, ...] = ()  # each group's stats, in block order (a structure with groups)

    @classmethod
    def of_contexts(cls, contexts: Mapping[str, CacheStats]) -> CacheStats:
        """One call's stats over its contexts (a single context's stats are returned as they are)."""
        if len(contexts) == 1:
            return next(iter(contexts.values()))
        parts = list(contexts.values())
        if parts[0].groups:  # each group over the contexts, then the groups together
            grouped = cls.of_groups([cls.of_contexts({name: p.groups[i] for name, p in contexts.items()})
                                     for i in range(len(parts[0].groups))], parts[0].fixed_blocks)
            return replace(grouped, contexts=dict(contexts))
        steps = min(p.num_steps for p in parts)
        return cls(torch.cat([p.decisions[:steps] for p in parts], dim=1),
                   sum(p.policy_seconds for p in parts), sum(p.predictor_seconds for p in parts),
                   sum(p.stack_seconds for p in parts), dict(contexts),
                   fixed_blocks=parts[0].fixed_blocks, stack_blocks=parts[0].stack_blocks)

    @classmethod
    def of_groups(cls, parts: Sequence[CacheStats], fixed_blocks: int = 0) -> CacheStats:
        """One stack call's stats over its groups (each its own engine's, with its own decisions): blocks are
        counted per group, so a group computed at every other step pays its blocks at every other step."""
        return cls(parts[0].decisions, sum(p.policy_seconds for p in parts), sum(p.predictor_seconds for p in parts),
                   sum(p.stack_seconds for p in parts), fixed_blocks=fixed_blocks,
                   stack_blocks=sum(p.stack_blocks for p in parts), groups=tuple(parts))

    @classmethod
    def of_phases(cls, parts: Sequence[CacheStats]) -> CacheStats:
        """One pipeline call's stats over the stack calls it ran one after another: the experts of a
        mixture-of-experts pipeline (Wan 2.2's transformer then transformer_2) or the phases of a pipeline
        that denoises twice (VisualCloze). Their step rows are stacked, so `compute_fraction` counts every
        expert and phase; `phases` keeps each part. Parts of different widths (a phase with another batch or
        context count) are stacked one decision per row, which keeps the counts and loses the columns."""
        if len(parts) == 1:
            return parts[0]
        same = len({p.decisions.shape[1] for p in parts}) == 1
        decisions = torch.cat([p.decisions if same else p.decisions.reshape(-1, 1) for p in parts])
        contexts = parts[0].contexts if same and len({len(p.contexts) for p in parts}) == 1 else {}
        return cls(decisions, sum(p.policy_seconds for p in parts), sum(p.predictor_seconds for p in parts),
                   sum(p.stack_seconds for p in parts), contexts, tuple(parts))

    @property
    def num_steps(self) -> int:
        return int(self.decisions.shape[0])

    @property
    def batch_size(self) -> int:
        """Samples of the call (a multi-context call's columns are contexts x samples)."""
        return int(self.decisions.shape[1]) // max(len(self.contexts), 1)

    @property
    def computes_per_sample(self) -> torch.Tensor:
        return (self.decisions == Action.COMPUTE).sum(0)

    @property
    def executed_steps(self) -> int:
        """Stack evaluations, summed over samples."""
        return int((self.decisions == Action.COMPUTE).sum())

    @property
    def cached_steps(self) -> int:
        """Steps filled from the cache (reuse or forecast), summed over samples."""
        return int(self.decisions.numel() - self.executed_steps)

    @property
    def forecast_steps(self) -> int:
        return int((self.decisions == Action.FORECAST).sum())

    @property
    def block_evaluations(self) -> int:
        """Blocks run, summed over samples: the cached stack's at each compute, the structure's at every step."""
        if self.phases:
            return sum(p.block_evaluations for p in self.phases)
        return self._cached_block_evaluations + self.decisions.numel() * self.fixed_blocks

    @property
    def _cached_block_evaluations(self) -> int:
        if self.groups:
            return sum(g.executed_steps * g.stack_blocks for g in self.groups)
        return self.executed_steps * self.stack_blocks

    @property
    def full_block_evaluations(self) -> int:
        """Blocks full compute would have run in the same call."""
        if self.phases:
            return sum(p.full_block_evaluations for p in self.phases)
        return self.decisions.numel() * (self.stack_blocks + self.fixed_blocks)

    @property
    def compute_fraction(self) -> float:
        """Block evaluations / those of full compute: a structure's always-computed blocks are paid here."""
        return self.block_evaluations / max(self.full_block_evaluations, 1)

    @property
    def stack_compute_fraction(self) -> float:
        """Decisions that computed the cached stack / all decisions (the policy's budget is counted in these); with
        groups, the cached blocks' evaluations / those of full compute."""
        if self.groups:
            return self._cached_block_evaluations / max(self.decisions.numel() * self.stack_blocks, 1)
        return self.executed_steps / max(self.decisions.numel(), 1)

    def summary(self) -> dict:
        return {
            "num_steps": self.num_steps, "batch_size": self.batch_size,
            "executed_steps": self.executed_steps, "cached_steps": self.cached_steps,
            "forecast_steps": self.forecast_steps, "compute_fraction": self.compute_fraction,
            "stack_compute_fraction": self.stack_compute_fraction, "block_evaluations": self.block_evaluations,
            "computes_per_sample": self.computes_per_sample.tolist(),
            "policy_seconds": self.policy_seconds, "predictor_seconds": self.predictor_seconds,
            "stack_seconds": self.stack_seconds,
            **({"contexts": {name: c.summary() for name, c in self.contexts.items()}} if self.contexts else {}),
            **({"phases": [p.summary() for p in self.phases]} if self.phases else {}),
            **({"groups": [g.summary() for g in self.groups]} if self.groups else {}),
        }

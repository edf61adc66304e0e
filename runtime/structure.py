"""Which blocks of a stack the cache may skip: DBCache's first-Fn / last-Bn structure.

cache-dit's DBCache computes the first Fn blocks at every step and the last Bn blocks at every step, and
caches only the blocks between. Two things follow, and the engine gets both for free by hooking the middle
blocks only:
- the engine's probe (the cached stack's input) becomes the output of the first Fn blocks: a signal that has
  seen this step's input through real blocks, not only the embedders (First-Block-Cache's observation);
- a skipped step's output is this step's Fn output plus the cached (or forecast) middle residual, so the
  first blocks correct the forecast with the current input, and the last Bn blocks refine it again.
The always-computed blocks are paid at every step: compute is counted in block evaluations
(`CacheStats.compute_fraction`), so a probe must pay for itself within the same budget.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cachepilot.errors import InvalidInputError

STRUCTURE_SPECS = "F<n>B<m>: compute the first n and the last m blocks at every step, cache the rest (F0B0: the whole stack)"
_SPEC = re.compile(r"^\s*[Ff](\d+)\s*[Bb](\d+)\s*$")


@dataclass(frozen=True)
class Structure:
    """first: blocks computed at every step before the cached ones (DBCache's Fn); last: after them (Bn)."""

    first: int = 0
    last: int = 0

    def __post_init__(self) -> None:
        if self.first < 0 or self.last < 0:
            raise InvalidInputError(f"a structure computes a non-negative number of blocks, got {self.spec()}")

    def spec(self) -> str:
        return f"F{self.first}B{self.last}"

    @property
    def is_whole_stack(self) -> bool:
        return self.first == 0 and self.last == 0

    def cached_range(self, num_blocks: int, model_class: str = "the model") -> range:
        """Indices of the blocks the engine caches; refused (one line) when nothing would be left to cache."""
        if self.first + self.last >= num_blocks:
            raise InvalidInputError(
                f"structure {self.spec()} computes {self.first} + {self.last} blocks of {model_class}'s "
                f"{num_blocks} at every step: nothing is left to cache (Fn + Bn must be below {num_blocks})")
        return range(self.first, num_blocks - self.last)


def make_structure(spec: str | Structure | None) -> Structure:
    """'F1B0', 'f8b0', a `Structure`, or None (the whole stack)."""
    if spec is None:
        return Structure()
    if isinstance(spec, Structure):
        return spec
    match = _SPEC.match(str(spec))
    if match is None:
        raise InvalidInputError(f"unknown structure spec {spec!r}; expected {STRUCTURE_SPECS}")
    return Structure(int(match.group(1)), int(match.group(2)))

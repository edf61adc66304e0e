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

Groups (`G<a>,<b>,...`) split the cached blocks into consecutive groups, each cached on its own (layer-wise
caching, as L2C / HarmoniCa learn it): every group has its own residual history and forecaster and, given a policy
of its own, its own decisions, observing its own input as its probe (a later group's probe is the output of the
groups before it, computed or forecast at this step). A group that changes slowly can then be computed less often,
or forecast otherwise, than one that does not.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cachepilot.errors import InvalidInputError

STRUCTURE_SPECS = ("F<n>B<m>: compute the first n and the last m blocks at every step, cache the rest (F0B0: the whole "
                   "stack); G<a>,<b>,... (alone or after F<n>B<m>): cache consecutive groups of a, b, ... of the cached "
                   "blocks each on its own")
_SPEC = re.compile(r"^\s*(?:[Ff](\d+)\s*[Bb](\d+))?\s*(?:[Gg]\s*(\d+(?:\s*,\s*\d+)*))?\s*$")


@dataclass(frozen=True)
class Structure:
    """first: blocks computed at every step before the cached ones (DBCache's Fn); last: after them (Bn);
    groups: the sizes of consecutive groups of the cached blocks, each cached on its own (empty: one group)."""

    first: int = 0
    last: int = 0
    groups: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.first < 0 or self.last < 0:
            raise InvalidInputError(f"a structure computes a non-negative number of blocks, got {self.spec()}")
        object.__setattr__(self, "groups", tuple(int(g) for g in self.groups))
        if any(g < 1 for g in self.groups):
            raise InvalidInputError(f"every group of structure {self.spec()} holds at least one block")

    def spec(self) -> str:
        groups = f"G{','.join(map(str, self.groups))}" if self.groups else ""
        return f"F{self.first}B{self.last}{groups}"

    @property
    def is_whole_stack(self) -> bool:
        """No block computed at every step and no groups: the cache decides for the whole stack at once."""
        return self.first == 0 and self.last == 0 and len(self.groups) < 2

    @property
    def num_groups(self) -> int:
        return max(len(self.groups), 1)

    def cached_range(self, num_blocks: int, model_class: str = "the model") -> range:
        """Indices of the blocks the engine caches; refused (one line) when nothing would be left to cache."""
        if self.first + self.last >= num_blocks:
            raise InvalidInputError(
                f"structure {self.spec()} computes {self.first} + {self.last} blocks of {model_class}'s "
                f"{num_blocks} at every step: nothing is left to cache (Fn + Bn must be below {num_blocks})")
        return range(self.first, num_blocks - self.last)

    def group_ranges(self, num_blocks: int, model_class: str = "the model") -> list[range]:
        """The block indices of each group, in order (one range, the cached blocks, without groups); refused (one
        line) when the groups do not add up to the cached blocks."""
        cached = self.cached_range(num_blocks, model_class)
        if not self.groups:
            return [cached]
        if sum(self.groups) != len(cached):
            where = "" if len(cached) == num_blocks else f" (blocks {cached.start}-{cached.stop - 1} of {num_blocks})"
            raise InvalidInputError(
                f"structure {self.spec()} splits {sum(self.groups)} blocks into groups, and {model_class} caches "
                f"{len(cached)}{where}: the groups must add up to {len(cached)}")
        starts = [cached.start + sum(self.groups[:i]) for i in range(len(self.groups))]
        return [range(start, start + size) for start, size in zip(starts, self.groups)]


def make_structure(spec: str | Structure | None) -> Structure:
    """'F1B0', 'f8b0', 'G3,3', 'F1B0G2,3', a `Structure`, or None (the whole stack)."""
    if spec is None:
        return Structure()
    if isinstance(spec, Structure):
        return spec
    match = _SPEC.match(str(spec))
    if match is None or not any(match.groups()):
        raise InvalidInputError(f"unknown structure spec {spec!r}; expected {STRUCTURE_SPECS}")
    first, last, groups = match.groups()
    sizes = tuple(int(g) for g in groups.split(",")) if groups else ()
    return Structure(int(first or 0), int(last or 0), sizes)


def per_group(given: Any, make: Callable[[Any], Any]) -> Any:
    """`make(given)`, or one per group of a structure: `given` a list, or specs joined by '|' ('fixed:2|fixed:4')."""
    if isinstance(given, str) and "|" in given:
        given = given.split("|")
    if isinstance(given, (list, tuple)):
        return [make(g) for g in given]
    return make(given)

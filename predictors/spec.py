"""Predictors from short spec strings: 'reuse', 'taylor:1', 'taylor:2', 'taylor:1.5'."""

from __future__ import annotations

from cachepilot.errors import InvalidInputError
from cachepilot.core.predictor import Predictor
from cachepilot.predictors.taylor import Reuse, Taylor
from cachepilot.predictors.families import FAMILIES, FAMILY_SPECS, make_family

PREDICTOR_SPECS = ("reuse | taylor:ORDER (ORDER in 0, 1, 2; 1.5: the mean of 1 and 2) | learned (the embedded head) | "
                   "learned:PATH | gated:PATH (a head with its calibrated Taylor fallback) | combo:PATH (forecasters "
                   "combined with per-step weights, cachepilot fit-combination) | " + FAMILY_SPECS)


def make_predictor(spec: str | Predictor | None) -> Predictor:
    if spec is None:
        return Reuse()
    if isinstance(spec, Predictor):
        return spec
    name, _, arg = str(spec).strip().partition(":")
    name = name.lower()
    if name == "reuse" and not arg:
        return Reuse()
    if name == "taylor":
        try:
            order = float(arg) if arg else 1.0
        except ValueError:
            raise InvalidInputError(f"bad predictor spec {spec!r}: order must be 0, 1, 1.5 or 2") from None
        return Taylor(int(order) if order.is_integer() else order)
    if name in FAMILIES:
        return make_family(name, arg, spec)
    if name == "learned":
        from cachepilot.checkpoints import DEFAULT_PREDICTOR
        from cachepilot.predictors.learned import Learned

        learned = Learned.from_pretrained(arg or DEFAULT_PREDICTOR)
        if not arg:
            learned.source = "learned"
        return learned
    if name == "combo" and arg:
        from cachepilot.predictors.combination import Combination

        return Combination.from_pretrained(arg)
    if name == "gated" and arg:
        from cachepilot.predictors.gated import Gated

        return Gated.from_pretrained(arg)
    raise InvalidInputError(f"unknown predictor spec {spec!r}; expected {PREDICTOR_SPECS}")

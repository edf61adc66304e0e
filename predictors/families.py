"""Spec strings of the training-free forecaster families beyond Taylor (parsed for `make_predictor`)."""

from __future__ import annotations

from cachepilot.core.predictor import Predictor
from cachepilot.errors import InvalidInputError

FAMILY_SPECS = ("foca[:HORIZON] | hermite:ORDER[:SCALE] (ORDER 1..3, SCALE in (0, 1], default 0.5) | "
                "freq:CUTOFF[:ORDER] (CUTOFF in (0, 1] of Nyquist) | chebyshev:DEGREE[:WINDOW] | dmd:RANK (1, 2) | "
                "hyca:PATH (a fitted per-channel table)")
FAMILIES = ("foca", "hermite", "freq", "chebyshev", "dmd", "hyca")


def _numbers(spec: str, arg: str, kinds: tuple[type, ...], required: int) -> list:
    """The ':'-separated numbers of `arg`, each of its kind (int or float), at least `required` of them."""
    parts = arg.split(":") if arg else []
    if len(parts) < required or len(parts) > len(kinds):
        raise InvalidInputError(f"bad predictor spec {spec!r}; expected {FAMILY_SPECS}")
    values = []
    for part, kind in zip(parts, kinds):
        try:
            value = float(part)
        except ValueError:
            raise InvalidInputError(f"bad predictor spec {spec!r}: {part!r} is not a number") from None
        if kind is int:
            if not value.is_integer():
                raise InvalidInputError(f"bad predictor spec {spec!r}: {part!r} must be an integer")
            value = int(value)
        values.append(value)
    return values


def make_family(name: str, arg: str, spec: str) -> Predictor:
    """The forecaster `name` (one of FAMILIES) with its ':'-separated argument `arg`."""
    if name == "foca":
        from cachepilot.predictors.foca import FoCa

        return FoCa(*_numbers(spec, arg, (int,), 0))
    if name == "hermite":
        from cachepilot.predictors.hermite import Hermite

        return Hermite(*_numbers(spec, arg, (int, float), 0))
    if name == "freq":
        from cachepilot.predictors.freq import FrequencySplit

        return FrequencySplit(*_numbers(spec, arg, (float, int), 0))
    if name == "chebyshev":
        from cachepilot.predictors.chebyshev import Chebyshev

        return Chebyshev(*_numbers(spec, arg, (int, int), 0))
    if name == "dmd":
        from cachepilot.predictors.dmd import DMD

        return DMD(*_numbers(spec, arg, (int,), 0))
    if name == "hyca" and arg:
        from cachepilot.predictors.hyca import HyCa

        return HyCa.from_pretrained(arg)
    raise InvalidInputError(f"bad predictor spec {spec!r}; expected {FAMILY_SPECS}")

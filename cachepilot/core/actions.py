"""The three things a sample can do at a denoising step."""

from enum import IntEnum


class Action(IntEnum):
    COMPUTE = 0   # run the block stack, store its residual
    REUSE = 1     # output = input + last computed residual (FORA / First-Block-Cache)
    FORECAST = 2  # output = input + predictor(residual history, step)


NUM_ACTIONS = len(Action)

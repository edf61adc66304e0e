"""Errors cachepilot raises for bad input, so callers (and the CLI) can tell them from bugs."""


class CachepilotError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class CheckpointError(CachepilotError):
    """A checkpoint directory is missing, incomplete, corrupt, or made for another model."""


class InvalidInputError(CachepilotError, ValueError):
    """An argument is out of range (unknown class id, steps < 1, guidance < 0, ...)."""


class Interrupted(CachepilotError):
    """Work stopped by the user (SIGINT) after saving what it had; the CLI exits 130 with how to continue."""

    exit_code = 130

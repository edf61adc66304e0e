"""The project's own JSON records (configs, fingerprints, run settings), read with one clear error."""

from __future__ import annotations

import json
from pathlib import Path

from cachepilot.errors import CheckpointError


def read_json_object(path: str | Path, what: str = "") -> dict:
    """The JSON object in `path`; a `CheckpointError` naming the file (and `what` it is) when it is missing,
    not JSON, or not an object."""
    path = Path(path)
    prefix = f"{what}: " if what else ""
    if not path.is_file():
        raise CheckpointError(f"{prefix}{path} is missing")
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{prefix}{path} is not valid JSON ({err})") from None
    if not isinstance(content, dict):
        raise CheckpointError(f"{prefix}{path} must hold a JSON object, got a {type(content).__name__}")
    return content

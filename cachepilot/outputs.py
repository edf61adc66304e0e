"""Output paths checked before the work starts, so a long run never fails at its very end (or after training)."""

from __future__ import annotations

import os
from pathlib import Path

from cachepilot.errors import InvalidInputError


def check_output_dir(out: str | Path, create: bool = True) -> Path:
    """Prove `out` can be a writable directory; a clear error otherwise (a file in the way, no permission).

    create: make it now (and probe it with a write); without, nothing is created: the nearest existing ancestor
    must be a writable directory, so a refused or failed run leaves no empty directory behind."""
    out = Path(out)
    if not create:
        ancestor = out
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if ancestor.exists() and not ancestor.is_dir():
            where = "is a file" if ancestor == out else f"is under the file {ancestor}"
            raise InvalidInputError(f"cannot write to the output directory {out}: it {where}, not a directory")
        if ancestor.exists() and not os.access(ancestor, os.W_OK | os.X_OK):
            raise InvalidInputError(f"cannot write to the output directory {out}: {ancestor} is not writable")
        return out
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".cachepilot-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise InvalidInputError(f"cannot write to the output directory {out}: {err.strerror or err}") from None
    return out


def check_output_file(path: str | Path) -> Path:
    """The parent of an output file, checked the same way (the file itself is written at the end)."""
    path = Path(path)
    if path.is_dir():
        raise InvalidInputError(f"the output {path} is a directory: give a file name")
    check_output_dir(path.parent)
    return path

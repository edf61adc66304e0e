"""Output paths checked before the work starts, so a long run never fails at its very end."""

from __future__ import annotations

from pathlib import Path

from cachepilot.errors import InvalidInputError


def check_output_dir(out: str | Path) -> Path:
    """Create `out` if needed and prove it writable; a clear error otherwise."""
    out = Path(out)
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

"""Which Lightning checkpoint `--resume` continues from: last.ckpt, or, when a kill truncated it, the newest
other checkpoint of the work dir that reads back (with a warning)."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

from cachepilot.errors import CheckpointError


def _readable(path: Path) -> bool:
    """torch.save writes a zip: a truncated one fails its directory or a member's CRC (no unpickling here)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def resume_checkpoint(work_dir: Path) -> Path | None:
    """last.ckpt when it is whole; else the newest readable *.ckpt; None when the work dir holds none."""
    work_dir = Path(work_dir)
    last = work_dir / "last.ckpt"
    others = sorted((p for p in work_dir.glob("*.ckpt") if p.name != "last.ckpt"),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    candidates = ([last] if last.exists() else []) + others
    for path in candidates:
        if _readable(path):
            if path != candidates[0]:
                warnings.warn(f"{candidates[0].name} is truncated or corrupt: resuming from the previous good "
                              f"checkpoint {path.name}", stacklevel=2)
            return path
    if candidates:
        raise CheckpointError(f"no readable checkpoint in {work_dir}: {[p.name for p in candidates]} are all "
                              "truncated or corrupt")
    return None

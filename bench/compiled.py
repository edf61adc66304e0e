"""`compile_blocks` now lives in `cachepilot.compile` (the research tool in `experiments/compiled.py`); this name
stays until its last importer (tests/runtime/test_compile.py) imports it from there."""

from cachepilot.compile import compile_blocks

__all__ = ["compile_blocks"]

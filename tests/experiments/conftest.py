"""The research tools live in `experiments/` at the repository root, outside the installed package: put the root on
the path so pytest's importlib mode can import them as `experiments.<name>` (as `python -m` from the root does)."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

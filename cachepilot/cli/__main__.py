"""`python -m cachepilot.cli ...` (and `torchrun -m cachepilot.cli ...`): the `cachepilot` command."""

import sys

from cachepilot.cli import main

sys.exit(main())

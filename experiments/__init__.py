"""Research instruments (headroom studies, budget pooling, whole-schedule forecaster choice, engine cost and
host-sync counts): outside the installed package, run from the repository root as `python -m experiments.<name>`.
They use cachepilot's public API only; what they find is written up in the docs, not shipped."""

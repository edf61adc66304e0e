"""The Pareto benchmark: every cache method on the embedded model, same seeds, one process.

`cachepilot bench --out DIR` writes results.json, results.md and pareto.png.
"""

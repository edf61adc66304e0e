"""results.json, results.md and pareto.png from the benchmark's rows."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLUMNS = ["method", "knob", "compute_fraction", "speedup", "psnr", "ssim", "class_acc", "fd"]


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = []
        for c in COLUMNS:
            v = r.get(c)
            cells.append("" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


BUDGETS = (0.2, 0.3, 0.4, 0.5)
SLACK = 0.005  # a row counts at a budget when its compute fraction is at most budget + SLACK (rounded counts)


def _best(rows: list[dict], budget: float) -> dict | None:
    within = [r for r in rows if r["compute_fraction"] <= budget + SLACK and r["psnr"] < 100]
    return max(within, key=lambda r: r["psnr"], default=None)


def versus_no_fit(rows: list[dict], fitted: set[str], budgets: tuple[float, ...] = BUDGETS) -> list[dict]:
    """Per budget (compute fraction, block evaluations): the best row of every method a user runs without a
    fit (training-free ones, peers, fewer steps) against the best row of a cache checkpoint's methods, and
    against its learned policy (what `enable(checkpoint=...)` runs) on its own."""
    free = [r for r in rows if r["method"] not in fitted and r["method"] not in ("full", "always")]
    learned = [r for r in rows if r["method"] in fitted]
    policy = [r for r in rows if r["method"] == "learned-policy"]
    table = []
    for budget in budgets:
        best_free, best_fit, best_policy = _best(free, budget), _best(learned, budget), _best(policy, budget)
        table.append({"budget": budget, "no_fit": best_free, "fit": best_fit, "policy": best_policy})
    return table


def _cell(row: dict | None) -> str:
    if row is None:
        return "— | —"
    knob = "" if row["knob"] is None else f"@{row['knob']}"
    return f"{row['method']}{knob} ({row['compute_fraction']:.3f}) | {row['psnr']:.2f}"


def versus_table(table: list[dict]) -> str:
    lines = ["| budget | best without a fit (compute) | PSNR | best of the cache (compute) | PSNR | "
             "learned policy (compute) | PSNR | policy − best without a fit |", "|---|---|---|---|---|---|---|---|"]
    for entry in table:
        free, policy = entry["no_fit"], entry["policy"]
        delta = f"{policy['psnr'] - free['psnr']:+.2f}" if free and policy else "—"
        lines.append(f"| {entry['budget']:g} | {_cell(free)} | {_cell(entry['fit'])} | {_cell(policy)} | {delta} |")
    return "\n".join(lines)


def pareto_plot(rows: list[dict], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(9, 6))
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m not in ("full", "always")]
    colors = plt.get_cmap("tab20")(range(len(methods)))
    for method, color in zip(methods, colors):
        # bit-exact points (PSNR capped at 100 dB) say "no caching happened": leave them off the curve
        pts = sorted((r["speedup"], r["psnr"]) for r in rows if r["method"] == method and r["psnr"] < 100)
        style = "-o" if not method.startswith(("diffusers", "cache-dit")) else "--s"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=method, markersize=4, color=color)
    ax.axvline(1.0, color="grey", lw=0.8)
    ax.set_ylim(bottom=max(min((r["psnr"] for r in rows), default=0) - 2, 15))
    ax.set_xlabel("wall-clock speed-up vs. full compute (same process, median of repeats)")
    ax.set_ylabel("PSNR vs. full compute, same seeds (dB)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def missing_lines(missing: dict[str, str]) -> str:
    """The report's first lines when a peer is not installed: its rows are absent, and how to add them."""
    return "".join(f"**{peer} is not installed: its rows are missing.** Add it with `{hint}`.\n\n"
                   for peer, hint in missing.items())


def write_report(rows: list[dict], out_dir: Path, meta: dict, fitted: set[str] = frozenset(),
                 missing: dict[str, str] | None = None) -> None:
    """fitted: the methods that read a cache checkpoint (compared per budget with the best of the rest);
    missing: peers not installed (named first)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(rows, indent=2))
    header = ", ".join(f"{k}={v}" for k, v in meta.items())
    versus = ""
    if fitted & {r["method"] for r in rows}:
        versus = ("## Per budget: the cache against the best method without a fit\n\n"
                  f"{versus_table(versus_no_fit(rows, fitted))}\n\n## Every row\n\n")
    (out_dir / "results.md").write_text(f"# cachepilot bench\n\n{missing_lines(missing or {})}{header}\n\n"
                                        f"{versus}{markdown_table(rows)}\n")
    pareto_plot(rows, out_dir / "pareto.png", header)

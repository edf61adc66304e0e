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


def write_report(rows: list[dict], out_dir: Path, meta: dict) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(rows, indent=2))
    header = ", ".join(f"{k}={v}" for k, v in meta.items())
    (out_dir / "results.md").write_text(f"# cachepilot bench\n\n{header}\n\n{markdown_table(rows)}\n")
    pareto_plot(rows, out_dir / "pareto.png", header)

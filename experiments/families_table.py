"""Regenerate docs/families.md: which diffusers transformer families cachepilot caches, from the same checks
the tests run.

    python -m experiments.families_table [--out docs/families.md]

Every family of tests/runtime/tiny_models.py and tests/runtime/more_families.py is built tiny, perturbed
and offline, and goes through `more_families.check_family` (the checks tests/runtime/test_more_families.py
asserts, the failed-call check included), flux and sd3 also through their tiny img2img pipelines
(`check_img2img`), the Wan 2.2 pipeline (two transformers) through whole tiny pipeline calls; refused
families are listed with the reason `get_adapter` gives. Nothing is downloaded; under a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "runtime"), str(ROOT / "tests")]

import more_families  # noqa: E402
import tiny_models  # noqa: E402

from cachepilot.runtime.families import REFUSED  # noqa: E402


def collect() -> list[more_families.FamilyResult]:
    torch.set_num_threads(1)
    rows = []
    builders = {**{f: more_families.build_tiny_models_family for f in tiny_models.FAMILIES},
                **{f: more_families.build for f in more_families.BUILDERS}}
    with tempfile.TemporaryDirectory() as root:
        for family, builder in builders.items():
            try:
                row = more_families.check_family(*builder(family), family=family)
                if family in more_families.IMG2IMG:
                    row.img2img = all(more_families.check_img2img(family, pathlib.Path(root)).values())
                rows.append(row)
            except Exception as err:  # a failing family is a row, not a crash
                rows.append(more_families.FamilyResult(family, error=f"{type(err).__name__}: {err}"[:300]))
    rows.append(more_families.check_wan22_pipeline())
    return rows


def render(rows: list[more_families.FamilyResult], seconds: float) -> str:
    video = set(tiny_models.VIDEO_FAMILIES) | set(more_families.VIDEO)
    passing = sum(r.passed for r in rows)
    mark = {True: "yes", False: "**no**"}
    head = ["family", "model class", "cached stack (block lists)", *more_families.CHECKS, "img2img", "video"]
    lines = [
        "# Transformer families",
        "",
        "Which diffusers transformer families `cachepilot.enable` caches, checked on tiny configurations built",
        "offline with random weights perturbed so that no block is an identity (several families zero-initialise",
        "their modulation), 4 steps, batch 2, diffusers 0.42.1, CPU. Per family: `always` is bit-exact against",
        "the unhooked model; `fixed:2` with `taylor:1` computes half of the steps (`last_stats`) and changes the",
        "output; a repeat of the cached call is identical; `disable` restores the unhooked output bit for bit;",
        "the batch read as [cond; uncond] copies (`cfg_copies=2`) gets one decision per sample; failed-call",
        "recovery: a call that raises once step 2's model call returned (a step-end callback that raises, in the",
        "Wan 2.2 pipeline) leaves nothing that changes the next call, which equals the first cached call bit for",
        "bit. img2img: the family's img2img pipeline built from the same tiny components (strength 0.5 of 8",
        "steps) passes the first four checks, `fixed:2` computing 2 of the 4 steps it runs; \"—\": no img2img",
        "pipeline is built for the family here.",
        "",
        f"**{passing} of {len(rows)} families pass every check; {len(REFUSED)} are refused with their reason.**",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        checks = [mark[r.checks[c]] if c in r.checks else "n/a" for c in more_families.CHECKS]
        stack = " + ".join(r.stack) if r.stack else (r.error or "-")
        img2img = "—" if r.img2img is None else mark[r.img2img]
        lines.append("| " + " | ".join([r.family, f"`{r.model_class}`" if r.model_class else "-", stack, *checks,
                                        img2img, "yes" if r.family in video else ""]) + " |")
    lines += [
        "",
        "Stacks of one list after others (Flux.2, Chroma, HiDream, AuraFlow, Lumina2, Z-Image): only the last list",
        "is cached; the earlier lists (refiners, or double-stream blocks whose streams are concatenated before it)",
        "run every step. Chroma, HiDream and HunyuanDiT give each block its own arguments (modulation slice, Llama",
        "text states, skip connection): the model runs their blocks itself, so a step where some samples compute",
        "and others skip computes them all (and `last_stats` records it so); per-batch decisions lose nothing.",
        "Wan 2.2 runs through a whole `WanPipeline` call: both experts are cached and `last_stats` counts both.",
        "",
        f"## Refused ({len(REFUSED)})",
        "",
        "`enable` raises `UnsupportedModelError` with the reason:",
        "",
    ]
    lines += [f"- `{name}`: {why}." for name, why in sorted(REFUSED.items())]
    lines += [
        "",
        "Any block whose output does not have the layout its metadata claims (shape, or both streams swapped) is",
        "refused on the first call, naming the block class, before anything is cached (diffusers' entry for",
        "`BriaTransformerBlock` is one: cachepilot overrides it).",
        "",
        "## Real-size models",
        "",
        "No GPU available: no real-size row was measured.",
        "",
        "## Regenerate",
        "",
        "    .venv/bin/python -m experiments.families_table",
        "",
        f"(last run: {seconds:.0f} s on a shared 2-core CPU machine).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "families.md"))
    args = parser.parse_args()
    tic = time.perf_counter()
    rows = collect()
    text = render(rows, time.perf_counter() - tic)
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(text)
    print(f"{sum(r.passed for r in rows)} of {len(rows)} families pass; wrote {args.out}")


if __name__ == "__main__":
    main()

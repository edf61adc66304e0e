"""What one forecast costs, per forecaster, as a fraction of one block-stack evaluation it replaces.

    OMP_NUM_THREADS=1 python -m experiments.forecaster_cost [--tokens 1024 --dim 512 --rows 2 --rounds 7]

A random FluxTransformer2DModel (2 double + 4 single blocks, `--dim` hidden = heads x 64, `--tokens` image tokens,
32 text tokens) is built; its block stack is timed on a batch of `--rows` (CPU process time, one torch thread).
Each forecaster then forecasts the same rows from a full history of residuals shaped as the stack's (rows,
tokens, dim), computed at evenly spaced steps as a fixed:2 schedule leaves them; `fixed+hyca` uses a random
per-channel table over its default candidates. Each is timed over `--rounds` rounds (the order rotating),
`--calls` forecasts per round; the figure is the median per forecast over the median stack evaluation.
The blocks are called directly, as the engine runs them: the embeddings and the output layer, which run
whatever the cache decides, are not part of what a forecast replaces.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from cachepilot.core.predictor import ForecastContext
from cachepilot.predictors.hyca import DEFAULT_CANDIDATES, HyCa
from cachepilot.predictors.spec import make_predictor

SPECS = ("reuse", "taylor:1", "taylor:1.5", "taylor:2", "foca", "hermite:2", "freq:0.25", "chebyshev:2",
         "chebyshev:2:6", "dmd:1", "dmd:2", "hyca")


def _flux(tokens: int, dim: int, rows: int):
    """(the model's block-stack runner, a residual-shaped tensor)."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    heads = dim // 64
    model = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=2, num_single_layers=4,
                                   attention_head_dim=64, num_attention_heads=heads, joint_attention_dim=64,
                                   pooled_projection_dim=64, axes_dims_rope=(16, 24, 24)).eval()
    side, text = int(tokens ** 0.5), 32
    img_ids = torch.zeros(tokens, 3)
    img_ids[:, 1], img_ids[:, 2] = torch.arange(tokens) // side, torch.arange(tokens) % side
    hidden = torch.randn(rows, tokens, dim)
    encoder = torch.randn(rows, text, dim)
    temb = torch.randn(rows, dim)
    rotary = model.pos_embed(torch.cat([torch.zeros(text, 3), img_ids]))

    @torch.no_grad()
    def stack() -> torch.Tensor:
        h, e = hidden, encoder
        for block in model.transformer_blocks:
            e, h = block(hidden_states=h, encoder_hidden_states=e, temb=temb, image_rotary_emb=rotary)
        for block in model.single_transformer_blocks:
            e, h = block(hidden_states=h, encoder_hidden_states=e, temb=temb, image_rotary_emb=rotary)
        return h

    return stack, hidden


def _predictor(spec: str, dim: int):
    if spec == "hyca":
        return HyCa(DEFAULT_CANDIDATES, torch.randint(len(DEFAULT_CANDIDATES), (dim,), generator=torch.Generator().manual_seed(0)))
    return make_predictor(spec)


def _cpu_seconds(fn, calls: int) -> float:
    tic = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - tic) / calls


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=10, help="forecasts per round")
    parser.add_argument("--specs", nargs="+", default=list(SPECS))
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    stack, like = _flux(args.tokens, args.dim, args.rows)
    predictors = {spec: _predictor(spec, args.dim) for spec in args.specs}
    histories = {}
    for spec, predictor in predictors.items():  # a full history: computes at 0, 2, 4, ...; forecast one step on
        history = predictor.new_history()
        history.allocate(like)
        every_row = torch.arange(args.rows)
        for k in range(predictor.history_size):
            history.update(every_row, 2 * k, torch.randn_like(like) * (1 + 0.1 * k))
        histories[spec] = history
    context = ForecastContext(50, like, like)
    forecast = {spec: (lambda p=p, h=histories[spec], s=2 * p.history_size - 1: p.predict(h, s, None, context))
                for spec, p in predictors.items()}
    stack()  # warm-up
    for fn in forecast.values():
        fn()
    stack_times, times = [], {spec: [] for spec in forecast}
    names = list(forecast)
    for round_ in range(args.rounds):
        stack_times.append(_cpu_seconds(stack, 1))
        for spec in names[round_ % len(names):] + names[:round_ % len(names)]:
            times[spec].append(_cpu_seconds(forecast[spec], args.calls))
    stack_median = statistics.median(stack_times)
    result = {"tokens": args.tokens, "dim": args.dim, "rows": args.rows, "rounds": args.rounds,
              "stack_ms": 1e3 * stack_median,
              "forecast": {spec: {"ms": 1e3 * statistics.median(t), "of_stack": statistics.median(t) / stack_median}
                           for spec, t in times.items()}}
    print(f"block stack ({args.rows} x {args.tokens} tokens x {args.dim}): {result['stack_ms']:.1f} ms CPU (median)")
    print("| forecaster | ms per forecast | % of a stack evaluation |\n|---|---|---|")
    for spec, entry in result["forecast"].items():
        print(f"| {spec} | {entry['ms']:.2f} | {100 * entry['of_stack']:.2f}% |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()

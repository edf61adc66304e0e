"""`cachepilot evaluate`: class accuracy and Fréchet distance of generated digits."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cachepilot import seeds
from cachepilot.cli.generate import add_sampling_args, check_batch_size
from cachepilot.errors import InvalidInputError


def register(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("evaluate", help="class accuracy and Fréchet distance of generated digits")
    ev.add_argument("--samples-per-class", type=int, default=50)
    ev.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    add_sampling_args(ev)
    ev.set_defaults(func=run, seed=seeds.EVALUATE)


def run(args: argparse.Namespace) -> None:
    evaluate(args.samples_per_class, pipeline=args.pipeline, steps=args.steps, guidance=args.guidance,
             seed=args.seed, batch_size=args.batch_size, device=args.device, json_path=args.json)


def evaluate(
    samples_per_class: int = 50, pipeline: Path | None = None, steps: int = 50,
    guidance: float | None = None, seed: int = seeds.EVALUATE, batch_size: int = 256, device: str = "cpu",
    json_path: Path | None = None, checkpoint: Path | None = None,
) -> dict:
    """Class accuracy and Fréchet distance (vs. held-out real digits) of balanced generated samples of a digits
    pipeline (default: the embedded one). `checkpoint` is the old name of `pipeline`."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from cachepilot.embedded.digits.data import load_digits_split
    from cachepilot.embedded.digits.loading import load_classifier, load_pipeline
    from cachepilot.embedded.digits.metrics import class_accuracy, frechet_distance
    from cachepilot.embedded.digits.pipeline import DEFAULT_GUIDANCE_SCALE
    from cachepilot.embedded.digits.sampling import sample_images
    from cachepilot.finite import check_finite
    from cachepilot.outputs import check_output_file

    if samples_per_class < 2:
        raise InvalidInputError(f"samples per class must be >= 2 (a Fréchet distance needs a covariance), got {samples_per_class}")
    check_batch_size(batch_size)
    if json_path is not None:
        json_path = check_output_file(json_path)  # before the sampling, not after it
    guidance = DEFAULT_GUIDANCE_SCALE if guidance is None else guidance
    pipe = load_pipeline(pipeline if pipeline is not None else checkpoint, device=device)
    pipe.check_inputs([0], steps, guidance)
    pipe.set_progress_bar_config(desc=f"sampling {10 * samples_per_class} digits", leave=False)
    classifier = load_classifier(device=device)
    split = load_digits_split()
    labels = torch.arange(10).repeat_interleave(samples_per_class)
    start = time.perf_counter()
    images = sample_images(pipe, labels.tolist(), seed=seed, num_inference_steps=steps, guidance_scale=guidance,
                           batch_size=batch_size)
    wall = time.perf_counter() - start
    check_finite(images, f"the generated images ({steps} steps, guidance {guidance:g}; check the checkpoint's "
                         "weights and the guidance scale)")
    result = {
        "samples": len(labels), "steps": steps, "guidance": guidance, "seed": seed, "wall_s": wall,
        "class_acc": class_accuracy(classifier, images, labels),
        "fd_generated_vs_held_out": frechet_distance(classifier, images, split.held_out_images),
        "fd_train_vs_held_out": frechet_distance(classifier, split.train_images, split.held_out_images),
        "classifier_held_out_acc": class_accuracy(classifier, split.held_out_images, split.held_out_labels),
    }
    table = Table(title=f"{len(labels)} samples, {steps} steps, guidance {guidance:g}")
    for key in ("class_acc", "fd_generated_vs_held_out", "fd_train_vs_held_out", "classifier_held_out_acc", "wall_s"):
        table.add_row(key, f"{result[key]:.4f}")
    Console().print(table)
    if json_path is not None:
        try:
            Path(json_path).write_text(json.dumps(result, indent=2))
        except OSError as err:
            raise InvalidInputError(f"cannot write {json_path}: {err.strerror or err}") from None
    return result

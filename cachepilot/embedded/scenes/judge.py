"""The scenes' adherence judge: how well an image matches its caption, the offline stand-in for CLIP
score / ImageReward (no weights can be downloaded here), plus a Fréchet distance in its feature space.

`SceneJudge` is a small CNN (77k parameters at the default width) trained on generated scenes of
every (colour, shape) pair. From a 32x32 image it predicts, for each pair: presence (multi-label logits), the centre
(x, y) of that pair's object and its size (small / large). `features` is its penultimate layer.

`adherence(judge, images, captions)` scores each image by the fraction of its caption's checks the
judge finds true: each described object's pair is present; its size, where the caption states it,
is right; each stated relation holds between the predicted centres (`relation_check`). A missing
object fails its size and relation checks too. `attribute_accuracy` pools the checks of all images.

Train: `python -m cachepilot.embedded.scenes.judge --out checkpoints/scenes-judge --steps N`.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import logging as diffusers_logging
from torch import nn
from tqdm.auto import tqdm

from cachepilot.checkpoints import CHECKPOINTS_DIR
from cachepilot.embedded.scenes.data import (
    COLOURS, IMAGE_SIZE, NUM_PAIRS, SHAPES, SIZES, PromptSpec, Scene, prompt_spec, relation_margin,
    sample_scenes, scene_batches, scene_targets,
)
from cachepilot.errors import CheckpointError, InvalidInputError
from cachepilot.quality import frechet_distance as features_frechet_distance
from cachepilot.records import read_json_object

DEFAULT_JUDGE = CHECKPOINTS_DIR / "scenes-judge"
# A relation is judged to hold when the predicted centres are ordered by at least this much (a
# fraction of the image side: 1 pixel) along the stated axis, and the offset along the other axis
# is at most `RELATION_CHECK_DOMINANCE` times that. Generated scenes hold by >= 5 pixels, 1x.
RELATION_CHECK_MARGIN = 1.0 / IMAGE_SIZE
RELATION_CHECK_DOMINANCE = 2.0
CENTRE_LOSS_WEIGHT = 0.1  # on a Huber loss in pixels
SIZE_LOSS_WEIGHT = 0.5


class JudgeOutput(NamedTuple):
    presence_logits: torch.Tensor  # (N, P)
    centres: torch.Tensor  # (N, P, 2), x right and y down, in [0, 1]
    size_logits: torch.Tensor  # (N, P), > 0 means "large"


class SceneJudge(ModelMixin, ConfigMixin):
    """Input (N, 3, 32, 32) in [0, 1]; P = len(colours) * len(shapes) pairs, pair id
    colour * len(shapes) + shape, as in `data.PAIRS`.

    Fully convolutional, a small CenterNet: a CNN (two coordinate channels appended to the image)
    down to an 8x8 map whose 1x1 head gives, per pair and cell, a heat logit, a size logit and a
    centre offset within the cell. A pair's presence logit is its highest heat; its centre and size
    are the softmax(heat)-weighted averages over cells of the cell centre + offset and of the size
    logit. `features` (N, 8 * width): the map's channel means and maxima."""

    @register_to_config
    def __init__(self, colours: Sequence[str] = COLOURS, shapes: Sequence[str] = SHAPES,
                 sizes: Sequence[str] = SIZES, image_size: int = IMAGE_SIZE, width: int = 16):
        super().__init__()
        w = width
        self.num_pairs = len(colours) * len(shapes)

        def conv(i, o):
            return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU()]

        self.body = nn.Sequential(
            *conv(5, w), nn.MaxPool2d(2),  # 32 -> 16
            *conv(w, 2 * w), *conv(2 * w, 2 * w), nn.MaxPool2d(2),  # 16 -> 8
            *conv(2 * w, 4 * w), *conv(4 * w, 4 * w),
        )
        self.head = nn.Conv2d(4 * w, 4 * self.num_pairs, 1)
        with torch.no_grad():  # start with every pair absent: few are present in a scene
            self.head.bias[: self.num_pairs].fill_(-4.0)

    @property
    def num_features(self) -> int:
        return 8 * int(self.config.width)

    def _feature_map(self, images: torch.Tensor) -> torch.Tensor:
        dtype = next(self.parameters()).dtype
        images = images.to(dtype)
        n, _, h, w = images.shape
        ys = torch.linspace(-1, 1, h, device=images.device, dtype=dtype).view(1, 1, h, 1).expand(n, 1, h, w)
        xs = torch.linspace(-1, 1, w, device=images.device, dtype=dtype).view(1, 1, 1, w).expand(n, 1, h, w)
        return self.body(torch.cat([images, xs, ys], dim=1))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The penultimate embedding (N, 8 * width), used for Fréchet distances."""
        fmap = self._feature_map(images).flatten(2)
        return torch.cat([fmap.mean(-1), fmap.amax(-1)], dim=1)

    def forward(self, images: torch.Tensor) -> JudgeOutput:
        fmap = self._feature_map(images)
        n, _, h, w = fmap.shape
        out = self.head(fmap).view(n, 4, self.num_pairs, h * w)
        heat, size, offset = out[:, 0], out[:, 1], torch.tanh(out[:, 2:4]).transpose(0, 1)
        weights = torch.softmax(heat.float(), dim=-1).to(heat.dtype)
        cells_y, cells_x = torch.meshgrid(
            (torch.arange(h, device=fmap.device, dtype=fmap.dtype) + 0.5) / h,
            (torch.arange(w, device=fmap.device, dtype=fmap.dtype) + 0.5) / w, indexing="ij")
        x = ((cells_x.flatten() + offset[0] / w) * weights).sum(-1)
        y = ((cells_y.flatten() + offset[1] / h) * weights).sum(-1)
        return JudgeOutput(heat.amax(-1), torch.stack([x, y], dim=-1), (size * weights).sum(-1))


# ----------------------------------------------------------------------------- checks

def _check_images(images, what: str = "images") -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise InvalidInputError(f"{what} must be a tensor (N, 3, {IMAGE_SIZE}, {IMAGE_SIZE}), got {type(images).__name__}")
    if images.ndim != 4 or tuple(images.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE):
        raise InvalidInputError(
            f"{what} must have shape (N, 3, {IMAGE_SIZE}, {IMAGE_SIZE}) in [0, 1], got {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
        raise InvalidInputError(
            f"{what}: {bad} of {len(images)} images hold NaN or inf values (a diverged sampler?); "
            "the judge needs finite pixels in [0, 1]")
    return images


@torch.no_grad()
def predict(judge: SceneJudge, images: torch.Tensor, batch_size: int = 512) -> JudgeOutput:
    """The judge's outputs with probabilities: presence (N, P), centres (N, P, 2), P(large) (N, P)."""
    images = _check_images(images)
    judge.eval()
    parts = [judge(chunk.to(judge.device)) for chunk in images.split(batch_size)] if len(images) else []
    if not parts:
        p = judge.num_pairs
        return JudgeOutput(torch.zeros(0, p), torch.zeros(0, p, 2), torch.zeros(0, p))
    presence = torch.cat([torch.sigmoid(o.presence_logits.float()) for o in parts]).cpu()
    centres = torch.cat([o.centres.float() for o in parts]).cpu()
    large = torch.cat([torch.sigmoid(o.size_logits.float()) for o in parts]).cpu()
    return JudgeOutput(presence, centres, large)


def relation_check(a_xy, b_xy, relation: str) -> bool:
    """Does the relation hold between predicted centres? See RELATION_CHECK_MARGIN."""
    along, across = relation_margin(torch.as_tensor(a_xy), torch.as_tensor(b_xy), relation)
    return bool(along >= RELATION_CHECK_MARGIN and across <= RELATION_CHECK_DOMINANCE * along)


def _spec_checks(spec: PromptSpec, presence, centres, large) -> list[tuple[str, bool]]:
    checks = []
    present = [bool(presence[o.pair] > 0.5) for o in spec.objects]
    for o, here in zip(spec.objects, present):
        checks.append(("presence", here))
        if o.size is not None:
            checks.append(("size", here and bool((large[o.pair] > 0.5) == (o.size == 1))))
    for i, j, relation in spec.relations:
        a, b = spec.objects[i], spec.objects[j]
        holds = present[i] and present[j] and relation_check(centres[a.pair], centres[b.pair], relation)
        checks.append(("relation", holds))
    return checks


def judge_checks(judge: SceneJudge, images: torch.Tensor, attributes) -> list[list[tuple[str, bool]]]:
    """Per image, the list of (kind, passed) checks of its caption: kind "presence", "size" or
    "relation". `attributes`: captions, `Scene`s or `PromptSpec`s, one per image."""
    images = _check_images(images)
    if isinstance(attributes, (str, Scene, PromptSpec)):
        raise InvalidInputError("attributes must be a sequence (one caption / Scene per image)")
    specs = [prompt_spec(a) for a in attributes]
    if len(specs) != len(images):
        raise InvalidInputError(f"{len(images)} images but {len(specs)} captions / attributes")
    out = predict(judge, images)
    return [_spec_checks(s, out.presence_logits[i], out.centres[i], out.size_logits[i]) for i, s in enumerate(specs)]


def adherence(judge: SceneJudge, images: torch.Tensor, attributes) -> torch.Tensor:
    """Per-image score (N,) in [0, 1]: the fraction of its caption's checks that hold."""
    checks = judge_checks(judge, images, attributes)
    return torch.tensor([sum(ok for _, ok in c) / len(c) for c in checks], dtype=torch.float32)


def attribute_accuracy(judge: SceneJudge, images: torch.Tensor, attributes) -> float:
    """Share of all checks (every object, size and relation of every caption) that hold."""
    flat = [ok for c in judge_checks(judge, images, attributes) for _, ok in c]
    return float(np.mean(flat)) if flat else float("nan")


def check_accuracy(judge: SceneJudge, images: torch.Tensor, attributes) -> dict[str, float]:
    """Share of checks that hold, per kind ("presence", "size", "relation") and "all"."""
    flat = [c for cs in judge_checks(judge, images, attributes) for c in cs]
    out = {kind: float(np.mean([ok for k, ok in flat if k == kind]))
           for kind in ("presence", "size", "relation") if any(k == kind for k, _ in flat)}
    out["all"] = float(np.mean([ok for _, ok in flat])) if flat else float("nan")
    return out


# ----------------------------------------------------------------------------- Fréchet distance

def frechet_distance(judge: SceneJudge, images: torch.Tensor, reference: torch.Tensor) -> float:
    """`cachepilot.quality.frechet_distance` in the judge's feature space, on images of the scenes' shape."""
    return features_frechet_distance(judge, _check_images(images), _check_images(reference, "reference images"))


def scenes_quality(judge: SceneJudge, reference: torch.Tensor):
    """The bench's model-specific figures: `fn(images, conditions) -> {adherence, attr_acc, fd}`,
    conditions being pipeline call kwargs with a "prompt" each."""

    def quality(images: torch.Tensor, conditions: list[dict]) -> dict:
        prompts = [c["prompt"] for c in conditions]
        return {"adherence": adherence(judge, images, prompts).mean().item(),
                "attr_acc": attribute_accuracy(judge, images, prompts),
                "fd": frechet_distance(judge, images, reference)}

    return quality


# ----------------------------------------------------------------------------- training

def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mild degradations a generated image may show: a box blur on a quarter of the batch, pixel
    noise of std up to 0.05 on half of it."""
    n = len(images)
    blur = torch.rand(n, 1, 1, 1, generator=generator) < 0.25
    blurred = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    images = torch.where(blur, 0.5 * images + 0.5 * blurred, images)
    sigma = 0.05 * torch.rand(n, 1, 1, 1, generator=generator) * (torch.rand(n, 1, 1, 1, generator=generator) < 0.5)
    return (images + sigma * torch.randn(images.shape, generator=generator)).clamp(0.0, 1.0)


def judge_loss(output: JudgeOutput, targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Presence BCE + masked centre Huber (pixels) + masked size BCE."""
    present = targets["presence"]
    presence = F.binary_cross_entropy_with_logits(output.presence_logits, present)
    count = present.sum().clamp_min(1.0)
    centre = F.huber_loss(output.centres * IMAGE_SIZE, targets["centre"] * IMAGE_SIZE, reduction="none").sum(-1)
    centre = (centre * present).sum() / count
    size = F.binary_cross_entropy_with_logits(output.size_logits, targets["size"], reduction="none")
    size = (size * present).sum() / count
    return presence + CENTRE_LOSS_WEIGHT * centre + SIZE_LOSS_WEIGHT * size


def train_judge(out_dir: str | Path | None = None, steps: int = 600, seed: int = 0, batch_size: int = 128,
                lr: float = 5e-3, width: int = 16, progress: bool = True, fp16_storage: bool = True
                ) -> tuple[SceneJudge, list[float]]:
    """Train a judge on `steps` batches of fresh scenes of every pair (split "all"), AdamW with a
    one-cycle schedule; save it to `out_dir` (if given) with `save_pretrained`, in float16 when
    `fp16_storage` (`load_judge` casts back). Returns the judge (float32, eval mode) and the loss
    of each step."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidInputError(f"steps must be an integer >= 1, got {steps!r}")
    torch.manual_seed(seed)
    judge = SceneJudge(width=width)
    optimiser = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.15)
    generator = torch.Generator().manual_seed(seed)
    batches = scene_batches(batch_size, seed, split="all")
    losses: list[float] = []
    judge.train()
    bar = tqdm(range(steps), desc="scene judge", disable=not progress, mininterval=1.0)
    for _ in bar:
        images, _, scenes = next(batches)
        loss = judge_loss(judge(_augment(images, generator)), scene_targets(scenes))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", refresh=False)
    judge.eval()
    if out_dir is not None:
        save_judge(judge, out_dir, fp16_storage)
    return judge, losses


def save_judge(judge: SceneJudge, out_dir: str | Path, fp16_storage: bool = True) -> Path:
    """`save_pretrained` (config.json + safetensors), in float16 when `fp16_storage`; `judge` itself
    is left as it is."""
    out_dir = Path(out_dir)
    (copy.deepcopy(judge).half() if fp16_storage else judge).save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def load_judge(path: str | Path | None = None, device: str | torch.device = "cpu") -> SceneJudge:
    """The judge shipped in `checkpoints/scenes-judge` by default, float32, eval mode. Raises
    `CheckpointError` for a missing directory / file, corrupt weights or another model's config."""
    path = Path(path) if path is not None else DEFAULT_JUDGE
    if not path.exists():
        raise CheckpointError(f"scene judge directory not found: {path}")
    if not path.is_dir():
        raise CheckpointError(f"a scene judge checkpoint must be a directory, got the file {path}")
    config = read_json_object(path / "config.json", "not a scene judge checkpoint")
    if config.get("_class_name") != SceneJudge.__name__:
        found = config.get("_class_name")
        raise CheckpointError(f"{path} holds a {found or 'model of unknown class'}, expected a SceneJudge")
    for key, expected in (("colours", COLOURS), ("shapes", SHAPES), ("sizes", SIZES)):
        if tuple(config.get(key, expected)) != tuple(expected):
            raise CheckpointError(
                f"{path} was trained for {key} {config.get(key)}, but the scenes use {list(expected)}")
    if not any(path.glob("*.safetensors")):
        raise CheckpointError(f"scene judge at {path} has no weights (*.safetensors is missing)")
    diffusers_logging.disable_progress_bar()
    try:
        judge = SceneJudge.from_pretrained(path, dtype=torch.float32, local_files_only=True, low_cpu_mem_usage=False)
    except Exception as err:  # safetensors, OSError, shape mismatches: all mean a bad checkpoint
        raise CheckpointError(f"scene judge at {path} could not be loaded, it looks corrupt: {err}") from err
    finally:
        diffusers_logging.enable_progress_bar()
    return judge.float().to(device).eval()


# ----------------------------------------------------------------------------- evaluation

def _derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    perm = rng.permutation(n)
    return np.roll(perm, 1)[np.argsort(perm)] if n > 1 else perm  # i -> a different index


def shuffled_captions(captions: Sequence, seed: int = 0) -> list:
    """The captions moved to other images (each image gets another image's caption)."""
    order = _derangement(len(captions), np.random.default_rng(seed))
    return [captions[j] for j in order]


@torch.no_grad()
def evaluate_judge(judge: SceneJudge, n: int = 1024, seed: int = 12345, split: str = "eval") -> dict:
    """The judge measured on `n` fresh scenes of `split` (default: held-out combinations)."""
    images, captions, scenes = sample_scenes(n, seed, split=split)
    out = predict(judge, images)
    targets = scene_targets(scenes)
    present = targets["presence"].bool()
    predicted = out.presence_logits > 0.5
    centre_error = (out.centres - targets["centre"]).norm(dim=-1) * IMAGE_SIZE
    checks = check_accuracy(judge, images, scenes)
    true = adherence(judge, images, scenes)
    shuffled = adherence(judge, images, shuffled_captions(scenes, seed))
    relation_scenes = [i for i, s in enumerate(scenes) if s.relation is not None]
    by_count = {k: float(true[[i for i, s in enumerate(scenes) if s.num_objects == k]].mean())
                for k in (1, 2, 3) if any(s.num_objects == k for s in scenes)}
    return {
        "scenes": n, "split": split, "seed": seed,
        "presence_accuracy": float((predicted == present).float().mean()),  # every (image, pair) label
        "presence_recall": float(predicted[present].float().mean()),
        "presence_false_positive_rate": float(predicted[~present].float().mean()),
        "exact_set_accuracy": float((predicted == present).all(1).float().mean()),
        "size_accuracy": float(((out.size_logits > 0.5) == targets["size"].bool())[present].float().mean()),
        "centre_error_px": float(centre_error[present].mean()),
        "relation_accuracy": checks.get("relation", float("nan")),
        "relation_scenes": len(relation_scenes),
        "attribute_accuracy": checks["all"],
        "adherence_true_captions": float(true.mean()),
        "adherence_true_min": float(true.min()),
        "adherence_true_by_objects": by_count,
        "adherence_shuffled_captions": float(shuffled.mean()),
    }


_README = """# scenes-judge — the adherence metric of the embedded text-to-image scenes

A `SceneJudge` (`cachepilot.embedded.scenes.judge`, diffusers `ModelMixin`/`ConfigMixin`: config.json
+ safetensors, stored in float16, loaded as float32 by `load_judge`): a {params:,}-parameter CNN
that predicts, from a 32x32 scene, for each of the {pairs} (colour, shape) pairs its presence, centre and
size. `adherence(judge, images, captions)` is the share of a caption's checks (objects present,
stated sizes, stated relations between predicted centres) that hold; `frechet_distance` uses its
{features}-d penultimate layer.

- Data: fresh procedurally generated scenes every step (`cachepilot.embedded.scenes.data`,
  `split="all"`: every pair, held-out combinations included: the judge is the metric, like CLIP it
  has seen everything; the text-to-image model trains on `split="train"` only), batch {batch},
  mild blur / noise augmentation.
- Trained by

      {command}

  {steps:,} steps, AdamW one-cycle lr {lr}, seed {train_seed}; {wall:.0f} s wall time ({cpu:.0f} s of CPU
  time) on {threads} CPU thread(s) of a shared, busy 2-core machine; final loss (mean of the last 50
  steps) {loss:.4f}.

Measured on {n:,} fresh scenes of held-out combinations (`split="eval"`, seed {eval_seed}; every scene
has at least one held-out pair: {held_out}):

| figure | value |
|---|---|
| presence accuracy (every image x pair label) | {presence_accuracy:.4f} |
| presence recall (described objects found) | {presence_recall:.4f} |
| presence false-positive rate | {presence_false_positive_rate:.4f} |
| exact object set | {exact_set_accuracy:.4f} |
| size accuracy (present objects) | {size_accuracy:.4f} |
| centre error (present objects, pixels) | {centre_error_px:.2f} |
| relation accuracy ({relation_scenes} scenes with a relation) | {relation_accuracy:.4f} |
| attribute accuracy (all checks) | {attribute_accuracy:.4f} |
| **adherence, real scenes with their own captions** | **{adherence_true_captions:.4f}** (1 / 2 / 3 objects: {by_count}) |
| **adherence, same scenes with shuffled captions** | **{adherence_shuffled_captions:.4f}** |

The gap between the last two rows is the metric's discrimination: a caption describing another scene
scores far lower than the scene's own. Shuffled captions still score above 0: a shuffled caption
sometimes names an object (colour and shape) that the image holds.
Errors concentrate in three-object scenes, where objects may partly cover each other.
"""


def _write_readme(out_dir: Path, metrics: dict, info: dict) -> None:
    from cachepilot.embedded.scenes.data import HELD_OUT_PAIRS

    by_count = " / ".join(f"{v:.3f}" for v in metrics["adherence_true_by_objects"].values())
    text = _README.format(
        **metrics, **info, n=metrics["scenes"], eval_seed=metrics["seed"], by_count=by_count,
        pairs=NUM_PAIRS, held_out=", ".join(sorted(f"{c} {s}" for c, s in HELD_OUT_PAIRS)),
    )
    (out_dir / "README.md").write_text(text)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m cachepilot.embedded.scenes.judge", description="Train and measure the scenes' adherence judge.")
    parser.add_argument("--out", type=Path, default=DEFAULT_JUDGE, help="output directory (save_pretrained)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--eval-scenes", type=int, default=2048)
    parser.add_argument("--no-readme", action="store_true", help="do not write README.md next to the weights")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start, cpu_start = time.perf_counter(), time.process_time()
    judge, losses = train_judge(args.out, steps=args.steps, seed=args.seed, batch_size=args.batch_size, lr=args.lr)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    judge = load_judge(args.out)  # measure what was saved (float16 storage)
    metrics = evaluate_judge(judge, n=args.eval_scenes)
    print(json.dumps(metrics, indent=2))
    print(f"trained in {wall:.0f} s wall time, {cpu:.0f} s CPU time")
    if not args.no_readme:
        command = f"python -m cachepilot.embedded.scenes.judge --out {args.out} --steps {args.steps}"
        command += "".join(f" --{k} {v}" for k, v in (("seed", args.seed), ("threads", args.threads)) if v)
        _write_readme(Path(args.out), metrics, {
            "params": sum(p.numel() for p in judge.parameters()), "features": judge.num_features,
            "batch": args.batch_size, "command": command, "steps": args.steps, "lr": args.lr, "train_seed": args.seed,
            "wall": wall, "cpu": cpu, "threads": args.threads or torch.get_num_threads(),
            "loss": float(np.mean(losses[-50:])),
        })
    return metrics


if __name__ == "__main__":
    main()

"""`cachepilot collect`: record what a predictor learns from, as a Hugging Face dataset on disk.

For every sample and denoising step: the block stack's input and its true residual (output − input)
at that input, one dataset row per sample (Array3D (steps, tokens, hidden), float16). Trajectories
are sampled with full compute *and* under caching policies: skipping shifts the inputs the stack
sees, so a head fitted on full-compute states alone would be trained on the wrong distribution.
Under a policy the true residual is computed by an unhooked copy of the transformer on the cached
trajectory's own inputs.

Work is split in shards; each worker writes its own (`--shard-index`), a finished shard is never
recomputed, so an interrupted collection resumes where it stopped.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import Array3D, Dataset, Features, Value, concatenate_datasets, load_from_disk
from tqdm.auto import tqdm

import cachepilot
from cachepilot.errors import CachepilotError, CheckpointError, InvalidInputError
from cachepilot.pipeline import DigitsDiTPipeline
from cachepilot.policies.spec import make_policy
from cachepilot.runtime.adapters import get_adapter
from cachepilot.runtime.fingerprint import backbone_fingerprint, check_fingerprint

CONFIG_FILE = "collect_config.json"
WEIGHTS_FILE = "step_weights.json"


@dataclass
class CollectConfig:
    samples_per_policy: int = 256
    steps: int = 50
    guidance: float = 1.0
    seed: int = 100_000  # training seeds: disjoint from the bench's (20_000+) and evaluate's (10_000+)
    policies: list[str] = field(default_factory=lambda: ["always", "fixed:3", "fixed:5"])
    predictor: str = "taylor:1"  # what the cached trajectories forecast with
    num_shards: int = 6
    batch_size: int = 64

    def jobs(self) -> list[tuple[str, int]]:
        """(policy, first sample index) of each batch, in a fixed order."""
        return [(p, i) for p in self.policies for i in range(0, self.samples_per_policy, self.batch_size)]

    def shard_jobs(self, shard: int) -> list[tuple[str, int]]:
        return self.jobs()[shard::self.num_shards]


class _StackRecorder:
    """Runs an unhooked twin of the transformer on every call and keeps its stack input and residual.

    Use as a context manager: the capture hooks live on the twin only while recording."""

    def __init__(self, truth: torch.nn.Module):
        self.truth = truth
        self.inputs: list[torch.Tensor] = []
        self.residuals: list[torch.Tensor] = []
        self._current: torch.Tensor | None = None

    def __enter__(self) -> "_StackRecorder":
        blocks = get_adapter(self.truth).blocks(self.truth)
        self._handles = [blocks[0].register_forward_pre_hook(self._capture_input, with_kwargs=True),
                         blocks[-1].register_forward_hook(self._capture_output)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()

    def _capture_input(self, module, args, kwargs):
        self._current = args[0] if args else kwargs["hidden_states"]

    def _capture_output(self, module, args, output):
        hidden_out = output[1] if isinstance(output, tuple) else output
        self.inputs.append(self._current.detach())
        self.residuals.append((hidden_out - self._current).detach())

    def __call__(self, module, args, kwargs):  # forward pre-hook on the pipeline's transformer
        with torch.no_grad():
            self.truth(*args, **kwargs)


def _record_batch(pipe: DigitsDiTPipeline, truth: torch.nn.Module, policy: str, start: int,
                  config: CollectConfig) -> dict:
    count = min(config.batch_size, config.samples_per_policy - start)
    labels = [(start + i) % 10 for i in range(count)]
    with _StackRecorder(truth) as recorder:
        handle = pipe.transformer.register_forward_pre_hook(recorder, with_kwargs=True)
        if policy != "always":
            cachepilot.enable(pipe, policy, config.predictor)
        try:
            generators = [torch.Generator().manual_seed(config.seed + start + i) for i in range(count)]
            pipe(labels, num_inference_steps=config.steps, guidance_scale=config.guidance, generator=generators,
                 output_type="pt")
        finally:
            handle.remove()
            cachepilot.disable(pipe)
    hidden = torch.stack(recorder.inputs, 1).half().cpu().numpy()      # (rows, steps, tokens, dim)
    residual = torch.stack(recorder.residuals, 1).half().cpu().numpy()
    rows = hidden.shape[0]  # count x CFG copies
    return {
        "sample": [config.seed + start + (r % count) for r in range(rows)],
        "class_label": [labels[r % count] for r in range(rows)],
        "cfg_copy": [r // count for r in range(rows)],
        "policy": [policy] * rows,
        "hidden": list(hidden), "residual": list(residual),
    }


def _features(steps: int, tokens: int, dim: int) -> Features:
    return Features({
        "sample": Value("int64"), "class_label": Value("int64"), "cfg_copy": Value("int64"),
        "policy": Value("string"),
        "hidden": Array3D((steps, tokens, dim), "float16"), "residual": Array3D((steps, tokens, dim), "float16"),
    })


def _write_config(out_dir: Path, config: CollectConfig, pipe: DigitsDiTPipeline) -> None:
    for spec in config.policies:
        make_policy(spec)  # fail early on a bad spec
    meta = {"collect": asdict(config), **backbone_fingerprint(pipe.transformer)}
    path = out_dir / CONFIG_FILE
    if path.exists():
        existing = json.loads(path.read_text())
        if existing != meta:
            diff = sorted(k for k in set(existing) | set(meta) if existing.get(k) != meta.get(k))
            raise InvalidInputError(
                f"{out_dir} holds a collection made with other settings or another backbone ({', '.join(diff)} "
                "differ): use another --out, or the same settings to resume"
            )
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(meta, indent=2))


def shard_dir(out_dir: Path, shard: int, num_shards: int) -> Path:
    return Path(out_dir) / "shards" / f"shard-{shard:05d}-of-{num_shards:05d}"


def collect(
    pipe: DigitsDiTPipeline, out_dir: Path, config: CollectConfig, shards: list[int] | None = None,
    progress: bool = True,
) -> list[Path]:
    """Write the given shards (default: all) of the collection; finished shards are skipped."""
    out_dir = Path(out_dir)
    if config.samples_per_policy < 1 or config.steps < 2 or config.num_shards < 1 or config.batch_size < 1:
        raise InvalidInputError("collect needs samples >= 1, steps >= 2, shards >= 1 and batch size >= 1")
    _write_config(out_dir, config, pipe)
    if not (out_dir / WEIGHTS_FILE).exists():
        write_step_weights(out_dir, pipe, config)
    pipe.set_progress_bar_config(disable=True)
    truth = pipe.unhooked_copy().transformer  # computes the true residuals on the cached trajectories
    written = []
    todo = list(range(config.num_shards)) if shards is None else shards
    for shard in todo:
        if not 0 <= shard < config.num_shards:
            raise InvalidInputError(f"shard index {shard} is outside 0..{config.num_shards - 1}")
        target = shard_dir(out_dir, shard, config.num_shards)
        if (target / "dataset_info.json").exists():
            written.append(target)
            continue
        columns: dict[str, list] = {}
        for policy, start in tqdm(config.shard_jobs(shard), desc=f"collect shard {shard}", disable=not progress):
            for key, values in _record_batch(pipe, truth, policy, start, config).items():
                columns.setdefault(key, []).extend(values)
        if not columns:
            continue
        steps, tokens, dim = columns["hidden"][0].shape
        dataset = Dataset.from_dict(columns, features=_features(steps, tokens, dim))
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        dataset.save_to_disk(str(partial))
        partial.rename(target)  # a shard is visible only once complete
        written.append(target)
    return written


def write_step_weights(out_dir: Path, pipe: DigitsDiTPipeline, config: CollectConfig) -> None:
    """Per-step loss weights for the forecaster: the final image's sensitivity to each step."""
    from cachepilot.train.sensitivity import step_sensitivity

    weights = step_sensitivity(pipe, config.steps, guidance=config.guidance)
    (Path(out_dir) / WEIGHTS_FILE).write_text(json.dumps(weights.tolist()))


def load_step_weights(out_dir: Path, steps: int) -> torch.Tensor:
    path = Path(out_dir) / WEIGHTS_FILE
    if not path.exists():
        return torch.ones(steps)
    weights = torch.tensor(json.loads(path.read_text()))
    if weights.numel() != steps:
        raise CachepilotError(f"{path} has {weights.numel()} weights for {steps} steps")
    return weights


def load_collection(out_dir: Path, transformer: torch.nn.Module | None = None) -> Dataset:
    """All finished shards as one dataset (torch format); checks the backbone when given."""
    out_dir = Path(out_dir)
    path = out_dir / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(f"no collection at {out_dir} ({CONFIG_FILE} is missing): run `cachepilot collect`")
    meta = json.loads(path.read_text())
    if transformer is not None:
        check_fingerprint(meta, transformer, f"the collection at {out_dir}")
    shard_paths = sorted(p for p in (out_dir / "shards").glob("shard-*") if (p / "dataset_info.json").exists()
                         and not p.name.endswith(".partial")) if (out_dir / "shards").exists() else []
    if not shard_paths:
        raise CachepilotError(f"the collection at {out_dir} is empty: no finished shard")
    dataset = concatenate_datasets([load_from_disk(str(p)) for p in shard_paths])
    if len(dataset) == 0:
        raise CachepilotError(f"the collection at {out_dir} is empty")
    return dataset.with_format("torch")


def collection_meta(out_dir: Path) -> dict:
    return json.loads((Path(out_dir) / CONFIG_FILE).read_text())


def as_tensors(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden, residual), each (rows, steps, tokens, dim) float16."""
    arrays = dataset.with_format("numpy")
    return (torch.from_numpy(np.asarray(arrays["hidden"], dtype=np.float16)),
            torch.from_numpy(np.asarray(arrays["residual"], dtype=np.float16)))

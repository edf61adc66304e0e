"""`cachepilot collect`: record what a predictor learns from, as a Hugging Face dataset on disk.

For every sample and denoising step: the block stack's input and its true residual (output − input)
at that input, one dataset row per sample (Array3D (steps, tokens, hidden), float16). Trajectories
are sampled with full compute *and* under caching policies: skipping shifts the inputs the stack
sees, so a head fitted on full-compute states alone would be trained on the wrong distribution.
Under a policy the true residual is computed by the same transformer with the cache bypassed, on the
cached trajectory's own inputs (no model copy: collection is the expensive stage on a 12B model).
Every trajectory is a call of the pipeline's own `__call__` through the sampling driver: sample i
takes condition i mod len(conditions) and noise seed `seed + i`.

Work is split in shards; each worker writes its own (`--shard-index`), a finished shard is never
recomputed, so an interrupted collection resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import Array3D, Dataset, Features, Value, concatenate_datasets, load_from_disk
from tqdm.auto import tqdm

from cachepilot.conditions import class_conditions, condition_key
from cachepilot.driver import SamplingDriver, caching
from cachepilot.errors import CachepilotError, CheckpointError, InvalidInputError
from cachepilot.policies.spec import make_policy
from cachepilot.predictors.spec import make_predictor
from cachepilot.runtime.adapters import get_adapter
from cachepilot.runtime.hooks import get_engine
from cachepilot.runtime.fingerprint import backbone_fingerprint, check_fingerprint
from cachepilot.seeds import COLLECT
from cachepilot.train import distributed

CONFIG_FILE = "collect_config.json"
WEIGHTS_FILE = "step_weights.json"


@dataclass
class CollectConfig:
    samples_per_policy: int = 256
    steps: int = 50
    call_kwargs: dict = field(default_factory=dict)  # every call's kwargs (guidance_scale, height, ...)
    conditions: list = field(default_factory=list)    # per-sample call kwargs (default: the digits classes)
    seed: int = COLLECT  # training seeds: disjoint from the bench's and evaluate's
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
    """Records, for every transformer call, the block stack's input and its *true* residual.

    Without cachepilot hooks the real call is recorded. With them, a forward pre-hook on the transformer
    first runs the same call with the cache bypassed (every block for real) and records that, so cached
    trajectories get the residual the stack would have produced at the inputs the cache led to."""

    def __init__(self, transformer: torch.nn.Module):
        self.transformer = transformer
        self.blocks = get_adapter(transformer).blocks(transformer)
        self.adapter = get_adapter(transformer)
        self.inputs: list[torch.Tensor] = []
        self.residuals: list[torch.Tensor] = []
        self._recording = False
        self._current: torch.Tensor | None = None

    def __enter__(self) -> "_StackRecorder":
        self._handles = [self.blocks[0].register_forward_pre_hook(self._capture_input, with_kwargs=True),
                         self.blocks[-1].register_forward_hook(self._capture_output),
                         self.transformer.register_forward_pre_hook(self._on_call, with_kwargs=True)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()

    def _capture_input(self, module, args, kwargs):
        if self._recording:
            self._current = args[0] if args else kwargs["hidden_states"]

    def _capture_output(self, module, args, output):
        if self._recording:
            hidden_out = self.adapter.read_output(output, {})["hidden_states"]
            self.inputs.append(self._current.detach())
            self.residuals.append((hidden_out - self._current).detach())

    def _on_call(self, module, args, kwargs):
        engine = get_engine(self.transformer)
        if engine is None:  # full compute: the real call is the truth
            self._recording = True
            return None
        if engine.running_stack:  # our own bypassed call below
            return None
        self._recording = True
        try:
            with torch.no_grad(), engine.bypassed():
                self.transformer(*args, **kwargs)
        finally:
            self._recording = False
        return None


def _per_step(calls: list[torch.Tensor], steps: int, pipeline: str) -> np.ndarray:
    """(rows, steps, tokens, dim) float16 from the recorded transformer calls. A pipeline that calls its
    transformer k times per step (true CFG: a "cond" then an "uncond" call) gets its k calls of a step
    stacked as k CFG copies of the batch, the layout batched CFG has."""
    if not calls or len(calls) % steps:
        raise CachepilotError(f"{pipeline} called its transformer {len(calls)} times in {steps} steps: collection "
                              "needs the same number of calls at every step")
    k = len(calls) // steps
    per_step = [torch.cat(calls[i * k:(i + 1) * k], 0) for i in range(steps)]
    return torch.stack(per_step, 1).half().cpu().numpy()


def _record_batch(driver: SamplingDriver, policy: str, start: int, config: CollectConfig) -> dict:
    count = min(config.batch_size, config.samples_per_policy - start)
    conditions = [config.conditions[(start + i) % len(config.conditions)] for i in range(count)]
    seeds = [config.seed + start + i for i in range(count)]
    with _StackRecorder(driver.pipe.transformer) as recorder:
        with caching(driver.pipe, None if policy == "always" else policy, config.predictor):
            driver.sample(conditions, seeds)
    hidden = _per_step(recorder.inputs, config.steps, type(driver.pipe).__name__)  # (rows, steps, tokens, dim)
    residual = _per_step(recorder.residuals, config.steps, type(driver.pipe).__name__)
    rows = hidden.shape[0]  # count x CFG copies (batched CFG rows, or true CFG's contexts)
    return {
        "sample": [seeds[r % count] for r in range(rows)],
        "condition": [condition_key(conditions[r % count]) for r in range(rows)],
        "cfg_copy": [r // count for r in range(rows)],
        "policy": [policy] * rows,
        "hidden": list(hidden), "residual": list(residual),
    }


def _features(steps: int, tokens: int, dim: int) -> Features:
    return Features({
        "sample": Value("int64"), "condition": Value("string"), "cfg_copy": Value("int64"),
        "policy": Value("string"),
        "hidden": Array3D((steps, tokens, dim), "float16"), "residual": Array3D((steps, tokens, dim), "float16"),
    })


def check_config(config: CollectConfig) -> None:
    """Every setting checked before anything is written or computed."""
    if config.samples_per_policy < 1 or config.steps < 2 or config.num_shards < 1 or config.batch_size < 1:
        raise InvalidInputError("collect needs samples >= 1, steps >= 2, shards >= 1 and batch size >= 1")
    if not config.conditions:
        raise InvalidInputError("collect needs at least one condition (prompt or class id)")
    for spec in config.policies:
        make_policy(spec)  # fail early on a bad spec
    make_predictor(config.predictor)
    guidance = config.call_kwargs.get("guidance_scale")
    if guidance is not None and (isinstance(guidance, bool) or not isinstance(guidance, (int, float))
                                 or not math.isfinite(guidance) or guidance < 0):
        raise InvalidInputError(f"guidance_scale must be a finite number >= 0, got {guidance!r}")


def read_collect_config(path: Path) -> dict:
    """collect_config.json as a dict; a `CheckpointError` when it is not valid JSON or not an object."""
    try:
        meta = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("collect"), dict):
        raise CheckpointError(f"{path} is not a collection record (an object with a `collect` entry)")
    return meta


def _write_config(out_dir: Path, config: CollectConfig, pipe) -> None:
    meta = {"collect": asdict(config), **backbone_fingerprint(pipe.transformer)}
    path = out_dir / CONFIG_FILE
    if path.exists():
        existing = read_collect_config(path)
        if existing != meta:
            diff = sorted(k for k in set(existing) | set(meta) if existing.get(k) != meta.get(k))
            raise InvalidInputError(
                f"{out_dir} holds a collection made with other settings or another backbone ({', '.join(diff)} "
                "differ): use another --out, or the same settings to resume"
            )
    else:  # under torchrun every rank gets here: each writes its own file and renames it, so none reads a half
        out_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{CONFIG_FILE}.rank{distributed.launched()[0]}.partial")
        partial.write_text(json.dumps(meta, indent=2))
        partial.replace(path)


def shard_dir(out_dir: Path, shard: int, num_shards: int) -> Path:
    return Path(out_dir) / "shards" / f"shard-{shard:05d}-of-{num_shards:05d}"


def collect(
    pipe, out_dir: Path, config: CollectConfig, shards: list[int] | None = None, progress: bool = True,
) -> list[Path]:
    """Write the given shards (default: all) of the collection; finished shards are skipped.

    Under `torchrun` (WORLD_SIZE > 1) with no explicit shards, rank r writes shards r, r + W, ...: one
    process per GPU, no shard bookkeeping by hand."""
    out_dir = Path(out_dir)
    if not config.conditions:
        num_classes = getattr(pipe, "num_classes", None)
        if num_classes is not None:
            config.conditions = list(class_conditions(int(num_classes)).conditions)
    check_config(config)
    todo = list(range(config.num_shards)) if shards is None else list(shards)
    if shards is None:
        rank, world = distributed.launched()  # no collective needed: each rank writes its own shards
        todo = [todo[i] for i in distributed.share(len(todo), rank, world)]
    for shard in todo:
        if not 0 <= shard < config.num_shards:
            raise InvalidInputError(f"shard index {shard} is outside 0..{config.num_shards - 1}")
    driver = SamplingDriver(pipe, config.steps, config.call_kwargs, batch_size=config.batch_size)  # checks steps
    _write_config(out_dir, config, pipe)  # only once every setting is known good
    if distributed.launched()[0] == 0 and not (out_dir / WEIGHTS_FILE).exists():  # one rank measures them
        write_step_weights(out_dir, driver, config)
    written = []
    for shard in todo:
        target = shard_dir(out_dir, shard, config.num_shards)
        if (target / "dataset_info.json").exists():
            written.append(target)
            continue
        columns: dict[str, list] = {}
        for policy, start in tqdm(config.shard_jobs(shard), desc=f"collect shard {shard}", disable=not progress):
            for key, values in _record_batch(driver, policy, start, config).items():
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


def write_step_weights(out_dir: Path, driver: SamplingDriver, config: CollectConfig) -> None:
    """Per-step loss weights for the forecaster: the final image's sensitivity to each step."""
    from cachepilot.train.sensitivity import step_sensitivity

    weights = step_sensitivity(driver, config.conditions)
    (Path(out_dir) / WEIGHTS_FILE).write_text(json.dumps(weights.tolist()))


def reuse_step_weights(source_dir: Path, out_dir: Path, config: CollectConfig, pipe) -> bool:
    """Copy `source_dir`'s step weights to `out_dir` (where `collect` then finds them and skips
    `write_step_weights`) when the source was collected with the same steps, call kwargs and conditions on the
    same backbone: the weights depend on nothing else (fixed seeds and samples, an uncached pipeline), so they
    are the same numbers, and recomputing them costs samples x steps x (steps + 1) evaluations (40,800 at 50
    steps). False, and nothing written, when anything differs or the source has none."""
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    if (out_dir / WEIGHTS_FILE).exists() or not (source_dir / WEIGHTS_FILE).is_file() \
            or not (source_dir / CONFIG_FILE).is_file() or not config.conditions:
        return False
    stored = read_collect_config(source_dir / CONFIG_FILE)
    settings = stored["collect"]
    if (settings.get("steps"), settings.get("call_kwargs"), settings.get("conditions")) != (
            config.steps, json.loads(json.dumps(config.call_kwargs)), json.loads(json.dumps(config.conditions))):
        return False
    if any(stored.get(k) != v for k, v in backbone_fingerprint(pipe.transformer).items()):
        return False
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / (WEIGHTS_FILE + ".partial")
    shutil.copyfile(source_dir / WEIGHTS_FILE, partial)
    partial.replace(out_dir / WEIGHTS_FILE)  # whole or absent: `collect` only asks whether it exists
    return True


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
    meta = read_collect_config(path)
    if transformer is not None:
        check_fingerprint(meta, transformer, f"the collection at {out_dir}")
    shard_paths = sorted(p for p in (out_dir / "shards").glob("shard-*") if (p / "dataset_info.json").exists()
                         and not p.name.endswith(".partial")) if (out_dir / "shards").exists() else []
    if not shard_paths:
        raise CachepilotError(f"the collection at {out_dir} is empty: no finished shard")
    dataset = concatenate_datasets([_load_shard(p) for p in shard_paths])
    if len(dataset) == 0:
        raise CachepilotError(f"the collection at {out_dir} is empty")
    return dataset.with_format("torch")


def _load_shard(path: Path) -> Dataset:
    """One finished shard, read through so a truncated or corrupt Arrow file is a clear error here, not a
    traceback in the middle of training."""
    try:
        shard = load_from_disk(str(path))
        shard.with_format("numpy")[len(shard) - 1]  # touches the last record: truncation shows now
        return shard
    except Exception as err:
        raise CheckpointError(f"the collection shard {path} is corrupt or truncated ({type(err).__name__}): "
                              "delete it and rerun `cachepilot collect` with the same settings to rewrite it") from None


def collection_meta(out_dir: Path) -> dict:
    return read_collect_config(Path(out_dir) / CONFIG_FILE)


def as_tensors(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden, residual), each (rows, steps, tokens, dim) float16."""
    arrays = dataset.with_format("numpy")
    return (torch.from_numpy(np.asarray(arrays["hidden"], dtype=np.float16)),
            torch.from_numpy(np.asarray(arrays["residual"], dtype=np.float16)))

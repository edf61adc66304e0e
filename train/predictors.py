"""`cachepilot train predictors`: fit the learned forecaster head on collected trajectories.

Training examples mimic the cache states the engine produces: a target step, and a history of the
last K computed residuals at gaps drawn like the engine's schedules (fixed intervals 2-6 or random
gaps), taken from full-compute and cached trajectories alike. Collections at several step counts train one
head (time and gaps are normalised by the count, and a head fitted at one count does not transfer to another's
short gaps: at 50 steps the 20-step scenes head lost 3-8 dB to Taylor-1 on intervals 2-4). A LightningModule +
DataModule, so `--devices N --strategy ddp` runs data-parallel with no code change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import torch

from cachepilot.train import lightning_run
from cachepilot.train.checkpoints import resume_checkpoint
from cachepilot.train.lightning_run import trainer_callbacks
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler

from cachepilot.errors import CachepilotError, InvalidInputError
from cachepilot.predictors.learned import Learned, ResidualForecaster
from cachepilot.predictors.taylor import Taylor
from cachepilot.train.collect import as_tensors, collection_meta, load_collection, load_step_weights

FINGERPRINT_KEYS = ("backbone_class", "backbone_config_hash", "hidden_size")
VALIDATION_INTERVALS = (2, 3, 4, 5)  # the fixed intervals the validation scores, one dataloader each
BEST_FILE = "best"  # the best validated head's Lightning checkpoint in the work dir (best.ckpt)


@dataclass
class PredictorConfig:
    history: int = 3
    rank: int = 16
    width: int = 64
    max_gap: int = 12  # threshold policies leave gaps far beyond the fixed intervals
    batch_size: int = 16  # trajectories (x ~35 forecasts each)
    max_steps: int = 3000
    lr: float = 2e-3
    val_every: int = 500
    seed: int = 0
    checkpoint_every: int = 500  # optimisation steps between checkpoints: the most a kill can lose
    patience: int | None = 3  # validations without a lower `val/loss` before training stops (None: never early);
                              # the head saved is the best validated one either way


def schedule_computes(steps: int, interval: int | None, max_gap: int, generator: torch.Generator) -> torch.Tensor:
    """Computed step indices of one trajectory: every `interval`-th step, or random gaps in 1..max_gap."""
    if interval is not None:
        return torch.arange(0, steps, interval)
    gaps = torch.randint(1, max_gap + 1, (steps,), generator=generator)
    computes = torch.cat([torch.zeros(1, dtype=torch.long), gaps.cumsum(0)])
    return computes[computes < steps]


class TrajectoryDataset(Dataset):
    """One item = one recorded trajectory under one cache schedule: every skipped step of it, each
    with the history the engine would hold there (the last K computes), padded to steps - 1 targets.

    Forecast errors of one trajectory add up in the final image, and errors that share a direction
    over many steps add up fastest (they do: a one-step loss alone made a head that beat Taylor per
    step and lost to it per image), so the loss sees the whole trajectory at once.
    """

    def __init__(self, hidden: torch.Tensor, residual: torch.Tensor, rows: torch.Tensor, history: int,
                 max_gap: int, step_weights: torch.Tensor, fixed_interval: int | None = None, seed: int = 0,
                 pad_to: int | None = None):
        self.hidden, self.residual, self.rows = hidden, residual, rows
        self.history, self.max_gap, self.fixed_interval = history, max_gap, fixed_interval
        self.step_weights, self.seed, self.epoch = step_weights, seed, 0
        self.steps = hidden.shape[1]
        self.pad_to = max(pad_to or 0, self.steps - 1)  # targets per item: several step counts share a batch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = int(self.rows[index])
        generator = torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) % 2**31)
        interval = self.fixed_interval
        if interval is None and torch.rand((), generator=generator) < 0.5:
            interval = int(torch.randint(2, self.max_gap + 1, (), generator=generator))
        computes = schedule_computes(self.steps, interval, self.max_gap, generator)
        is_compute = torch.zeros(self.steps, dtype=torch.bool)
        is_compute[computes] = True
        targets = torch.nonzero(~is_compute).flatten()                        # skipped steps
        last = torch.searchsorted(computes, targets, right=True) - 1          # index of the last compute
        hist_idx = last[:, None] - torch.arange(self.history)[None, :]        # (S, K) into computes
        valid = hist_idx >= 0
        hist_steps = computes[hist_idx.clamp(min=0)]                          # (S, K)
        pad = self.pad_to - len(targets)
        mask = torch.cat([torch.ones(len(targets)), torch.zeros(pad)])
        targets_p = torch.cat([targets, torch.zeros(pad, dtype=torch.long)])
        hist_p = torch.cat([hist_steps, torch.zeros(pad, self.history, dtype=torch.long)])
        valid_p = torch.cat([valid, torch.zeros(pad, self.history, dtype=torch.bool)])
        residuals = self.residual[row, hist_p].float() * valid_p[..., None, None]   # (S, K, N, D)
        return {
            "residuals": residuals, "steps": hist_p.float(), "count": valid_p.sum(1),
            "step": targets_p.float(), "hidden": self.hidden[row, targets_p].float(),
            "hidden_at_compute": self.hidden[row, hist_p[:, 0]].float(),
            "target": self.residual[row, targets_p].float(), "weight": self.step_weights[targets_p] * mask,
            "mask": mask, "num_steps": torch.full((len(mask),), float(self.steps)),
        }


class _Trajectories(ConcatDataset):
    """One `TrajectoryDataset` per step count, items padded alike; `epoch` reaches them all."""

    @property
    def epoch(self) -> int:
        return self.datasets[0].epoch

    @epoch.setter
    def epoch(self, value: int) -> None:
        for dataset in self.datasets:
            dataset.epoch = value


class ResumableBatches(Sampler):
    """Batches of one permutation per epoch (seeded by seed + epoch), started at a global batch index: a run resumed
    at step g trains on exactly the batches the uninterrupted run saw from step g on, with the same random schedules
    (the dataset's epoch follows). A shuffling DataLoader restarts the interrupted epoch in a new order instead, and
    `on_train_epoch_start` is not called on a mid-epoch resume: a head resumed at step 3 of 6 then differed from the
    uninterrupted one by max |diff| 3e-3 (now 0)."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, start: int = 0):
        self.dataset, self.batch_size, self.seed, self.position = dataset, batch_size, seed, start
        self.per_epoch = len(dataset) // batch_size  # drop_last

    def __len__(self) -> int:
        return self.per_epoch

    def __iter__(self):
        epoch, skip = divmod(self.position, self.per_epoch)
        self.dataset.epoch = epoch
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed + epoch))
        self.position = (epoch + 1) * self.per_epoch  # the next epoch starts whole
        for b in range(skip, self.per_epoch):
            yield order[b * self.batch_size:(b + 1) * self.batch_size].tolist()


class PredictorDataModule(pl.LightningDataModule):
    """Rows whose sample id ends in 0 are held out for validation (model selection only; the
    benchmark evaluates on seeds never collected)."""

    def __init__(self, data_dirs: Path | list[Path], config: PredictorConfig):
        super().__init__()
        self.data_dirs = [Path(d) for d in (data_dirs if isinstance(data_dirs, (list, tuple)) else [data_dirs])]
        self.config = config

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "groups"):  # loaded up front by train_predictors (to check the batch size)
            return
        by_steps: dict[int, list] = {}
        for data_dir in self.data_dirs:
            dataset = load_collection(data_dir)
            hidden, residual = as_tensors(dataset)
            samples = torch.as_tensor(dataset.with_format("numpy")["sample"])
            by_steps.setdefault(hidden.shape[1], []).append((data_dir, hidden, residual, samples))
        if len({part[1].shape[2:] for parts in by_steps.values() for part in parts}) > 1:
            raise CachepilotError("the collections differ in feature shape (tokens, hidden): train on one kind at a time")
        self.groups = []  # per step count: hidden, residual, step weights, train rows, val rows
        for steps, parts in sorted(by_steps.items()):
            samples = torch.cat([p[3] for p in parts])
            val = samples % 10 == 0
            self.groups.append(SimpleNamespace(
                hidden=torch.cat([p[1] for p in parts]), residual=torch.cat([p[2] for p in parts]),
                step_weights=load_step_weights(parts[0][0], steps), steps=steps,
                train_rows=torch.nonzero(~val).flatten(), val_rows=torch.nonzero(val).flatten()))
        self.num_steps = self.groups[0].steps
        self.train_rows = torch.cat([g.train_rows for g in self.groups])  # counted by train_predictors
        if len(self.train_rows) == 0:
            raise CachepilotError(f"the collections at {[str(d) for d in self.data_dirs]} have no training rows")
        if len(self.train_rows) < self.config.batch_size:  # drop_last: not one batch, not one optimisation step
            raise InvalidInputError(f"batch size {self.config.batch_size} is larger than the {len(self.train_rows)} "
                                    "training trajectories: no optimisation step would run (lower --batch-size)")

    def _dataset(self, rows_of, **kwargs) -> _Trajectories:
        c, pad_to = self.config, max(g.steps for g in self.groups) - 1
        return _Trajectories([TrajectoryDataset(g.hidden, g.residual, rows_of(g), c.history, c.max_gap, g.step_weights,
                                                pad_to=pad_to, **kwargs) for g in self.groups if len(rows_of(g))])

    def train_dataloader(self) -> DataLoader:
        self.train_set = self._dataset(lambda g: g.train_rows, seed=self.config.seed)
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.world_size > 1:  # DDP: Lightning's distributed sampler shards the rows
            return DataLoader(self.train_set, batch_size=self.config.batch_size, shuffle=True, drop_last=True)
        batches = ResumableBatches(self.train_set, self.config.batch_size, self.config.seed, trainer.global_step)
        return DataLoader(self.train_set, batch_sampler=batches)

    def val_dataloader(self) -> list[DataLoader]:
        rows_of = lambda g: g.val_rows if len(g.val_rows) else g.train_rows[:1]  # noqa: E731
        return [DataLoader(self._dataset(rows_of, fixed_interval=n), batch_size=64) for n in VALIDATION_INTERVALS]


class PredictorModule(pl.LightningModule):
    def __init__(self, hidden_size: int, num_steps: int, config: PredictorConfig):
        super().__init__()
        self.save_hyperparameters({"hidden_size": hidden_size, "num_steps": num_steps, "config": asdict(config)})
        self.config, self.num_steps = config, num_steps
        self.model = ResidualForecaster(hidden_size, history=config.history, rank=config.rank, width=config.width)

    @staticmethod
    def _flat(batch: dict) -> dict:
        """(B, S, ...) trajectory items -> one batch of B x S forecasts."""
        return {k: v.flatten(0, 1) for k, v in batch.items()}

    def _forecast(self, flat: dict) -> torch.Tensor:
        return self.model(flat["residuals"].transpose(0, 1), flat["steps"].T, flat["count"], flat["step"],
                          flat["num_steps"], flat["hidden"], flat["hidden_at_compute"])

    @staticmethod
    def trajectory_error(forecast: torch.Tensor, flat: dict, batch_size: int) -> torch.Tensor:
        """Image-error surrogate per trajectory: |sum_t sqrt(w_t) e_t|^2 (errors that keep their
        direction accumulate) plus sum_t w_t |e_t|^2; w_t = the step's measured effect on the final
        image (train.sensitivity). Shape (batch,)."""
        error = (forecast - flat["target"]) * flat["weight"].clamp(min=0).sqrt().view(-1, 1, 1)
        error = error.view(batch_size, -1, *error.shape[1:])
        return error.sum(1).pow(2).flatten(1).mean(1) + error.pow(2).flatten(2).mean(2).sum(1)

    def trajectory_loss(self, forecast: torch.Tensor, flat: dict, batch_size: int) -> torch.Tensor:
        """Mean over trajectories of the error relative to Taylor order 1's on the same trajectory:
        long-gap schedules have errors orders of magnitude larger, and would otherwise drown the
        short ones (a per-sample baseline, as DDPO normalises rewards)."""
        with torch.no_grad():
            history = SimpleNamespace(residuals=flat["residuals"].transpose(0, 1), steps=flat["steps"].T,
                                      count=flat["count"])
            baseline = self.trajectory_error(Taylor(1).predict(history, flat["step"]), flat, batch_size)
        return (self.trajectory_error(forecast, flat, batch_size) / baseline.clamp(min=1e-8)).mean()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        flat = self._flat(batch)
        loss = self.trajectory_loss(self._forecast(flat), flat, batch["mask"].shape[0])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_epoch_start(self) -> None:
        train_set = getattr(self.trainer.datamodule, "train_set", None)
        if train_set is not None:
            train_set.epoch = self.current_epoch  # new random schedules every epoch

    def on_validation_epoch_start(self) -> None:
        self._val_sums = torch.zeros(len(VALIDATION_INTERVALS), 2, device=self.device)  # learned, Taylor-1 errors

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        interval = VALIDATION_INTERVALS[dataloader_idx]
        flat, size = self._flat(batch), batch["mask"].shape[0]
        history = SimpleNamespace(residuals=flat["residuals"].transpose(0, 1), steps=flat["steps"].T,
                                  count=flat["count"])
        errors = self.trajectory_error(self._forecast(flat), flat, size)
        self.log(f"val/learned_fixed{interval}", errors.mean(), add_dataloader_idx=False, sync_dist=True)
        for order in (1, 2):  # the training-free forecasters on the same cache states
            taylor = self.trajectory_error(Taylor(order).predict(history, flat["step"]), flat, size)  # per-row steps
            self.log(f"val/taylor{order}_fixed{interval}", taylor.mean(), add_dataloader_idx=False, sync_dist=True)
            if order == 1:
                self._val_sums[dataloader_idx] += torch.stack([errors.sum(), taylor.sum()])

    def on_validation_epoch_end(self) -> None:
        """`val/loss`: the mean over intervals of the head's error relative to Taylor-1's (the training loss's
        scale: long intervals' errors are orders of magnitude larger and would decide alone), which early stopping
        and the best checkpoint follow."""
        sums = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum")
        self.log("val/loss", (sums[:, 0] / sums[:, 1].clamp(min=1e-12)).mean())

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.config.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(self.config.max_steps, 1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def check_finished(data_dirs: list[Path]) -> None:
    """A shard still named *.partial is one a killed `collect` left unfinished: training on the rest would silently
    drop its rows, so it is refused, named with its row count."""
    from datasets import load_from_disk

    for path in data_dirs:
        for partial in sorted((path / "shards").glob("*.partial")) if (path / "shards").is_dir() else []:
            try:
                rows = f"{len(load_from_disk(str(partial)))} rows"
            except Exception:  # killed mid-write: no readable record of its rows
                rows = "its rows unreadable"
            raise CachepilotError(f"the collection shard {partial} is unfinished ({rows}; a killed `cachepilot "
                                  "collect`): rerun collect with the same settings to finish it, or delete it")


def train_predictors(
    data_dir: Path | list[Path], out_dir: Path | None, work_dir: Path, config: PredictorConfig, resume: bool = False,
    devices: int = 1, strategy: str = "auto", accelerator: str = "auto", progress: bool = True,
    init: Path | None = None,
) -> PredictorModule:
    """Fit the head; Lightning checkpoints in `work_dir` (`resume` continues from last.ckpt);
    the head, with the backbone fingerprint of the collection, saved to `out_dir`. `init`: a saved head
    to start from (fine-tuning on new schedules or data; its history / rank / width are taken)."""
    work_dir = Path(work_dir)
    last = resume_checkpoint(work_dir) if resume and work_dir.is_dir() else None
    if resume and last is None:
        raise FileNotFoundError(f"--resume: no checkpoint to resume from at {work_dir / 'last.ckpt'}")
    data_dirs = [Path(d) for d in (data_dir if isinstance(data_dir, (list, tuple)) else [data_dir])]
    metas = []
    for path in data_dirs:
        if not (path / "collect_config.json").exists():
            load_collection(path)  # raises the clear "no collection" error
        metas.append(collection_meta(path))
    check_finished(data_dirs)
    meta = metas[0]
    for path, other in zip(data_dirs[1:], metas[1:]):
        for key in FINGERPRINT_KEYS:
            if other[key] != meta[key]:
                raise CachepilotError(f"{path} was collected on another backbone than {data_dirs[0]} ({key} differs)")
    pl.seed_everything(config.seed, workers=True, verbose=False)
    data = PredictorDataModule(data_dirs, config)
    data.setup("fit")  # before the trainer: a batch larger than the data would run zero optimisation steps
    if len(data.train_rows) // max(devices, 1) < config.batch_size:
        raise InvalidInputError(f"batch size {config.batch_size} is larger than the {len(data.train_rows)} training "
                                f"trajectories{f' / {devices} devices' if devices > 1 else ''}: no optimisation "
                                "step would run (lower --batch-size)")
    counts = sorted({int(m["collect"]["steps"]) for m in metas})
    steps = counts[0]
    start = None
    if init is not None and last is None:
        start = Learned.from_pretrained(init)
        if start.model.config.hidden_size != int(meta["hidden_size"]):
            raise CachepilotError(f"--init {init}: a head for hidden size {start.model.config.hidden_size}, the "
                                  f"collection's backbone has {meta['hidden_size']}")
        head = start.model.config
        config = PredictorConfig(**{**asdict(config), "history": head.history, "rank": head.rank, "width": head.width})
    module = PredictorModule(int(meta["hidden_size"]), steps, config)
    if start is not None:
        module.model.load_state_dict(start.model.state_dict())
    best = ModelCheckpoint(dirpath=work_dir, filename=BEST_FILE, monitor="val/loss", mode="min", save_top_k=1,
                           enable_version_counter=False)
    stopping = [EarlyStopping("val/loss", patience=config.patience, mode="min", check_on_train_epoch_end=False)
                ] if config.patience is not None else []
    trainer = pl.Trainer(
        max_steps=config.max_steps, accelerator=accelerator, devices=devices, strategy=strategy,
        default_root_dir=work_dir, logger=pl.loggers.CSVLogger(work_dir, name="logs"),
        callbacks=[ModelCheckpoint(dirpath=work_dir, save_last=True, enable_version_counter=False,
                                   every_n_train_steps=config.checkpoint_every), best, *stopping]
        + trainer_callbacks(work_dir, progress),
        val_check_interval=config.val_every, check_val_every_n_epoch=None, enable_progress_bar=progress,
        enable_model_summary=False, log_every_n_steps=min(25, config.max_steps),
    )
    lightning_run.fit(trainer, module, data, work_dir, last)
    if best.best_model_path:  # the best validated head, not the last: later steps may only have overfitted
        module.load_state_dict(torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"])
    if out_dir is not None and trainer.is_global_zero:
        fingerprint = {k: meta[k] for k in FINGERPRINT_KEYS}
        fingerprint["num_steps_trained"] = steps if len(counts) == 1 else counts
        Learned(module.model.cpu(), fingerprint).save_pretrained(out_dir)
    return module

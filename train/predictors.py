"""`cachepilot train predictors`: fit the learned forecaster head on collected trajectories.

Training examples mimic the cache states the engine produces: a target step, and a history of the
last K computed residuals at gaps drawn like the engine's schedules (fixed intervals 2-6 or random
gaps), taken from full-compute and cached trajectories alike. A LightningModule + DataModule, so
`--devices N --strategy ddp` runs data-parallel with no code change.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, Dataset

from cachepilot.errors import CachepilotError
from cachepilot.predictors.learned import Learned, ResidualForecaster
from cachepilot.predictors.taylor import Taylor
from cachepilot.train.collect import as_tensors, collection_meta, load_collection, load_step_weights

FINGERPRINT_KEYS = ("backbone_class", "backbone_config_hash", "hidden_size")


@dataclass
class PredictorConfig:
    history: int = 3
    rank: int = 16
    width: int = 64
    max_gap: int = 6
    batch_size: int = 256
    max_steps: int = 3000
    lr: float = 2e-3
    val_every: int = 500
    seed: int = 0


class CacheStateDataset(Dataset):
    """(row, target step) pairs; each item draws a history the way the engine would have cached it."""

    def __init__(self, hidden: torch.Tensor, residual: torch.Tensor, rows: torch.Tensor, history: int,
                 max_gap: int, fixed_interval: int | None = None, step_weights: torch.Tensor | None = None):
        self.hidden, self.residual = hidden, residual
        self.step_weights = step_weights if step_weights is not None else torch.ones(hidden.shape[1])
        steps = hidden.shape[1]
        self.pairs = torch.cartesian_prod(rows, torch.arange(1, steps))
        self.history, self.max_gap, self.fixed_interval = history, max_gap, fixed_interval
        if fixed_interval is not None:  # deterministic validation: only steps that interval would skip
            self.pairs = self.pairs[self.pairs[:, 1] % fixed_interval != 0]

    def __len__(self) -> int:
        return len(self.pairs)

    def _history_steps(self, t: int) -> list[int]:
        interval = self.fixed_interval
        if interval is None and torch.rand(()) < 0.5:
            interval = int(torch.randint(2, self.max_gap + 1, ()))
        if interval is not None:
            last = (t - 1) // interval * interval if t % interval == 0 else t // interval * interval
            return [last - k * interval for k in range(self.history)]
        gaps = torch.randint(1, self.max_gap + 1, (self.history,)).cumsum(0)
        return [t - int(g) for g in gaps]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row, t = (int(v) for v in self.pairs[index])
        steps = self._history_steps(t)
        valid = [s >= 0 for s in steps]  # steps decrease: the valid ones are a prefix
        count = sum(valid)
        safe = [max(s, 0) for s in steps]
        residuals = self.residual[row, safe].float() * torch.tensor(valid, dtype=torch.float32)[:, None, None]
        return {
            "residuals": residuals, "steps": torch.tensor(safe, dtype=torch.float32), "count": torch.tensor(count),
            "step": torch.tensor(float(t)), "hidden": self.hidden[row, t].float(),
            "hidden_at_compute": self.hidden[row, safe[0]].float(), "target": self.residual[row, t].float(),
            "weight": self.step_weights[t],
        }


class PredictorDataModule(pl.LightningDataModule):
    """Rows whose sample id ends in 0 are held out for validation (model selection only; the
    benchmark evaluates on seeds never collected)."""

    def __init__(self, data_dir: Path, config: PredictorConfig):
        super().__init__()
        self.data_dir, self.config = Path(data_dir), config

    def setup(self, stage: str | None = None) -> None:
        dataset = load_collection(self.data_dir)
        self.hidden, self.residual = as_tensors(dataset)
        self.num_steps = self.hidden.shape[1]
        self.step_weights = load_step_weights(self.data_dir, self.num_steps)
        samples = torch.as_tensor(dataset.with_format("numpy")["sample"])
        val = samples % 10 == 0
        self.train_rows, self.val_rows = torch.nonzero(~val).flatten(), torch.nonzero(val).flatten()
        if len(self.train_rows) == 0:
            raise CachepilotError(f"the collection at {self.data_dir} has no training rows")

    def train_dataloader(self) -> DataLoader:
        c = self.config
        data = CacheStateDataset(self.hidden, self.residual, self.train_rows, c.history, c.max_gap,
                                 step_weights=self.step_weights)
        return DataLoader(data, batch_size=c.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self) -> list[DataLoader]:
        c = self.config
        rows = self.val_rows if len(self.val_rows) else self.train_rows[:1]
        return [DataLoader(CacheStateDataset(self.hidden, self.residual, rows, c.history, c.max_gap, n,
                                             self.step_weights), batch_size=4096) for n in (2, 3, 4, 5)]


class PredictorModule(pl.LightningModule):
    def __init__(self, hidden_size: int, num_steps: int, config: PredictorConfig):
        super().__init__()
        self.save_hyperparameters({"hidden_size": hidden_size, "num_steps": num_steps, "config": asdict(config)})
        self.config, self.num_steps = config, num_steps
        self.model = ResidualForecaster(hidden_size, history=config.history, rank=config.rank, width=config.width)

    def _forecast(self, batch: dict) -> torch.Tensor:
        return self.model(batch["residuals"].transpose(0, 1), batch["steps"].T, batch["count"], batch["step"],
                          self.num_steps, batch["hidden"], batch["hidden_at_compute"])

    @staticmethod
    def weighted_mse(forecast: torch.Tensor, batch: dict) -> torch.Tensor:
        """Residual MSE weighted by the step's effect on the final image (see train.sensitivity)."""
        per_example = (forecast - batch["target"]).pow(2).flatten(1).mean(1)
        return (per_example * batch["weight"]).mean()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.weighted_mse(self._forecast(batch), batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        interval = (2, 3, 4, 5)[dataloader_idx]
        history = SimpleNamespace(residuals=batch["residuals"].transpose(0, 1), steps=batch["steps"].T,
                                  count=batch["count"])
        loss = self.weighted_mse(self._forecast(batch), batch)
        self.log(f"val/learned_fixed{interval}", loss, add_dataloader_idx=False, sync_dist=True)
        for order in (1, 2):  # the training-free forecasters on the same cache states
            taylor = Taylor(order).predict(history, batch["step"])  # per-row steps broadcast
            self.log(f"val/taylor{order}_fixed{interval}", self.weighted_mse(taylor, batch),
                     add_dataloader_idx=False, sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.config.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(self.config.max_steps, 1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def train_predictors(
    data_dir: Path, out_dir: Path | None, work_dir: Path, config: PredictorConfig, resume: bool = False,
    devices: int = 1, strategy: str = "auto", accelerator: str = "auto", progress: bool = True,
) -> PredictorModule:
    """Fit the head; Lightning checkpoints in `work_dir` (`resume` continues from last.ckpt);
    the head, with the backbone fingerprint of the collection, saved to `out_dir`."""
    work_dir = Path(work_dir)
    last = work_dir / "last.ckpt"
    if resume and not last.exists():
        raise FileNotFoundError(f"--resume: no checkpoint to resume from at {last}")
    meta = collection_meta(data_dir) if (Path(data_dir) / "collect_config.json").exists() else None
    if meta is None:
        load_collection(data_dir)  # raises the clear "no collection" error
    pl.seed_everything(config.seed, workers=True, verbose=False)
    data = PredictorDataModule(data_dir, config)
    steps = int(meta["collect"]["steps"])
    module = PredictorModule(int(meta["hidden_size"]), steps, config)
    trainer = pl.Trainer(
        max_steps=config.max_steps, accelerator=accelerator, devices=devices, strategy=strategy,
        default_root_dir=work_dir, logger=pl.loggers.CSVLogger(work_dir, name="logs"),
        callbacks=[ModelCheckpoint(dirpath=work_dir, save_last=True, enable_version_counter=False,
                                   every_n_train_steps=config.val_every)],
        val_check_interval=config.val_every, check_val_every_n_epoch=None, enable_progress_bar=progress,
        enable_model_summary=False, log_every_n_steps=25,
    )
    trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume else None)
    if out_dir is not None and trainer.is_global_zero:
        fingerprint = {k: meta[k] for k in FINGERPRINT_KEYS}
        fingerprint["num_steps_trained"] = steps
        Learned(module.model.cpu(), fingerprint).save_pretrained(out_dir)
    return module

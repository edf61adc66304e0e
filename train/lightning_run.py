"""What the Lightning trainers (backbone, predictors) share: Ctrl-C saves a resumable checkpoint and ends in one
line, a resumed checkpoint is read as tensors only, and the progress bar counts steps, not a bogus epoch total."""

from __future__ import annotations

import pickle
import signal
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, RichProgressBar

from cachepilot.errors import CheckpointError, Interrupted

INTERRUPT_FILE = "last.ckpt"  # --resume reads it first


class _SaveOnInterrupt(Callback):
    """On Ctrl-C, the current state to WORK_DIR/last.ckpt (what `--resume` continues from)."""

    def __init__(self, path: Path):
        self.path = path

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt) and trainer.is_global_zero:
            trainer.save_checkpoint(self.path)


class _StepsProgressBar(RichProgressBar):
    """"Epoch 19", not "Epoch 19/-2": these trainers stop at a step count (max_epochs -1)."""

    def _get_train_description(self, current_epoch: int) -> str:
        return f"Epoch {current_epoch}"


def trainer_callbacks(work_dir: Path, progress: bool) -> list[Callback]:
    return [_SaveOnInterrupt(Path(work_dir) / INTERRUPT_FILE)] + ([_StepsProgressBar()] if progress else [])


def check_tensors_only(path: Path) -> None:
    """A checkpoint to resume from must load with torch.load(weights_only=True): one that carries pickled objects
    could run code when unpickled, and is refused."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path} holds objects that are not tensors (a pickled payload): refused, not "
                              "loaded; resume from a checkpoint cachepilot wrote, or start without --resume") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path} could not be read ({type(err).__name__}): it looks truncated or corrupt") from None


def fit(trainer: pl.Trainer, module: pl.LightningModule, datamodule: pl.LightningDataModule, work_dir: Path,
        ckpt_path: Path | None) -> None:
    """trainer.fit, with a fresh work dir's "not empty" warning silenced (its logs land there first) and Ctrl-C
    turned into `Interrupted` once the checkpoint is saved (Lightning itself would exit 1)."""
    if ckpt_path is not None:
        check_tensors_only(Path(ckpt_path))
    handler = signal.getsignal(signal.SIGINT)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path is not None else None)
    except SystemExit:
        if trainer.interrupted:
            raise Interrupted(f"interrupted at step {trainer.global_step}; saved {Path(work_dir) / INTERRUPT_FILE} "
                              "(continue: the same command with --resume)") from None
        raise
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores SIGINT from a Ctrl-C on

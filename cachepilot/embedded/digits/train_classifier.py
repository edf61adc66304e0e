"""`cachepilot train classifier`: the reference classifier, fitted on the training split only.

The held-out split stays unseen by every model, so the classifier's accuracy on it and the
Fréchet floor (train split vs. held-out) are honest. It lives beside the model whose metrics use it.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from cachepilot.embedded.digits.classifier import DigitsClassifier
from cachepilot.embedded.digits.data import load_digits_split


def random_shift(images: torch.Tensor, max_shift: int = 1) -> torch.Tensor:
    """Shift each image by up to one pixel (zero padded): generated digits are not perfectly centred."""
    padded = F.pad(images, (max_shift,) * 4)
    n, size = images.shape[0], images.shape[-1]
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2, n)).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + size, dx[i]:dx[i] + size] for i in range(n)])


class ClassifierModule(pl.LightningModule):
    """Cross-entropy on shifted training digits; validation accuracy on the held-out split."""

    def __init__(self, lr: float = 2e-3):
        super().__init__()
        self.model = DigitsClassifier()
        self.lr = lr

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        loss = F.cross_entropy(self.model(random_shift(images)), labels)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        self.log("val/acc", (self.model(images).argmax(-1) == labels).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=1e-4)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.trainer.max_epochs)}


@torch.no_grad()
def held_out_accuracy(model: DigitsClassifier) -> float:
    split = load_digits_split()
    model.eval()
    return (model(split.held_out_images).argmax(-1) == split.held_out_labels).float().mean().item()


def train_classifier(out_dir: Path | None, epochs: int = 60, seed: int = 0, progress: bool = True) -> float:
    """Fit, save (if `out_dir`), and return the accuracy on the held-out real digits."""
    pl.seed_everything(seed, workers=True, verbose=False)
    split = load_digits_split()
    train = DataLoader(TensorDataset(split.train_images, split.train_labels), batch_size=64, shuffle=True)
    held_out = DataLoader(TensorDataset(split.held_out_images, split.held_out_labels), batch_size=512)
    module = ClassifierModule()
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=progress, enable_model_summary=False, check_val_every_n_epoch=10,
    )
    trainer.fit(module, train, held_out)
    accuracy = held_out_accuracy(module.model)
    if out_dir is not None:
        module.model.save_pretrained(out_dir, safe_serialization=True)
    return accuracy

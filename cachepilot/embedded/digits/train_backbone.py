"""`cachepilot train backbone`: the embedded class-conditional DiT, trained on the digits.

A LightningModule around an unmodified diffusers `DiTTransformer2DModel` (epsilon prediction),
with EMA through Lightning's `EMAWeightAveraging` and resumable checkpoints through
`ModelCheckpoint`. The exported artefact is a diffusers pipeline directory. It lives beside the
model it trains: code outside `cachepilot.embedded` serves every pipeline and never imports it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DiTTransformer2DModel
from diffusers.models.embeddings import LabelEmbedding
from diffusers.utils import logging as diffusers_logging
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from cachepilot.embedded.digits.data import IMAGE_SIZE, NUM_CLASSES, load_digits_split, to_model_range
from cachepilot.embedded.digits.pipeline import DigitsDiTPipeline
from cachepilot.errors import InvalidInputError
from cachepilot.train import lightning_run
from cachepilot.train.checkpoints import resume_checkpoint
from cachepilot.train.lightning_run import check_tensors_only, trainer_callbacks


@dataclass
class BackboneConfig:
    """Architecture and optimisation of the embedded backbone (defaults = the shipped model)."""

    num_layers: int = 6
    num_attention_heads: int = 4
    attention_head_dim: int = 32
    patch_size: int = 2  # 8x8 digits, patch 2 -> 16 tokens
    max_steps: int = 6000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 200
    ema_decay: float = 0.999
    null_label_prob: float = 0.15  # classifier-free guidance: share of labels swapped for the null class
    seed: int = 0
    scheduler: dict = field(
        default_factory=lambda: {
            "num_train_timesteps": 1000,
            "beta_schedule": "squaredcos_cap_v2",
            "prediction_type": "epsilon",
            "clip_sample": True,
            "set_alpha_to_one": True,
            "timestep_spacing": "trailing",
        }
    )


def build_transformer(config: BackboneConfig) -> DiTTransformer2DModel:
    """A fresh DiT with classifier-free-guidance-safe label embeddings.

    diffusers' DiT drops the label independently in every block (p=0.1), so the whole
    unconditional path is never trained; we disable that and drop labels per sample instead.
    """
    model = DiTTransformer2DModel(
        num_attention_heads=config.num_attention_heads,
        attention_head_dim=config.attention_head_dim,
        in_channels=1,
        out_channels=1,
        num_layers=config.num_layers,
        sample_size=IMAGE_SIZE,
        patch_size=config.patch_size,
        num_embeds_ada_norm=NUM_CLASSES,  # the null class is id NUM_CLASSES
    )
    disable_label_dropout(model)
    return model


def disable_label_dropout(model: torch.nn.Module) -> None:
    """No per-block label dropout: the null class is drawn per sample in `diffusion_loss` instead."""
    for module in model.modules():
        if isinstance(module, LabelEmbedding):
            module.dropout_prob = 0.0


def build_scheduler(config: BackboneConfig) -> DDIMScheduler:
    """The inference scheduler the exported pipeline ships; training noises with a DDPM copy of its config."""
    return DDIMScheduler(**config.scheduler)


class BackboneModule(pl.LightningModule):
    """Denoising (epsilon) loss on randomly noised digits, labels dropped to the null class."""

    def __init__(self, config: BackboneConfig):
        super().__init__()
        self.save_hyperparameters({"config": asdict(config)})
        self.config = config
        self.transformer = build_transformer(config)
        self.noise_scheduler = DDPMScheduler.from_config(build_scheduler(config).config)
        self.register_buffer(
            "alphas_cumprod", self.noise_scheduler.alphas_cumprod.clone().float(), persistent=False
        )

    def diffusion_loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x0 = to_model_range(images)
        drop = torch.rand(labels.shape, device=labels.device) < self.config.null_label_prob
        labels = torch.where(drop, torch.full_like(labels, NUM_CLASSES), labels)
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, labels.shape, device=x0.device)
        noise = torch.randn_like(x0)
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = self.transformer(noisy, timestep=t, class_labels=labels).sample
        return F.mse_loss(pred, noise)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.diffusion_loss(*batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(
            self.transformer.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay
        )
        warmup, total = self.config.warmup_steps, max(self.config.max_steps, 1)

        def lr_lambda(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class DigitsDataModule(pl.LightningDataModule):
    """The training split only: the held-out images are for evaluation."""

    def __init__(self, batch_size: int, seed: int = 0):
        super().__init__()
        self.batch_size = batch_size
        self.seed = seed

    def setup(self, stage: str | None = None) -> None:
        split = load_digits_split()
        self.train_set = TensorDataset(split.train_images, split.train_labels)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True, generator=generator
        )


def train_backbone(
    config: BackboneConfig,
    work_dir: Path,
    out_dir: Path | None,
    resume: bool = False,
    checkpoint_every: int = 500,
    progress: bool = True,
    accelerator: str = "auto",
) -> BackboneModule:
    """Fit the backbone; Lightning checkpoints go to `work_dir`, the pipeline to `out_dir`.

    With `resume`, training continues from `work_dir/last.ckpt` (EMA state included).
    """
    work_dir = Path(work_dir)
    last = resume_checkpoint(work_dir) if resume and work_dir.is_dir() else None
    if resume and last is None:
        raise FileNotFoundError(f"--resume: no checkpoint to resume from at {work_dir / 'last.ckpt'}")
    if last is not None:
        check_same_settings(last, config)
    train_size = len(load_digits_split().train_images)
    if config.batch_size > train_size:  # drop_last: zero batches, zero optimisation steps, an untrained model
        raise InvalidInputError(f"batch size {config.batch_size} is larger than the {train_size} training digits: "
                                "no optimisation step would run (lower --batch-size)")
    pl.seed_everything(config.seed, workers=True, verbose=False)
    module = BackboneModule(config)
    trainer = pl.Trainer(
        max_steps=config.max_steps,
        accelerator=accelerator,
        devices=1,
        default_root_dir=work_dir,
        logger=pl.loggers.CSVLogger(work_dir, name="logs"),
        callbacks=[
            EMAWeightAveraging(decay=config.ema_decay),
            ModelCheckpoint(dirpath=work_dir, every_n_train_steps=checkpoint_every, save_last=True,
                            enable_version_counter=False),  # --resume keeps updating last.ckpt
        ] + trainer_callbacks(work_dir, progress),
        enable_progress_bar=progress,
        enable_model_summary=progress,
        log_every_n_steps=min(25, config.max_steps),
        gradient_clip_val=1.0,
    )
    lightning_run.fit(trainer, module, DigitsDataModule(config.batch_size, config.seed), work_dir, last)
    if out_dir is not None:
        export_pipeline(module, config, Path(out_dir))
    return module


ARCHITECTURE = ("num_layers", "num_attention_heads", "attention_head_dim", "patch_size", "scheduler")


def check_same_settings(checkpoint: Path, config: BackboneConfig) -> None:
    """--resume continues the run the checkpoint belongs to: a setting that differs (another --layers, ...) is
    one line naming it, not a state-dict mismatch from deep inside Lightning."""
    check_tensors_only(checkpoint)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True).get("hyper_parameters", {}).get("config")
    if not isinstance(saved, dict):
        return
    flags = {"num_layers": "--layers"}  # the architecture: --train-steps may grow, to train on
    for name, value in asdict(config).items():
        if name in ARCHITECTURE and name in saved and saved[name] != value:
            raise InvalidInputError(f"--resume: {checkpoint} was trained with {flags.get(name, name)} {saved[name]}, "
                                    f"this run asks for {value}: use the same settings, or another --work-dir")


def export_pipeline(module: BackboneModule, config: BackboneConfig, out_dir: Path) -> None:
    """Save the (EMA) transformer + inference scheduler as a diffusers pipeline directory.

    Weights are stored in float16 to keep the embedded checkpoint a few MB; they load as float32.
    """
    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # "modules that should be kept in float32: []": there are none
    try:
        transformer = module.transformer.to("cpu", torch.float16)
        pipe = DigitsDiTPipeline(transformer=transformer, scheduler=build_scheduler(config))
        pipe.save_pretrained(out_dir, safe_serialization=True)
        module.transformer.to(torch.float32)
    finally:
        diffusers_logging.set_verbosity(level)

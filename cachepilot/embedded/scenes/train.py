"""Training of the scenes' FluxPipeline, offline, on CPU.

    python -m cachepilot.embedded.scenes.train --out checkpoints/scenes-flux --work-dir runs/scenes-flux \
        --steps 4000 [--resume] [--max-minutes 25]

Stages (each skipped when its output is in `work_dir` already):
1. the VAE (`train_vae`): MSE + a small KL on fresh training scenes; saved to `work_dir/vae`, with
   `scaling_factor` = 1 / std of its latents;
2. the latent bank (`build_latent_bank`): `bank_size` training scenes encoded once (posterior means,
   scaled) with their caption token ids; `work_dir/bank.pt`;
3. the transformer and both text encoders, jointly (`train_transformer`, Lightning): rectified flow as
   FluxPipeline samples it (x_t = (1 - s) x0 + s noise, target noise - x0, timestep = s, logit-normal s),
   15 % of captions dropped to "" so that true CFG (`negative_prompt=""`, `true_cfg_scale > 1`) has a
   trained unconditional branch; EMA (`EMAWeightAveraging`), `work_dir/last.ckpt` (`--resume`);
4. export (`export_pipeline`): `save_pretrained` to `out` (VAE and transformer in float16, the text
   encoders in float32; all load as float32), then `evaluate` and `README.md`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from cachepilot.embedded.scenes import pipeline as sp
from cachepilot.embedded.scenes.data import evaluation_prompts, sample_scenes, training_prompts
from cachepilot.embedded.scenes.tokenizer import build_tokenizer

CAPTION_DROPOUT = 0.15
VAE_KL_WEIGHT = 1e-6


# ------------------------------------------------------------------------------------------------ VAE

def vae_loss(vae, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """MSE of the reconstruction of a posterior sample (images in [0, 1]) + VAE_KL_WEIGHT x KL."""
    x = images * 2 - 1
    posterior = vae.encode(x).latent_dist
    recon = vae.decode(posterior.sample(generator)).sample
    return F.mse_loss(recon, x) + VAE_KL_WEIGHT * posterior.kl().mean()


class _SceneBatches(torch.utils.data.Dataset):
    """Batch `i` = the training scenes of seed [seed, offset + i x stride]: deterministic whichever worker
    renders it."""

    def __init__(self, n: int, batch_size: int, seed: int, offset: int, stride: int = 1):
        self.n, self.batch_size, self.seed, self.offset, self.stride = n, batch_size, seed, offset, stride

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        images, captions, _ = sample_scenes(self.batch_size, [self.seed, self.offset + i * self.stride])
        return images, captions


def _rendered_batches(n: int, batch_size: int, seed: int, offset: int, workers: int):
    """The batches of `_SceneBatches` in order, rendered by `workers` processes (rendering is per-scene Python:
    on a GPU it, not the model, is the bottleneck)."""
    from torch.utils.data import DataLoader

    return DataLoader(_SceneBatches(n, batch_size, seed, offset), batch_size=None, num_workers=workers,
                      prefetch_factor=4 if workers else None, persistent_workers=False)


def train_vae(config: sp.ScenesFluxConfig = sp.ScenesFluxConfig(), steps: int = 2000, batch_size: int = 32,
              lr: float = 1e-3, seed: int = 0, max_seconds: float | None = None, progress: bool = True,
              device: str = "cpu", workers: int = 0):
    """A VAE trained on fresh training-split scenes (batch i = scenes seed [seed, 1000 + i]), on `device`,
    scenes rendered by `workers` processes. Returns (vae on CPU in eval mode with scaling_factor set, losses,
    info)."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    vae = sp.build_vae(config).to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / 100) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(i / max(steps, 1), 1.0)))))
    gen = torch.Generator(device).manual_seed(seed)
    losses, start = [], time.time()
    bar = tqdm(_rendered_batches(steps, batch_size, seed, 1000, workers), total=steps, desc="vae",
               disable=not progress, mininterval=5)
    for i, (images, _) in enumerate(bar):
        loss = vae_loss(vae, images.to(device), gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if i % 25 == 0:
            bar.set_postfix(loss=f"{sum(losses[-25:]) / len(losses[-25:]):.5f}")
        if max_seconds is not None and time.time() - start > max_seconds:
            break
    vae = vae.cpu().eval()
    with torch.no_grad():
        images, _, _ = sample_scenes(512, [seed, 999_999])
        z = vae.encode(images * 2 - 1).latent_dist.mean
        recon = (vae.decode(z).sample.clamp(-1, 1) + 1) / 2
    std = float(z.std())
    vae.register_to_config(scaling_factor=1.0 / std, shift_factor=0.0)
    info = {"steps": len(losses), "seconds": time.time() - start, "batch_size": batch_size,
            "recon_mse": float(F.mse_loss(recon, images)), "latent_mean": float(z.mean()), "latent_std": std}
    return vae, losses, info


@torch.no_grad()
def build_latent_bank(vae, size: int = 32768, seed: int = 1, chunk: int = 1024, progress: bool = True,
                      start: int = 0, workers: int = 0) -> dict:
    """Training scenes `start`..`size`: scaled latents (n, 4, 8, 8) (posterior means x scaling_factor, shift
    0) and caption token ids (n, 16), on CPU. Scenes are seeded per chunk, so a bank grown later from `start`
    is the bank built at the larger size at once (`start` a multiple of `chunk`); `workers` processes render
    them, the VAE encodes on its own device."""
    from tqdm.auto import tqdm

    tokenizer = build_tokenizer(sp.TEXT_LENGTH)
    latents, ids = [], []
    if start % chunk:
        raise ValueError(f"start {start} is not a multiple of chunk {chunk}")
    if size % chunk and size > start:  # the last chunk is short: render it on its own
        full = start + (size - start) // chunk * chunk
        head = build_latent_bank(vae, full, seed, chunk, progress, start, workers) if full > start else None
        images, captions, _ = sample_scenes(size - full, [seed, full])
        tail = _encode_bank(vae, images, captions, tokenizer)
        return tail if head is None else {k: torch.cat([head[k], tail[k]]) for k in tail}
    device = next(vae.parameters()).device
    batches = torch.utils.data.DataLoader(_SceneBatches(size // chunk, chunk, seed, 0, chunk), batch_size=None,
                                          num_workers=workers, sampler=range(start // chunk, size // chunk))
    for images, captions in tqdm(batches, desc="latent bank", disable=not progress, mininterval=5):
        bank = _encode_bank(vae, images.to(device), captions, tokenizer)
        latents.append(bank["latents"])
        ids.append(bank["ids"])
    return {"latents": torch.cat(latents), "ids": torch.cat(ids)}


@torch.no_grad()
def _encode_bank(vae, images: torch.Tensor, captions: list[str], tokenizer) -> dict:
    z = vae.encode(images.to(next(vae.parameters()).device) * 2 - 1).latent_dist.mean
    return {"latents": ((z - vae.config.shift_factor) * vae.config.scaling_factor).float().cpu(),
            "ids": sp.tokenize(tokenizer, captions)}


# ------------------------------------------------------------------------------------------ transformer

def flow_matching_loss(transformer, text_encoder, text_encoder_2, latents, ids, empty_ids,
                       generator: torch.Generator | None = None, dropout: float = CAPTION_DROPOUT) -> torch.Tensor:
    """Rectified-flow loss in FluxPipeline's conventions on scaled latents (B, 4, 8, 8)."""
    b = latents.shape[0]
    device = latents.device
    drop = torch.rand(b, generator=generator, device=device) < dropout
    ids = torch.where(drop[:, None], empty_ids.to(device)[None, :], ids)
    embeds, pooled = sp.encode_text(text_encoder, text_encoder_2, ids)
    x0 = sp.pack(latents)
    noise = torch.randn(x0.shape, generator=generator, device=device)
    sigma = torch.sigmoid(torch.randn(b, generator=generator, device=device))  # logit-normal(0, 1)
    x_t = (1 - sigma[:, None, None]) * x0 + sigma[:, None, None] * noise
    pred = sp.transformer_forward(transformer, x_t, sigma, embeds, pooled)
    return F.mse_loss(pred, noise - x0)


def learning_rate_factor(warmup: int, max_steps: int | None = None, max_seconds: float | None = None):
    """Linear warm-up, then (when `max_steps` is given) a cosine decay to 10 % over *this run*: from the
    step it starts at (a resumed run starts mid-way) to `max_steps`, or to `max_seconds` of wall time when
    that comes first, so a run cut by the clock ends at the low learning rate instead of mid-plateau.
    A closure, not an object: LambdaLR checkpoints an object's attributes and a resume would restore them;
    the run restarts where the steps jump (Lightning loads a resumed scheduler after building it at step 0)."""
    run = {}

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / warmup)
        if max_steps is None:
            return warm
        if run.get("last_step", step - 1) != step - 1 or not run:  # first call, or a jump: a resumed run
            run.update(first_step=step, started=time.time())
        run["last_step"] = step
        progress = (step - run["first_step"]) / max(max_steps - run["first_step"], 1)
        if max_seconds:
            progress = max(progress, (time.time() - run["started"]) / max_seconds)
        return warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))

    return factor


def _lightning_module():
    import lightning.pytorch as pl

    class ScenesFluxModule(pl.LightningModule):
        def __init__(self, config: dict, lr: float = 5e-4, warmup: int = 200, seed: int = 0,
                     decay: dict | None = None, freeze_text: bool = False):
            super().__init__()
            self.save_hyperparameters()
            cfg = sp.ScenesFluxConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
            torch.manual_seed(seed)
            tokenizer = build_tokenizer(sp.TEXT_LENGTH)
            self.text_encoder, self.text_encoder_2 = sp.build_text_encoders(tokenizer, cfg)
            self.transformer = sp.build_transformer(cfg)
            if freeze_text:  # the encoders stay at their random initialisation: the frozen-vs-joint comparison
                self.text_encoder.requires_grad_(False)
                self.text_encoder_2.requires_grad_(False)
            self.register_buffer("empty_ids", sp.tokenize(tokenizer, [""])[0], persistent=False)

        def training_step(self, batch, batch_idx):
            latents, ids = batch
            loss = flow_matching_loss(self.transformer, self.text_encoder, self.text_encoder_2, latents, ids,
                                      self.empty_ids)
            self.log("loss", loss, prog_bar=True, on_step=True)
            return loss

        def configure_optimizers(self):
            opt = torch.optim.AdamW([p for p in self.parameters() if p.requires_grad], lr=self.hparams.lr, weight_decay=0.01, betas=(0.9, 0.99))
            decay = self.hparams.get("decay")
            sched = torch.optim.lr_scheduler.LambdaLR(opt, learning_rate_factor(
                self.hparams.warmup, decay["max_steps"], decay["max_seconds"]) if decay else
                learning_rate_factor(self.hparams.warmup))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return ScenesFluxModule


def train_transformer(bank: dict, work_dir: str | Path, config: sp.ScenesFluxConfig = sp.ScenesFluxConfig(),
                      steps: int = 4000, batch_size: int = 64, lr: float = 5e-4, seed: int = 0,
                      resume: bool = False, max_minutes: float | None = None, ema_decay: float = 0.999,
                      checkpoint_every: int = 250, progress: bool = True, decay: bool = False,
                      accelerator: str = "cpu", freeze_text: bool = False):
    """Fit transformer + text encoders (or the transformer alone, `freeze_text`) on the latent bank with
    Lightning; returns (module, seconds). `decay`: cosine learning-rate decay over this run
    (`learning_rate_factor`); `accelerator`: Lightning's ("auto" takes a GPU when there is one)."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

    work_dir = Path(work_dir)
    last = work_dir / "last.ckpt"
    if resume and not last.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint to resume from at {last}")
    pl.seed_everything(seed, verbose=False)
    seconds_left = None
    if max_minutes:  # Lightning's Timer counts the resumed run's time too: the decay spans what is left
        done = torch.load(last, map_location="cpu", weights_only=False)["callbacks"].get("Timer", {}) if resume else {}
        seconds_left = max(max_minutes * 60 - done.get("time_elapsed", {}).get("train", 0.0), 1.0)
    module = _lightning_module()(config.to_dict(), lr=lr, seed=seed, decay={
        "max_steps": steps, "max_seconds": seconds_left} if decay else None, freeze_text=freeze_text)
    data = TensorDataset(bank["latents"], bank["ids"])  # one gather per batch, not one item at a time
    loader = DataLoader(data, sampler=BatchSampler(RandomSampler(data), batch_size, drop_last=True),
                        batch_size=None, num_workers=0)
    trainer = pl.Trainer(
        max_steps=steps, max_time={"minutes": max_minutes} if max_minutes else None, accelerator=accelerator,
        devices=1, default_root_dir=work_dir, logger=pl.loggers.CSVLogger(work_dir, name="logs"),
        callbacks=[EMAWeightAveraging(decay=ema_decay, update_starting_at_step=100),
                   ModelCheckpoint(dirpath=work_dir, every_n_train_steps=checkpoint_every, save_last=True,
                                   enable_version_counter=False)],
        enable_progress_bar=progress, enable_model_summary=False, log_every_n_steps=25, gradient_clip_val=1.0,
        num_sanity_val_steps=0)
    start = time.time()
    trainer.fit(module, train_dataloaders=loader, ckpt_path=str(last) if resume else None)
    module.trained_steps = trainer.global_step
    module.eval()
    return module, time.time() - start


# -------------------------------------------------------------------------------------- export / evaluate

def export_pipeline(vae, text_encoder, text_encoder_2, transformer, out_dir: str | Path,
                    config: sp.ScenesFluxConfig = sp.ScenesFluxConfig(), fp16: bool = True) -> Path:
    """`save_pretrained` of the FluxPipeline; VAE and transformer stored in float16 when `fp16` (diffusers
    loads them back as float32), the text encoders in float32 (transformers 5 would load float16 weights
    as float16). The given modules are left as they are."""
    import copy

    out_dir = Path(out_dir)
    parts = [copy.deepcopy(m).cpu().eval() for m in (vae, text_encoder, text_encoder_2, transformer)]
    if fp16:
        parts[0], parts[3] = parts[0].half(), parts[3].half()
    pipe = sp.build_scenes_flux(config, vae=parts[0], text_encoder=parts[1].float(), text_encoder_2=parts[2].float(),
                                transformer=parts[3])
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def load_scenes_flux(path: str | Path):
    """The saved pipeline, float32, eval mode (plain `DiffusionPipeline.from_pretrained`)."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(path), local_files_only=True)
    for name in ("vae", "text_encoder", "text_encoder_2", "transformer"):
        getattr(pipe, name).float().eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def generate(pipe, prompts: Sequence[str], true_cfg_scale: float = 1.0, steps: int = 20, seed: int = 0,
             batch_size: int = 64) -> torch.Tensor:
    """Full-compute samples (N, 3, 32, 32) in [0, 1] of the unmodified pipeline."""
    out = []
    for i in range(0, len(prompts), batch_size):
        gen = torch.Generator().manual_seed(seed + i)
        images = pipe(list(prompts[i:i + batch_size]), generator=gen, output_type="pt",
                      **sp.call_kwargs(true_cfg_scale, steps)).images
        out.append(images.float().clamp(0, 1))
    return torch.cat(out)


def evaluate(pipe, judge=None, n: int = 64, steps: int = 20, scales=(1.0, 2.0, 3.0, 4.0), seed: int = 0) -> dict:
    """Mean adherence (judge) of full-compute samples on `n` held-out evaluation prompts per true_cfg_scale,
    plus references: the same prompts' rendered scenes, and `n` training prompts at each scale."""
    from cachepilot.embedded.scenes.data import render
    from cachepilot.embedded.scenes.judge import adherence, load_judge

    judge = judge if judge is not None else load_judge()
    captions, scenes = evaluation_prompts(n, seed=seed)
    train_captions, train_scenes = training_prompts(n, seed=seed)
    result = {"n": n, "steps": steps, "eval": {}, "train": {}, "seconds": {}}
    rendered = render(scenes)
    result["reference_rendered_eval"] = float(adherence(judge, rendered, captions).mean())
    with torch.no_grad():  # the VAE's ceiling: its reconstructions of the same scenes
        vae = pipe.vae
        recon = vae.decode(vae.encode(rendered.to(vae.dtype) * 2 - 1).latent_dist.mean).sample
    result["reference_vae_eval"] = float(adherence(judge, ((recon.float().clamp(-1, 1) + 1) / 2), captions).mean())
    for s in scales:
        t = time.time()
        result["eval"][str(s)] = float(adherence(judge, generate(pipe, captions, s, steps, seed), captions).mean())
        result["seconds"][str(s)] = time.time() - t
        result["train"][str(s)] = float(adherence(
            judge, generate(pipe, train_captions, s, steps, seed), train_captions).mean())
    return result


_README = """# scenes-flux — the embedded text-to-image model of the scenes (issue 11)

An **unmodified** diffusers `FluxPipeline`, tiny, trained from scratch offline ({where}) on the procedural
captioned 32x32 scenes (`cachepilot.embedded.scenes.data`, training split: no held-out colour/shape pair).
Built by `cachepilot.embedded.scenes.pipeline.build_scenes_flux`, trained by

    {command}

Load: `DiffusionPipeline.from_pretrained("checkpoints/scenes-flux", local_files_only=True)` (float32) or
`cachepilot.loading.load_pipeline("checkpoints/scenes-flux")`. Call:

    pipe(prompts, height=32, width=32, max_sequence_length=16, num_inference_steps=20,
         negative_prompt="", true_cfg_scale=4.0, output_type="pt")

`max_sequence_length=16` matters: FluxPipeline's default of 512 pads the T5 tokens to 512, never seen in training.
True CFG (`true_cfg_scale > 1` with `negative_prompt=""`) runs cond and uncond as two transformer calls per step;
the unconditional branch was trained with {dropout:.0%} caption dropout (caption -> "").

## Architecture ({total_params:,} parameters; {size_mb:.1f} MB on disk)

{arch}

## Training ({machine})

{training}

## Adherence (judge `checkpoints/scenes-judge`) of full-compute samples

{n} prompts, {steps} steps, seed 0; `eval` = held-out evaluation prompts (`evaluation_prompts`: every prompt holds a
colour/shape pair never seen in training), `train` = training-split prompts (`training_prompts`).
References: the rendered ground-truth scenes of the eval prompts score {ref:.3f}; their VAE reconstructions
(encode -> decode, the ceiling of anything generated through this VAE) score {ref_vae:.3f}.

| true_cfg_scale | eval (held-out) | train prompts | s / {n} eval samples |
|---|---|---|---|
{rows}

Honest reading: the held-out prompts test compositional generalisation of a 2.3 M-parameter model trained for
minutes; see the train-prompt column for how well it fits its own distribution.
"""


def write_readme(out_dir: Path, info: dict) -> None:
    ev = info["evaluation"]
    rows = "\n".join(f"| {s} | {ev['eval'][s]:.3f} | {ev['train'][s]:.3f} | {ev['seconds'][s]:.1f} |"
                     for s in ev["eval"])
    cfg = info["config"]
    arch = "\n".join([
        f"- VAE: AutoencoderKL, blocks {cfg['vae_channels']}, {cfg['vae_layers_per_block']} layer/block, no mid "
        f"attention, 32x32x3 -> 8x8x4, scaling_factor {info['vae']['scaling_factor']:.4f}, shift 0 "
        f"({info['params']['vae']:,} params)",
        f"- tokenizer (both slots): phase-1 word-level `build_tokenizer(16)`",
        f"- text_encoder: CLIPTextModel hidden {cfg['text_dim']}, {cfg['text_layers']} layers "
        f"({info['params']['text_encoder']:,} params); text_encoder_2: T5EncoderModel d_model {cfg['text_dim']}, "
        f"{cfg['text_layers']} layers ({info['params']['text_encoder_2']:,} params); trained jointly with the transformer",
        f"- transformer: FluxTransformer2DModel, {cfg['num_layers']} double + {cfg['num_single_layers']} single "
        f"blocks, {cfg['num_heads']} heads x {cfg['head_dim']}, rope axes {cfg['axes_dims_rope']}, 16 image tokens "
        f"(2x2-packed latents, 16 channels), guidance_embeds False ({info['params']['transformer']:,} params)",
        "- scheduler: FlowMatchEulerDiscreteScheduler, shift 3.0, dynamic shifting (base 0.5, max 1.15)",
    ])
    v, t = info["vae"], info["transformer"]
    training = "\n".join([
        f"- VAE: {v['steps']} steps at batch {v['batch_size']}, MSE + {VAE_KL_WEIGHT:g} KL, {v['seconds'] / 60:.1f} min; "
        f"reconstruction MSE on [0,1] pixels {v['recon_mse']:.5f}",
        f"- latent bank: {info['bank']['size']} training scenes encoded once, {info['bank']['seconds'] / 60:.1f} min",
        f"- transformer + text encoders: {t['steps']} steps at batch {t['batch_size']}, AdamW lr {t['lr']:g}, "
        f"logit-normal timesteps, caption dropout {CAPTION_DROPOUT:.0%}, EMA 0.999, {t['seconds'] / 60:.1f} min "
        f"(last logged loss {t.get('last_loss', float('nan')):.4f})",
        f"- evaluation: {info['evaluation_seconds'] / 60:.1f} min",
    ])
    machine = info.get("machine", "2 CPU cores shared with another job, 1 thread")
    (out_dir / "README.md").write_text(_README.format(
        where="on a GPU" if "GPU" in machine else "on CPU", machine=machine, command=info["command"], dropout=CAPTION_DROPOUT, total_params=sum(info["params"].values()),
        size_mb=info["size_mb"], arch=arch, training=training, n=ev["n"], steps=ev["steps"],
        ref=ev["reference_rendered_eval"], ref_vae=ev.get("reference_vae_eval", float("nan")), rows=rows))


def _dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2 ** 20


def _last_loss(work_dir: Path) -> float:
    import csv

    files = sorted((work_dir / "logs").rglob("metrics.csv"))
    if not files:
        return float("nan")
    rows = [r for r in csv.DictReader(files[-1].open()) if r.get("loss")]
    return float(rows[-1]["loss"]) if rows else float("nan")


def main(argv: Sequence[str] | None = None) -> dict:
    from diffusers import AutoencoderKL

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="checkpoints/scenes-flux")
    p.add_argument("--work-dir", default="runs/scenes-flux")
    p.add_argument("--steps", type=int, default=4000, help="transformer steps")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="wall-clock cap of the transformer stage, resumed runs' time included")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--decay", action="store_true",
                   help="cosine learning-rate decay to 10%% over this run (to --steps or --max-minutes)")
    p.add_argument("--vae-steps", type=int, default=2000)
    p.add_argument("--vae-batch-size", type=int, default=32)
    p.add_argument("--vae-minutes", type=float, default=None)
    p.add_argument("--bank-size", type=int, default=32768)
    p.add_argument("--eval-samples", type=int, default=64)
    p.add_argument("--eval-steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="where the VAE trains and encodes the bank (default: cuda when available)")
    p.add_argument("--accelerator", default="auto", help="Lightning's, for the transformer (default: auto)")
    p.add_argument("--workers", type=int, default=0, help="processes rendering scenes for the VAE and the bank")
    p.add_argument("--freeze-text-encoders", action="store_true",
                   help="train the transformer alone, the text encoders frozen at initialisation")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from cachepilot.devices import check_device, check_lightning_hardware

    check_device(args.device)
    check_lightning_hardware(args.accelerator)
    if torch.cuda.is_available():  # TF32 matmuls: the model is tiny, precision is not where its error is
        torch.set_float32_matmul_precision("high")
    progress = not args.no_progress
    config = sp.ScenesFluxConfig()
    work, out = Path(args.work_dir), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    info_path = work / "info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    info["config"] = config.to_dict()
    info["machine"] = (f"one {torch.cuda.get_device_name()} GPU, {os.cpu_count()} CPU cores"
                       if torch.cuda.is_available() and args.device.startswith("cuda") else
                       f"CPU, {os.cpu_count()} cores, {args.threads} torch thread(s)")

    if (work / "vae" / "config.json").is_file():
        vae = AutoencoderKL.from_pretrained(work / "vae", local_files_only=True).float().eval()
    else:
        vae, _, vinfo = train_vae(config, args.vae_steps, args.vae_batch_size, seed=0, progress=progress,
                                  max_seconds=args.vae_minutes * 60 if args.vae_minutes else None,
                                  device=args.device, workers=args.workers)
        vae.save_pretrained(work / "vae")
        info["vae"] = vinfo
        info_path.write_text(json.dumps(info, indent=1))
    info["vae"]["scaling_factor"] = vae.config.scaling_factor
    print("vae:", info["vae"], flush=True)

    if (work / "bank.pt").is_file():
        bank = torch.load(work / "bank.pt")
    if "bank" in locals() and len(bank["latents"]) < args.bank_size:  # grown: the first scenes are the same
        t = time.time()
        more = build_latent_bank(vae.to(args.device), args.bank_size, progress=progress, start=len(bank["latents"]),
                                 workers=args.workers)
        vae = vae.cpu()
        bank = {k: torch.cat([bank[k], more[k]]) for k in bank}
        torch.save(bank, work / "bank.pt")
        info["bank"] = {"size": args.bank_size, "seconds": info["bank"]["seconds"] + time.time() - t}
        info_path.write_text(json.dumps(info, indent=1))
    elif "bank" not in locals():
        t = time.time()
        bank = build_latent_bank(vae.to(args.device), args.bank_size, progress=progress, workers=args.workers)
        vae = vae.cpu()
        torch.save(bank, work / "bank.pt")
        info["bank"] = {"size": args.bank_size, "seconds": time.time() - t}
        info_path.write_text(json.dumps(info, indent=1))

    module, seconds = train_transformer(bank, work, config, args.steps, args.batch_size, args.lr, resume=args.resume,
                                        max_minutes=args.max_minutes, progress=progress, decay=args.decay,
                                        accelerator=args.accelerator, freeze_text=args.freeze_text_encoders)
    prev = info.get("transformer", {}) if args.resume else {}
    info["transformer"] = {"steps": module.trained_steps, "batch_size": args.batch_size, "lr": args.lr,
                           "seconds": prev.get("seconds", 0.0) + seconds, "last_loss": _last_loss(work)}
    command = "python -m cachepilot.embedded.scenes.train " + " ".join(argv if argv is not None else
                                                                        __import__("sys").argv[1:])
    info["command"] = (info["command"] + "\n    " + command) if args.resume and info.get("command") else command
    export_pipeline(vae, module.text_encoder, module.text_encoder_2, module.transformer, out, config)
    info["params"] = {name: sum(p.numel() for p in m.parameters()) for name, m in (
        ("vae", vae), ("text_encoder", module.text_encoder), ("text_encoder_2", module.text_encoder_2),
        ("transformer", module.transformer))}
    info_path.write_text(json.dumps(info, indent=1))
    t = time.time()
    info["evaluation"] = evaluate(load_scenes_flux(out), n=args.eval_samples, steps=args.eval_steps)
    info["evaluation_seconds"] = time.time() - t
    info["size_mb"] = _dir_mb(out) + 0.01
    info_path.write_text(json.dumps(info, indent=1))
    write_readme(out, info)
    info["size_mb"] = _dir_mb(out)
    print(json.dumps(info["evaluation"], indent=1), flush=True)
    return info


if __name__ == "__main__":
    main()

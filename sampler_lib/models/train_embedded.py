"""Train the embedded model: DDPM eps-prediction (Ho et al. 2020) on SD's schedule, label dropout for CFG.

    python -m sampler_lib.models.train_embedded [--steps 3000] [--out sampler_lib/models/embedded]

Fixed seeds make a rerun reproduce the weights (on the same torch build and thread count).
"""
import argparse
import copy
import json
import math
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..schedules import scaled_linear_alphas_cumprod
from .embedded import UNET_CONFIG, WEIGHTS_DIR, build_unet
from .shapes import NUM_CLASSES, DataConfig, render


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000            # optimiser steps
    batch_size: int = 64         # images per step, generated fresh each step
    lr: float = 6e-4             # AdamW peak learning rate
    warmup: int = 200            # linear warm-up steps, then cosine decay to lr / 20
    weight_decay: float = 0.0    # AdamW weight decay
    label_dropout: float = 0.12  # fraction of labels replaced by the empty prompt (for guidance)
    ema_decay: float = 0.998     # EMA of the weights; the EMA weights are saved
    grad_clip: float = 1.0       # gradient-norm clip
    seed: int = 0                # initialisation, data and noise seed
    threads: int = 2             # torch CPU threads


def optimizer_step(cfg, step, unet, ema, opt, loss):
    """One AdamW step at the schedule's learning rate (gradient-norm clipped), then the EMA of the weights (its
    decay warming up as (1 + step) / (10 + step)); shared by the eps and the flow trainers."""
    for group in opt.param_groups:
        group["lr"] = _lr(cfg, step)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
    opt.step()
    decay = min(cfg.ema_decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for p_ema, p in zip(ema.parameters(), unet.parameters()):
            p_ema.lerp_(p, 1 - decay)


def _lr(cfg, step):
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(cfg, data_cfg, out_dir, log_every=100):
    """Train, then write model.safetensors and card.json to out_dir; returns the card."""
    from safetensors.torch import save_file

    commit = _commit()  # the code that trains, not whatever HEAD is when training ends
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)  # diffusers initialises weights from the global generator
    unet = build_unet().train()
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    alphas_cumprod = scaled_linear_alphas_cumprod()
    losses, start = [], time.time()
    for step in range(cfg.steps):
        labels = torch.randint(0, NUM_CLASSES, (cfg.batch_size,), generator=gen)
        x0 = render(labels, gen, data_cfg) * 2 - 1
        drop = torch.rand(cfg.batch_size, generator=gen) < cfg.label_dropout
        labels = torch.where(drop, torch.full_like(labels, NUM_CLASSES), labels)
        t = torch.randint(0, len(alphas_cumprod), (cfg.batch_size,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        a = alphas_cumprod[t][:, None, None, None]
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        loss = torch.nn.functional.mse_loss(unet(x_t, t, class_labels=labels).sample, eps)
        optimizer_step(cfg, step, unet, ema, opt, loss)
        losses.append(loss.item())
        if (step + 1) % log_every == 0:
            print(f"step {step + 1}/{cfg.steps} loss {sum(losses[-log_every:]) / log_every:.4f} "
                  f"({time.time() - start:.0f} s)", flush=True)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, out_dir / "model.safetensors")
    card = {
        "name": "embedded",
        "task": "class-conditional image generation, prompts 'a <colour> <shape>'",
        "prediction_type": "epsilon",
        "schedule": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                     "num_train_timesteps": 1000},
        "architecture": {"class": "diffusers.UNet2DModel", **UNET_CONFIG,
                         "parameters": sum(p.numel() for p in ema.parameters())},
        "data": data_cfg.to_dict(),
        "training": asdict(cfg),
        "training_seconds": round(time.time() - start, 1),
        "final_loss": round(sum(losses[-200:]) / len(losses[-200:]), 5),
        "torch": torch.__version__,
        "training_code_commit": commit,
    }
    (out_dir / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def _commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--out", default=str(WEIGHTS_DIR))
    args = parser.parse_args(argv)
    card = train(TrainConfig(steps=args.steps), DataConfig(), args.out)
    print(json.dumps({k: card[k] for k in ("training_seconds", "final_loss")}))


if __name__ == "__main__":
    main()

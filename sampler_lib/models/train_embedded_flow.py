"""Train the embedded flow model: rectified flow (Liu et al. 2022; SD3's loss, Esser et al. 2024) on the embedded
model's shapes data and UNet, label dropout for CFG.

    python -m sampler_lib.models.train_embedded_flow [--steps 500] [--batch-size 32] [--init eps|scratch]
                                                     [--out sampler_lib/models/embedded_flow]

x_t = (1 - t) * x0 + t * noise, the network (timestep t * 1000) predicts v = noise - x0, MSE; t uniform in (0, 1) by
default (`--time-sampling logit_normal` for SD3's logit-normal(0, 1)). By default the UNet starts from the shipped
eps model's weights (`--init eps`; its sha256 goes into the card): a 2-core CPU shared with others affords ~500
steps, a tenth of what the eps model had, and fine-tuning its features to the velocity objective converges in that;
`--init scratch` starts from diffusers' initialisation as the eps trainer does. Everything else (data, architecture,
optimiser, warm-up and cosine decay, EMA, clipping, seeds) is the eps trainer's (`train_embedded`). Writes
model.safetensors, card.json (the training config, time, final loss) and train_log.csv (mean loss per 50 steps).
Fixed seeds make a rerun reproduce the weights (on the same torch build and thread count).
"""
import argparse
import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .embedded import UNET_CONFIG, build_unet
from .embedded import WEIGHTS_DIR as EPS_WEIGHTS_DIR
from .shapes import NUM_CLASSES, DataConfig, render
from .train_embedded import TrainConfig, _commit, optimizer_step

WEIGHTS_DIR = Path(__file__).parent / "embedded_flow"
TIME_SAMPLINGS = ("uniform", "logit_normal")
INITS = ("eps", "scratch")
MULTIPLIER = 1000  # the network's timestep is t * 1000, as SD3's (FlowSampling's multiplier)


@dataclass(frozen=True)
class FlowTrainConfig(TrainConfig):
    steps: int = 500                 # optimiser steps (the eps model: 3000)
    batch_size: int = 32             # images per step, generated fresh each step (the eps model: 64)
    lr: float = 3e-4                 # AdamW peak learning rate (fine-tuning: half the eps model's)
    warmup: int = 50                 # linear warm-up steps, then cosine decay to lr / 20
    threads: int = 1                 # torch CPU threads (on 2 shared cores one thread trains ~3x faster than two)
    init: str = "eps"                # 'eps': start from the shipped eps model's weights; 'scratch': diffusers' init
    time_sampling: str = "uniform"   # how training t is drawn: uniform in (0, 1), or logit-normal (SD3)
    logit_mean: float = 0.0          # logit-normal's location (SD3: 0)
    logit_std: float = 1.0           # logit-normal's scale (SD3: 1)
    shift: float = 1.0               # the sampling shift written into the card (FlowSampling(shift)); training
                                     # draws t unshifted, so the shift is a sampling choice only


def sample_t(cfg, n, gen):
    """Training times in (0, 1): uniform, or sigmoid of a normal (SD3's logit-normal)."""
    if cfg.time_sampling == "uniform":
        return torch.rand(n, generator=gen).clamp_min(1e-5)
    if cfg.time_sampling == "logit_normal":
        return torch.sigmoid(cfg.logit_mean + cfg.logit_std * torch.randn(n, generator=gen))
    raise ValueError(f"time_sampling must be one of {', '.join(TIME_SAMPLINGS)} (got {cfg.time_sampling!r})")


def flow_loss(unet, x0, labels, t, noise):
    """Rectified-flow MSE: the network at x_t = (1 - t) x0 + t noise, timestep t * 1000, against v = noise - x0."""
    tt = t[:, None, None, None]
    x_t = (1 - tt) * x0 + tt * noise
    out = unet(x_t, t * MULTIPLIER, class_labels=labels)
    out = getattr(out, "sample", out)  # diffusers returns an output object, the light UNet a tensor
    return torch.nn.functional.mse_loss(out, noise - x0)


def _load_eps(unet, weights_dir):
    """The eps model's weights into `unet` (same architecture); what was loaded, for the card."""
    from safetensors.torch import load_file

    path = Path(weights_dir) / "model.safetensors"
    unet.load_state_dict(load_file(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"from": "the embedded eps model's weights (sampler_lib/models/embedded/model.safetensors)",
            "sha256": digest}


def train(cfg, data_cfg, out_dir, log_every=50, unet_config=None, eps_weights=EPS_WEIGHTS_DIR):
    """Train, then write model.safetensors, card.json and train_log.csv to out_dir; returns the card."""
    from safetensors.torch import save_file

    if cfg.time_sampling not in TIME_SAMPLINGS:
        raise ValueError(f"time_sampling must be one of {', '.join(TIME_SAMPLINGS)} (got {cfg.time_sampling!r})")
    if cfg.init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)} (got {cfg.init!r})")
    commit = _commit()  # the code that trains, not whatever HEAD is when training ends
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)  # diffusers initialises weights from the global generator
    unet = build_unet(unet_config)
    init = {"from": "diffusers UNet2DModel initialisation, torch.manual_seed(seed)"}
    if cfg.init == "eps":
        init = _load_eps(unet, eps_weights)
    unet.train()
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    losses, log, start = [], [], time.time()
    for step in range(cfg.steps):
        labels = torch.randint(0, NUM_CLASSES, (cfg.batch_size,), generator=gen)
        x0 = render(labels, gen, data_cfg) * 2 - 1
        drop = torch.rand(cfg.batch_size, generator=gen) < cfg.label_dropout
        labels = torch.where(drop, torch.full_like(labels, NUM_CLASSES), labels)
        t = sample_t(cfg, cfg.batch_size, gen)
        noise = torch.randn(x0.shape, generator=gen)
        loss = flow_loss(unet, x0, labels, t, noise)
        optimizer_step(cfg, step, unet, ema, opt, loss)
        losses.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == cfg.steps:
            window = losses[-((step % log_every) + 1):]
            log.append((step + 1, sum(window) / len(window), time.time() - start))
            print(f"step {step + 1}/{cfg.steps} loss {log[-1][1]:.4f} ({log[-1][2]:.0f} s)", flush=True)
    seconds = time.time() - start
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, out_dir / "model.safetensors")
    (out_dir / "train_log.csv").write_text("step,mean_loss,seconds\n" + "".join(
        f"{s},{mean:.5f},{sec:.1f}\n" for s, mean, sec in log))
    arch = UNET_CONFIG if unet_config is None else unet_config
    card = {
        "name": "embedded-flow",
        "task": "class-conditional image generation, prompts 'a <colour> <shape>'",
        "prediction_type": "flow",
        "objective": "rectified flow: x_t = (1 - t) x0 + t noise, the network predicts v = noise - x0 (MSE); "
                     "denoised = x - sigma v",
        "schedule": {"kind": "flow", "shift": cfg.shift, "num_train_timesteps": 1000, "multiplier": MULTIPLIER,
                     "grid": "sigma = shift(t / 1000) for t = 1..1000; the network's timestep is sigma * 1000"},
        "architecture": {"class": "diffusers.UNet2DModel", **arch,
                         "parameters": sum(p.numel() for p in ema.parameters())},
        "data": data_cfg.to_dict(),
        "training": asdict(cfg),
        "init": init,
        "training_seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(1, cfg.steps), 3),
        "final_loss": round(sum(losses[-200:]) / len(losses[-200:]), 5),
        "torch": torch.__version__,
        "training_code_commit": commit,
        "command": "python -m sampler_lib.models.train_embedded_flow " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in (("steps", cfg.steps), ("batch_size", cfg.batch_size),
                                                        ("time_sampling", cfg.time_sampling),
                                                        ("init", cfg.init))),
    }
    (out_dir / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=FlowTrainConfig.steps)
    parser.add_argument("--batch-size", type=int, default=FlowTrainConfig.batch_size)
    parser.add_argument("--time-sampling", choices=TIME_SAMPLINGS, default=FlowTrainConfig.time_sampling)
    parser.add_argument("--init", choices=INITS, default=FlowTrainConfig.init)
    parser.add_argument("--out", default=str(WEIGHTS_DIR))
    args = parser.parse_args(argv)
    cfg = FlowTrainConfig(steps=args.steps, batch_size=args.batch_size, time_sampling=args.time_sampling,
                          init=args.init)
    card = train(cfg, DataConfig(), args.out)
    print(json.dumps({k: card[k] for k in ("training_seconds", "final_loss")}))


if __name__ == "__main__":
    main()

"""Stable Diffusion 1.x/2.x through diffusers, behind the same interface as the embedded model."""
import functools
import os

import torch
from torch import nn

from ..model_sampling import EpsSampling, VSampling
from ..wrappers import DiscreteEpsDenoiser, DiscreteVDenoiser
from .guidance import cast, check_guidance, guided_eps, to_pil


class WeightsUnavailable(RuntimeError):
    """The pipeline's weights are neither on disk nor downloadable."""


class GuidedUNet(nn.Module):
    """UNet2DConditionModel as eps/v(x, t; text embedding) with classifier-free guidance."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x, t, cond, uncond, guidance_scale=1.0, with_uncond=False):
        dtype = self.unet.dtype
        out = guided_eps(lambda x, t, c: self.unet(x.to(dtype), t, encoder_hidden_states=c).sample,
                         x, t, cond, uncond, guidance_scale, with_uncond)
        return cast(out, x.dtype)


class StableDiffusionModel:
    """Tokenizer, text encoder, UNet and VAE of a diffusers SD pipeline; eps or v prediction."""

    vocabulary = None  # free text

    def __init__(self, name, tokenizer, text_encoder, unet, vae, scheduler, device):
        self.tokenizer, self.text_encoder = tokenizer, text_encoder
        self._setup(name, GuidedUNet(unet), unet, vae, scheduler, device)

    def _setup(self, name, net, unet, vae, scheduler, device):
        """What every diffusers pipeline here shares: the guided network, the VAE, eps or v, the training sigmas."""
        self.name, self.device, self.net, self.vae = name, device, net, vae
        self.prediction_type = scheduler.config.get("prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"{name}: prediction_type {self.prediction_type!r} is not supported "
                             "(epsilon or v_prediction)")
        self.alphas_cumprod = scheduler.alphas_cumprod.float()
        v = self.prediction_type == "v_prediction"
        self.model_sampling = (VSampling if v else EpsSampling)(self.alphas_cumprod)
        size = unet.config.sample_size
        self.latent_shape = (unet.config.in_channels, size, size)
        self.card = {"name": name, "prediction_type": self.prediction_type,
                     "num_train_timesteps": len(self.alphas_cumprod),
                     "beta_schedule": scheduler.config.get("beta_schedule"),
                     "latent_shape": list(self.latent_shape)}

    @classmethod
    def load(cls, name, device=None, dtype=None, local_files_only=None):
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        loaders = dict(tokenizer=CLIPTokenizer, text_encoder=CLIPTextModel, unet=UNet2DConditionModel,
                       vae=AutoencoderKL, scheduler=DDPMScheduler)
        device, parts = load_parts(name, loaders, device, dtype, local_files_only, "Stable Diffusion")
        return cls(name, device=device, **parts)

    @property
    def network(self):
        return self.net

    def prompts(self):
        """None: Stable Diffusion reads free text, there is no list of prompts."""
        return None

    def faithful(self, prompt, image):
        """None: no classifier judges whether an SD image shows its prompt."""
        return None

    def denoiser(self, quantize="off"):
        """DiscreteEpsDenoiser (or DiscreteVDenoiser) over the guided UNet: the model sampling's family."""
        cls = DiscreteVDenoiser if self.prediction_type == "v_prediction" else DiscreteEpsDenoiser
        return cls(self.net, self.alphas_cumprod, quantize=quantize).to(self.device)

    @torch.no_grad()
    def _embed(self, prompt):
        ids = self.tokenizer([prompt], padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(self.device)
        return self.text_encoder(ids)[0]

    @functools.cached_property
    def _empty(self):
        """The empty prompt's embedding, encoded once: every guided call needs it."""
        return self._embed("")

    def condition(self, prompt, guidance_scale=7.5):
        """extra_args for a sampler: prompt and empty-prompt embeddings, any batch size."""
        g = check_guidance(guidance_scale)
        return {"cond": self._embed(prompt), "uncond": self._empty, "guidance_scale": g}

    @torch.no_grad()
    def decode_float(self, x):
        """Latents to images in [-1, 1] through the VAE, before 8-bit rounding (float32, CPU)."""
        x = x.to(self.device, self.vae.dtype) / self.vae.config.scaling_factor
        return self.vae.decode(x).sample.float().cpu()

    def decode(self, x):
        """Latents to PIL images through the VAE."""
        return to_pil(self.decode_float(x))


def attempts_for(name, local_files_only):
    """Offline first; online too for a hub id (a local folder or a cached model needs no network)."""
    if local_files_only is not None:
        return [local_files_only]
    return [True] if os.path.isdir(name) else [True, False]


def load_parts(name, loaders, device, dtype, local_files_only, kind):
    """(device, {part: loaded}) of a diffusers pipeline, each part from its subfolder (None where a loader is None:
    a part the pipeline lacks); networks moved to `device` in `dtype`, frozen. WeightsUnavailable says what is
    missing and how to get it."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    error = None
    for offline in attempts_for(name, local_files_only):
        try:
            parts = {key: None if loader is None else loader.from_pretrained(name, subfolder=key,
                                                                             local_files_only=offline)
                     for key, loader in loaders.items()}
            break
        except (OSError, ValueError) as exc:
            error = exc
    else:
        folders = ", ".join(f"{k}/" for k, v in loaders.items() if v is not None)
        raise WeightsUnavailable(
            f"{kind} weights for {name!r} are neither on disk nor downloadable ({str(error).splitlines()[0]}). "
            f"Download them where there is network (e.g. `huggingface-cli download {name}`), or pass a local "
            f"folder with {folders}; the embedded model (--model embedded) works offline.") from error
    for key, part in parts.items():
        if isinstance(part, nn.Module):
            parts[key] = part.to(device, dtype).eval().requires_grad_(False)
    return device, parts

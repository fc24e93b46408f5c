"""Flux.1 through diffusers (Black Forest Labs 2024): a rectified-flow transformer (`FluxTransformer2DModel`) on
latents packed in 2x2 patches, reading the prompt through T5 (the token embeddings) and CLIP-L (the pooled one).

- dev (and its fine-tunes; `guidance_embeds: true`): guidance-distilled, so the guidance scale is the transformer's
  `guidance` input and there is no classifier-free guidance (one network call per step; 3.5 is diffusers' default);
- schnell (`guidance_embeds: false`): timestep-distilled, no guidance input: the guidance scale is ignored.
The card says which. The sampler works on unpacked latents (C, H, W), as ComfyUI's do; the network packs them, adds
the image and text position ids and unpacks its velocity exactly as FluxPipeline does. The model sampling is
FlowSampling with Flux's resolution-dependent shift: mu from the image's token count (diffusers' calculate_shift on
the folder's scheduler config), the network's timestep sigma itself (multiplier 1: the transformer multiplies by 1000
inside, where FluxPipeline passes its scheduler's timestep / 1000; ComfyUI's ModelSamplingFlux likewise)."""
import os

import torch
from torch import nn

from ..model_sampling import image_tokens
from .guidance import NoUncond, check_guidance
from .sd3 import FlowPipelineModel, SchedulerConfig, check_checkpoint_folder, check_folder, default_device_dtype
from .sdxl import checkpoint_pipeline, pipeline_index, present
from .stable_diffusion import WeightsUnavailable, load_parts

DEFAULT_LATENT = 128  # FluxPipeline's default_sample_size: 1024 px at the VAE's 8x, where the VAE names no size


def is_flux(index):
    """A Flux.1 pipeline by its model_index.json."""
    return bool(index) and "Flux" in str(index.get("_class_name", ""))


NO_UNCOND = ("Flux.1 has no unconditional prediction here (no classifier-free guidance: dev's guidance is distilled "
             "into the transformer, schnell has none), and a CFG++ sampler (*_cfg_pp) steps with one; choose the "
             "sampler without _cfg_pp")


class GuidedFlux(nn.Module):
    """FluxTransformer2DModel as v(x, t; T5 embeddings, CLIP pooled embedding, distilled guidance) on unpacked latents
    (B, C, H, W), called as FluxPipeline calls it."""

    def __init__(self, transformer):
        super().__init__()
        self.transformer = transformer
        self.guidance_embeds = bool(transformer.config.guidance_embeds)

    def forward(self, x, t, cond, pooled, guidance_scale=1.0, with_uncond=False):
        if with_uncond:
            raise NoUncond(NO_UNCOND)
        from diffusers import FluxPipeline

        b, c, h, w = x.shape
        dtype = self.transformer.dtype
        packed = FluxPipeline._pack_latents(x.to(dtype), b, c, h, w)
        img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, x.device, dtype)
        txt_ids = torch.zeros(cond.shape[1], 3, device=x.device, dtype=dtype)
        guidance = (torch.full((b,), float(guidance_scale), device=x.device, dtype=torch.float32)
                    if self.guidance_embeds else None)
        out = self.transformer(hidden_states=packed, timestep=t.expand(b).to(dtype), guidance=guidance,
                               pooled_projections=pooled.to(dtype).expand(b, -1),
                               encoder_hidden_states=cond.to(dtype).expand(b, -1, -1), txt_ids=txt_ids,
                               img_ids=img_ids, return_dict=False)[0]
        return FluxPipeline._unpack_latents(out, h, w, 1).to(x.dtype)


class FluxModel(FlowPipelineModel):
    """CLIP-L, T5, the transformer, VAE and scheduler config of a Flux.1 pipeline (dev or schnell)."""

    kind = "Flux.1"
    multiplier = 1  # the network's timestep is sigma: the Flux transformer multiplies by 1000 itself
    max_sequence_length = 512  # T5 tokens: FluxPipeline's default

    def __init__(self, name, tokenizer, text_encoder, tokenizer_2, text_encoder_2, transformer, vae, scheduler, device,
                 image_size=None):
        from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

        if text_encoder_2 is None or tokenizer_2 is None:
            raise WeightsUnavailable(f"{name}: Flux.1 reads the prompt through T5 (text_encoder_2, tokenizer_2) and "
                                     "this pipeline has none")
        config = scheduler if isinstance(scheduler, dict) else {**scheduler.config,
                                                                "_class_name": type(scheduler).__name__}
        self.vae = vae
        scale = self.vae_scale
        channels = vae.config.latent_channels
        if transformer.config.in_channels != 4 * channels:
            raise ValueError(f"{name}: the transformer takes {transformer.config.in_channels} channels, not the "
                             f"{4 * channels} of the VAE's latents in 2x2 patches (a Fill, Depth, Canny or Kontext "
                             "transformer conditions on an image): only text-to-image Flux.1 (dev, schnell) is "
                             "supported")
        size = image_size or vae.config.get("sample_size") or DEFAULT_LATENT * scale
        if isinstance(size, (list, tuple)):
            size = size[0]
        latent = 2 * (int(size) // (scale * 2))  # FluxPipeline's rounding: packing needs an even latent size
        if latent < 2:
            raise ValueError(f"{name}: an image of {size} px is smaller than one 2x2 patch of latents")
        tokens = image_tokens(latent * scale, latent * scale, scale, 2)
        self._setup(name, GuidedFlux(transformer), vae, config, device, (channels, latent, latent), tokens)
        self.guidance_embeds = self.net.guidance_embeds
        self.pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler.from_config(config), vae=vae,
                                 text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2,
                                 tokenizer_2=tokenizer_2, transformer=transformer)
        self.card.update(
            pipeline="flux", text_encoders=["clip-l (pooled)", "t5"], max_sequence_length=self.max_sequence_length,
            variant="dev" if self.guidance_embeds else "schnell",
            guidance=("distilled guidance embedding: the guidance scale is the transformer's guidance input (one "
                      "network call per step, no classifier-free guidance; 3.5 is diffusers' default)"
                      if self.guidance_embeds else
                      "none: no guidance embedding (schnell-style, timestep-distilled) and no classifier-free "
                      "guidance, so the guidance scale is ignored"))

    @classmethod
    def load(cls, name, device=None, dtype=None, local_files_only=None, index=None, image_size=None):
        from diffusers import AutoencoderKL, FluxTransformer2DModel
        from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

        index = index or pipeline_index(name, local_files_only) or {}
        t5 = ["tokenizer_2", "text_encoder_2"]
        if os.path.isdir(name):
            missing_t5 = [p + "/" for p in t5 if not os.path.isdir(os.path.join(name, p))]
        else:
            missing_t5 = [p + "/" for p in t5 if p in index and not present(index, p)]
        if missing_t5:
            raise WeightsUnavailable(
                f"Flux folder {name} lacks its T5 ({', '.join(missing_t5)}): Flux.1 reads the prompt through T5 "
                "(tokenizer_2/, text_encoder_2/) beside CLIP-L; download them (e.g. `huggingface-cli download "
                "black-forest-labs/FLUX.1-dev --include 'text_encoder_2/*' 'tokenizer_2/*'`)")
        check_folder(name, ["tokenizer", "text_encoder", "transformer", "vae", "scheduler"], "Flux",
                     "a Flux.1 pipeline needs tokenizer/, text_encoder/ (CLIP-L), tokenizer_2/, text_encoder_2/ "
                     "(T5), transformer/, vae/ and scheduler/")
        loaders = dict(tokenizer=CLIPTokenizer, text_encoder=CLIPTextModel, tokenizer_2=T5TokenizerFast,
                       text_encoder_2=T5EncoderModel, transformer=FluxTransformer2DModel, vae=AutoencoderKL,
                       scheduler=SchedulerConfig)
        device, dtype = default_device_dtype(device, dtype)
        device, parts = load_parts(name, loaders, device, dtype, local_files_only, "Flux.1")
        return cls(name, device=device, image_size=image_size, **parts)

    @torch.no_grad()
    def _embed(self, prompt):
        """(T5 embeddings (1, 512, 4096 for Flux.1), CLIP-L's pooled embedding (1, 768)) as the pipeline's
        encode_prompt computes them."""
        embeds, pooled, _ = self.pipe.encode_prompt(prompt, None, device=self.device,
                                                    max_sequence_length=self.max_sequence_length)
        return embeds, pooled

    def condition(self, prompt, guidance_scale=3.5):
        """extra_args for a sampler: the prompt's embeddings and the guidance scale (dev: the transformer's guidance
        input; schnell: ignored)."""
        g = check_guidance(guidance_scale)
        cond, pooled = self._embed(prompt)
        return {"cond": cond, "pooled": pooled, "guidance_scale": g}


def load_single_file(path, device=None, dtype=None, image_size=None):
    """A Flux.1 checkpoint file through the diffusers config folder beside it (as SDXL's)."""
    from diffusers import FluxPipeline

    check_checkpoint_folder(path, "Flux.1")
    device, dtype = default_device_dtype(device, dtype)
    index, parts = checkpoint_pipeline(path, FluxPipeline, device, dtype)
    keys = ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2", "transformer", "vae", "scheduler")
    return FluxModel(str(path), device=device, image_size=image_size, **{k: parts.get(k) for k in keys})

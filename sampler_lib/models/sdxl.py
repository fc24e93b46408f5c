"""Stable Diffusion XL through diffusers (the base model, SDXL-style fine-tunes and refiners): two text encoders, the
second's pooled embedding and the size/crop conditioning (`add_time_ids`), eps or v prediction, behind the same
interface as SD 1.x (Podell et al. 2023, "SDXL")."""
import functools
import json
import os

import torch
from torch import nn

from .guidance import cast, check_guidance, guided_eps
from .stable_diffusion import StableDiffusionModel, WeightsUnavailable, attempts_for, load_parts

AESTHETIC_SCORE, NEGATIVE_AESTHETIC_SCORE = 6.0, 2.5  # a refiner's conditioning, as diffusers' defaults


class GuidedUNetXL(nn.Module):
    """SDXL's UNet as eps/v(x, t; text embedding, pooled embedding, time ids) with classifier-free guidance."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x, t, cond, uncond, pooled, pooled_uncond, time_ids, time_ids_uncond, guidance_scale=1.0,
                with_uncond=False):
        dtype = self.unet.dtype

        def net(x, t, c):
            hidden, text_embeds, ids = (v.to(dtype) for v in c)
            return self.unet(x.to(dtype), t, encoder_hidden_states=hidden,
                             added_cond_kwargs={"text_embeds": text_embeds, "time_ids": ids}).sample
        out = guided_eps(net, x, t, (cond, pooled, time_ids), (uncond, pooled_uncond, time_ids_uncond),
                         guidance_scale, with_uncond)
        return cast(out, x.dtype)


def pipeline_index(name, local_files_only=None):
    """The pipeline's model_index.json as a dict, or None where there is none (an SD 1.x folder may lack it)."""
    path = os.path.join(name, "model_index.json")
    if os.path.isdir(name):
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return json.load(f)
    from huggingface_hub import hf_hub_download
    for offline in attempts_for(name, local_files_only):
        try:
            with open(hf_hub_download(name, "model_index.json", local_files_only=offline)) as f:
                return json.load(f)
        except Exception:  # noqa: BLE001 - not cached, not reachable, not a repository: no index
            continue
    return None


def is_sdxl(index):
    """An SDXL pipeline (base, refiner, img2img or inpaint export of one) by its model_index.json."""
    return bool(index) and ("XL" in str(index.get("_class_name", "")) or "text_encoder_2" in index)


def present(index, part):
    """Does the pipeline have this component? (a refiner lists tokenizer and text_encoder as [null, null])"""
    entry = index.get(part)
    return isinstance(entry, list) and len(entry) == 2 and entry[0] is not None


class StableDiffusionXLModel(StableDiffusionModel):
    """Both tokenizers and text encoders (a refiner: only the second), UNet, VAE and scheduler of an SDXL pipeline."""

    def __init__(self, name, tokenizer, text_encoder, tokenizer_2, text_encoder_2, unet, vae, scheduler, device,
                 force_zeros_for_empty_prompt=True, requires_aesthetics_score=False):
        self.encoders = [(tok, enc) for tok, enc in ((tokenizer, text_encoder), (tokenizer_2, text_encoder_2))
                         if enc is not None]
        self.force_zeros = bool(force_zeros_for_empty_prompt)
        self.aesthetics = bool(requires_aesthetics_score)
        if vae.config.get("force_upcast", False):
            vae = vae.to(torch.float32)  # SDXL's VAE overflows in float16 (diffusers upcasts it likewise)
        self._setup(name, GuidedUNetXL(unet), unet, vae, scheduler, device)
        self.image_size = self.latent_shape[1] * 2 ** (len(vae.config.block_out_channels) - 1)
        ids = len(self._ids(AESTHETIC_SCORE))
        expected = unet.config.addition_time_embed_dim * ids + text_encoder_2.config.projection_dim
        got = unet.add_embedding.linear_1.in_features
        if expected != got:
            raise ValueError(f"{name}: the UNet takes {got} added conditioning features but the pipeline gives "
                             f"{expected} ({ids} time ids{' with an aesthetic score' if self.aesthetics else ''} and "
                             "text_encoder_2's projection): set requires_aesthetics_score in model_index.json to "
                             f"{'false' if self.aesthetics else 'true'} if this is a "
                             f"{'base model' if self.aesthetics else 'refiner'}")
        self.card.update(pipeline="sdxl", refiner=self.aesthetics, image_size=self.image_size,
                         force_zeros_for_empty_prompt=self.force_zeros)

    @classmethod
    def load(cls, name, device=None, dtype=None, local_files_only=None, index=None):
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        index = index or pipeline_index(name, local_files_only) or {}
        has_first = present(index, "text_encoder") if "text_encoder" in index else True
        if os.path.isdir(name):
            wanted = (["tokenizer", "text_encoder"] if has_first else []) + \
                ["tokenizer_2", "text_encoder_2", "unet", "vae", "scheduler"]
            missing = [p for p in wanted if not os.path.isdir(os.path.join(name, p))]
            if missing:
                raise WeightsUnavailable(f"SDXL folder {name} lacks {', '.join(p + '/' for p in missing)}: an SDXL "
                                         "pipeline needs tokenizer/, text_encoder/ (not a refiner), tokenizer_2/, "
                                         "text_encoder_2/, unet/, vae/ and scheduler/ (save_pretrained writes them)")
        loaders = dict(tokenizer=CLIPTokenizer if has_first else None,
                       text_encoder=CLIPTextModel if has_first else None, tokenizer_2=CLIPTokenizer,
                       text_encoder_2=CLIPTextModelWithProjection, unet=UNet2DConditionModel, vae=AutoencoderKL,
                       scheduler=DDPMScheduler)
        device, parts = load_parts(name, loaders, device, dtype, local_files_only, "Stable Diffusion XL")
        return cls(name, device=device, **parts,
                   force_zeros_for_empty_prompt=index.get("force_zeros_for_empty_prompt", True),
                   requires_aesthetics_score=index.get("requires_aesthetics_score", False))

    def _ids(self, aesthetic):
        """add_time_ids: original size, crop top-left (0, 0), then the target size (a base model) or an aesthetic
        score (a refiner), the image size throughout (diffusers' _get_add_time_ids)."""
        size = (self.image_size, self.image_size)
        return size + (0, 0) + ((aesthetic,) if self.aesthetics else size)

    @torch.no_grad()
    def _embed(self, prompt):
        """(penultimate hidden states of every text encoder, concatenated; the last encoder's pooled embedding)."""
        hidden, pooled = [], None
        for tokenizer, encoder in self.encoders:
            ids = tokenizer([prompt], padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                            return_tensors="pt").input_ids.to(self.device)
            out = encoder(ids, output_hidden_states=True)
            pooled = out[0]  # CLIPTextModelWithProjection's text_embeds: only the last encoder's is used
            hidden.append(out.hidden_states[-2])
        return torch.cat(hidden, -1), pooled

    @functools.cached_property
    def _empty(self):
        """The unconditional embeddings: zeros where the pipeline says so (SDXL base), else the empty prompt's."""
        hidden, pooled = self._embed("")
        return (torch.zeros_like(hidden), torch.zeros_like(pooled)) if self.force_zeros else (hidden, pooled)

    @functools.cached_property
    def _time_ids(self):
        """(conditional, unconditional) add_time_ids, (1, 5 or 6) each; they differ only in a refiner's score."""
        make = lambda score: torch.tensor([self._ids(score)], dtype=torch.float32, device=self.device)  # noqa: E731
        return make(AESTHETIC_SCORE), make(NEGATIVE_AESTHETIC_SCORE)

    def condition(self, prompt, guidance_scale=5.0):
        """extra_args for a sampler: the prompt's embeddings, the unconditional ones and the time ids."""
        g = check_guidance(guidance_scale)
        hidden, pooled = self._embed(prompt)
        (uncond, pooled_uncond), (ids, ids_uncond) = self._empty, self._time_ids
        return {"cond": hidden, "uncond": uncond, "pooled": pooled, "pooled_uncond": pooled_uncond, "time_ids": ids,
                "time_ids_uncond": ids_uncond, "guidance_scale": g}


def checkpoint_config(path):
    """(the checkpoint file, its diffusers config folder beside it, that folder's model_index.json as a dict) of a
    single checkpoint file in the original (ComfyUI/A1111) layout; WeightsUnavailable when either is missing."""
    from pathlib import Path

    path = Path(path)
    config = path.with_suffix("")
    if not path.is_file():
        raise WeightsUnavailable(f"no checkpoint file {path}")
    if not (config / "model_index.json").is_file():
        raise WeightsUnavailable(
            f"{path} is a single checkpoint file: it needs its diffusers config folder beside it as {config}/ "
            "(model_index.json and each component's config, e.g. `huggingface-cli download "
            "stabilityai/stable-diffusion-xl-base-1.0 --include '*.json' '*.txt' --local-dir "
            f"{config}`), or pass a diffusers folder instead")
    return path, config, json.loads((config / "model_index.json").read_text())


def checkpoint_index(path):
    """The model_index.json of the config folder beside a checkpoint file, or None where there is none (loading it
    then says what is missing): what load_model tells the pipelines apart by."""
    try:
        return checkpoint_config(path)[2]
    except WeightsUnavailable:
        return None


def checkpoint_pipeline(path, pipeline_cls, device, dtype):
    """(model_index.json, the pipeline's components) of a checkpoint file read by diffusers' from_single_file offline
    through the config folder beside it (nothing is downloaded); networks moved to `device` in `dtype`, frozen."""
    path, config, index = checkpoint_config(path)
    try:
        pipe = pipeline_cls.from_single_file(str(path), config=str(config), local_files_only=True, torch_dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise WeightsUnavailable(f"{path} could not be read with the config in {config}/ "
                                 f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
    return index, {k: v.to(device, dtype).eval().requires_grad_(False) if isinstance(v, nn.Module) else v
                   for k, v in pipe.components.items()}


def load_single_file(path, device=None, dtype=None):
    """One .safetensors checkpoint in the original (ComfyUI/A1111) layout, read through the diffusers config folder
    beside it (`model.safetensors` with `model/` holding model_index.json and each component's config): nothing
    is downloaded. A checkpoint that marks itself v-prediction (a `v_pred` key, as ComfyUI reads it) while its
    config says epsilon is refused rather than sampled wrongly."""
    path, config, index = checkpoint_config(path)
    scheduler = config / "scheduler" / "scheduler_config.json"
    prediction = json.loads(scheduler.read_text()).get("prediction_type", "epsilon") if scheduler.is_file() else None
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            v_pred = "v_pred" in f.keys()
        if v_pred and prediction != "v_prediction":
            raise WeightsUnavailable(f"{path} is a v-prediction checkpoint (it holds a 'v_pred' key) but {scheduler} "
                                     "does not say so: set \"prediction_type\": \"v_prediction\" there")
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    cls = StableDiffusionXLPipeline if is_sdxl(index) else StableDiffusionPipeline
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    index, parts = checkpoint_pipeline(path, cls, device, dtype)
    if is_sdxl(index):
        keys = ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2", "unet", "vae", "scheduler")
        return StableDiffusionXLModel(str(path), device=device, **{k: parts.get(k) for k in keys},
                                      force_zeros_for_empty_prompt=index.get("force_zeros_for_empty_prompt", True),
                                      requires_aesthetics_score=index.get("requires_aesthetics_score", False))
    return StableDiffusionModel(str(path), device=device,
                                **{k: parts[k] for k in ("tokenizer", "text_encoder", "unet", "vae", "scheduler")})

"""Stable Diffusion 3 / 3.5 through diffusers (Esser et al. 2024, "Scaling Rectified Flow Transformers"): an MMDiT
(`SD3Transformer2DModel`) predicting the flow velocity, three text encoders (CLIP-L and CLIP-G, both with their
projections, and T5; a pipeline without T5 runs with zeros in its place, as diffusers does), a VAE with a shift and a
scaling factor, classifier-free guidance. The model sampling is a FlowSampling read from the folder's
`scheduler/scheduler_config.json` (shift 3.0 for SD3 and SD3.5).

What every flow pipeline here shares (the scheduler's config, the VAE's shift, the checks on a folder) lives in
`FlowPipelineModel`; `flux.py` builds Flux.1 on it."""
import functools
import json
import os

import torch
from torch import nn

from ..model_sampling import flow_sampling_from_config, image_tokens
from ..wrappers import Denoiser
from .guidance import cast, check_guidance, guided_eps, to_pil
from .sdxl import checkpoint_config, checkpoint_pipeline, pipeline_index, present
from .stable_diffusion import WeightsUnavailable, load_parts

FLOW_SCHEDULER = "FlowMatchEulerDiscreteScheduler"  # what SD3, SD3.5 and Flux.1 ship; its config sets the shift


def is_sd3(index):
    """An SD3 / SD3.5 pipeline by its model_index.json (text-to-image, img2img or inpaint export of one)."""
    return bool(index) and "StableDiffusion3" in str(index.get("_class_name", ""))


class SchedulerConfig:
    """load_parts' loader for scheduler/: its scheduler_config.json as a dict, with the file's own `_class_name`
    (a scheduler object would take the loading class's name and silently read a DDIM config as a flow one)."""

    @staticmethod
    def from_pretrained(name, subfolder, local_files_only):
        from diffusers import FlowMatchEulerDiscreteScheduler

        return dict(FlowMatchEulerDiscreteScheduler.load_config(name, subfolder=subfolder,
                                                                local_files_only=local_files_only))


def default_device_dtype(device, dtype):
    """The device (CUDA when there is one) and dtype: bfloat16 on a GPU (what SD3.5 and Flux.1 are published in;
    T5 overflows in float16), float32 on a CPU."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return device, dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)


# What only an eps / v model's scheduler config means (its prediction type, its beta schedule): in a flow pipeline's
# config it would be ignored by diffusers and by us, so the images would silently not be what the file asks for.
EPS_ONLY = ("beta_schedule", "beta_start", "beta_end", "trained_betas", "rescale_betas_zero_snr")
FLOW_PREDICTION = (None, "flow_prediction")  # diffusers' name for the velocity (UniPC's use_flow_sigmas)
UNSUPPORTED = ("invert_sigmas", "shift_terminal")  # they change what the flow grid means


def check_scheduler(name, config, kind, where=None):
    """The scheduler config a flow pipeline ships (FlowMatchEulerDiscreteScheduler): another (a DDIM config) is
    refused naming it, rather than read as a flow one; so is an eps / v model's setting in it (prediction_type
    v_prediction, a beta schedule), one line naming the file (`where`) and the key to remove."""
    cls = config.get("_class_name")
    if cls != FLOW_SCHEDULER:
        raise ValueError(f"{name}: scheduler/ is {cls or 'a config without _class_name'}, not {FLOW_SCHEDULER}: "
                         f"{kind} is a flow-matching model and its scheduler config sets the shift; put the "
                         "pipeline's own scheduler/scheduler_config.json back")
    where = where or f"{name}/scheduler/scheduler_config.json"
    prediction = config.get("prediction_type")
    if prediction not in FLOW_PREDICTION:
        raise ValueError(f"{where}: remove prediction_type {prediction!r}: it is an eps/v model's setting and {kind} "
                         "is a flow-matching model (its network predicts the velocity; denoised = x - sigma * v)")
    eps_only = [k for k in EPS_ONLY if config.get(k) not in (None, False)]
    if eps_only:
        raise ValueError(f"{where}: remove {', '.join(eps_only)}: an eps/v model's noise schedule, which {kind} (a "
                         "flow-matching model: sigma = t / 1000, shifted by `shift`) does not have")
    unsupported = [k for k in UNSUPPORTED if config.get(k)]
    if unsupported:
        raise ValueError(f"{where}: remove {', '.join(f'{k}={config[k]!r}' for k in unsupported)}: not supported for "
                         "flow models here (it changes what the flow grid means)")


def check_folder(name, wanted, kind, what):
    """A local folder must hold every wanted part's subfolder (WeightsUnavailable naming the missing ones) and the
    flow scheduler's config: both checked before any weights are read."""
    if not os.path.isdir(name):
        return
    missing = [p for p in wanted if not os.path.isdir(os.path.join(name, p))]
    if missing:
        raise WeightsUnavailable(f"{kind} folder {name} lacks {', '.join(p + '/' for p in missing)}: {what} "
                                 "(save_pretrained writes them)")
    path = os.path.join(name, "scheduler", "scheduler_config.json")
    if not os.path.isfile(path):
        raise WeightsUnavailable(f"{kind} folder {name} lacks scheduler/scheduler_config.json: it sets the flow "
                                 "model's shift")
    with open(path) as f:
        check_scheduler(name, json.load(f), kind, where=path)


def check_checkpoint_folder(path, kind):
    """A flow checkpoint file's config folder: its scheduler config checked before diffusers reads the weights."""
    path, config, _ = checkpoint_config(path)
    scheduler = config / "scheduler" / "scheduler_config.json"
    if scheduler.is_file():
        check_scheduler(str(path), json.loads(scheduler.read_text()), kind, where=str(scheduler))


class FlowPipelineModel:
    """What SD3 and Flux share: the VAE (its shift and scaling factors), the model sampling from the scheduler's
    config, the denoiser over the guided network, decoding, free text."""

    vocabulary = None  # free text
    kind = None        # 'SD3' / 'Flux.1', for messages

    def _setup(self, name, net, vae, scheduler_config, device, latent_shape, tokens):
        self.name, self.device, self.net = name, device, net
        check_scheduler(name, scheduler_config, self.kind)
        if vae.config.get("force_upcast", False):
            vae = vae.to(torch.float32)  # the SD3 and Flux VAEs overflow in half precision (diffusers upcasts too)
        self.vae = vae
        self.scheduler_config = scheduler_config
        self.model_sampling = flow_sampling_from_config(scheduler_config, tokens, multiplier=self.multiplier)
        self.latent_shape = tuple(latent_shape)
        self.image_size = self.latent_shape[1] * self.vae_scale
        self.card = {"name": name, "prediction_type": "flow", "model_sampling": self.model_sampling.card(),
                     "image_size": self.image_size, "image_tokens": tokens, "latent_shape": list(self.latent_shape),
                     "scheduler": {k: scheduler_config.get(k) for k in (
                         "_class_name", "shift", "use_dynamic_shifting", "base_shift", "max_shift",
                         "base_image_seq_len", "max_image_seq_len", "num_train_timesteps")},
                     "vae": {"scaling_factor": vae.config.scaling_factor,
                             "shift_factor": vae.config.get("shift_factor") or 0.0}}

    @property
    def vae_scale(self):
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def network(self):
        return self.net

    def prompts(self):
        """None: free text, there is no list of prompts."""
        return None

    def faithful(self, prompt, image):
        """None: no classifier judges whether an image shows its prompt."""
        return None

    def denoiser(self, quantize="off"):
        """The guided network over the flow model sampling: D(x) = x - sigma * v."""
        return Denoiser(self.net, self.model_sampling, quantize=quantize).to(self.device)

    @torch.no_grad()
    def decode_float(self, x):
        """Latents to images in [-1, 1] through the VAE, as the pipeline decodes: latents / scaling_factor +
        shift_factor (float32, CPU)."""
        config = self.vae.config
        x = x.to(self.device, self.vae.dtype) / config.scaling_factor + (config.get("shift_factor") or 0.0)
        return self.vae.decode(x).sample.float().cpu()

    def decode(self, x):
        return to_pil(self.decode_float(x))


class GuidedSD3(nn.Module):
    """SD3Transformer2DModel as v(x, t; text embedding, pooled embedding) with classifier-free guidance, called as
    StableDiffusion3Pipeline calls it (t = sigma * 1000)."""

    def __init__(self, transformer):
        super().__init__()
        self.transformer = transformer

    def forward(self, x, t, cond, uncond, pooled, pooled_uncond, guidance_scale=1.0, with_uncond=False):
        dtype = self.transformer.dtype

        def net(x, t, c):
            hidden, pooled = (v.to(dtype) for v in c)
            return self.transformer(hidden_states=x.to(dtype), timestep=t, encoder_hidden_states=hidden,
                                    pooled_projections=pooled, return_dict=False)[0]
        return cast(guided_eps(net, x, t, (cond, pooled), (uncond, pooled_uncond), guidance_scale, with_uncond),
                    x.dtype)


class StableDiffusion3Model(FlowPipelineModel):
    """The text encoders, transformer, VAE and scheduler config of an SD3 / SD3.5 pipeline."""

    kind = "SD3"
    multiplier = 1000  # the SD3 transformer takes timestep = sigma * 1000 (diffusers' scheduler timesteps)
    max_sequence_length = 256  # T5 tokens: StableDiffusion3Pipeline's default

    def __init__(self, name, tokenizer, text_encoder, tokenizer_2, text_encoder_2, tokenizer_3, text_encoder_3,
                 transformer, vae, scheduler, device):
        from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

        config = scheduler if isinstance(scheduler, dict) else {**scheduler.config,
                                                                "_class_name": type(scheduler).__name__}
        self.transformer = transformer
        self.vae = vae
        latent = transformer.config.sample_size
        if transformer.config.in_channels != vae.config.latent_channels:
            raise ValueError(f"{name}: the transformer takes {transformer.config.in_channels} channels but the VAE "
                             f"makes {vae.config.latent_channels}: only text-to-image SD3 is supported")
        patch = transformer.config.patch_size
        tokens = image_tokens(latent * self.vae_scale, latent * self.vae_scale, self.vae_scale, patch)
        self._setup(name, GuidedSD3(transformer), vae, config, device, (transformer.config.in_channels, latent,
                                                                         latent), tokens)
        self.t5 = text_encoder_3 is not None
        # The pipeline's own encode_prompt (CLIP-L and CLIP-G penultimate states, padded to T5's width, T5's or
        # zeros after them; the two pooled projections side by side): the embeddings are diffusers' by construction.
        self.pipe = StableDiffusion3Pipeline(
            transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler.from_config(config), vae=vae,
            text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
            text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3)
        self.card.update(pipeline="sd3", text_encoders=["clip-l", "clip-g"] + (["t5"] if self.t5 else []),
                         t5=("T5" if self.t5 else "none: zeros in its place, as diffusers runs SD3 without "
                             "text_encoder_3"),
                         max_sequence_length=self.max_sequence_length,
                         guidance="classifier-free (the empty prompt as the unconditional one)")

    @classmethod
    def load(cls, name, device=None, dtype=None, local_files_only=None, index=None):
        from diffusers import AutoencoderKL, SD3Transformer2DModel
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

        index = index or pipeline_index(name, local_files_only) or {}
        t5 = cls._has_t5(name, index)
        required = ["tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2", "transformer", "vae", "scheduler"]
        check_folder(name, required, "SD3", "an SD3 pipeline needs tokenizer/, text_encoder/ (CLIP-L), "
                     "tokenizer_2/, text_encoder_2/ (CLIP-G), transformer/, vae/ and scheduler/; tokenizer_3/ and "
                     "text_encoder_3/ (T5) are optional")
        loaders = dict(tokenizer=CLIPTokenizer, text_encoder=CLIPTextModelWithProjection, tokenizer_2=CLIPTokenizer,
                       text_encoder_2=CLIPTextModelWithProjection, tokenizer_3=T5TokenizerFast if t5 else None,
                       text_encoder_3=T5EncoderModel if t5 else None, transformer=SD3Transformer2DModel,
                       vae=AutoencoderKL, scheduler=SchedulerConfig)
        device, dtype = default_device_dtype(device, dtype)
        device, parts = load_parts(name, loaders, device, dtype, local_files_only, "Stable Diffusion 3")
        return cls(name, device=device, **parts)

    @staticmethod
    def _has_t5(name, index):
        """Whether the pipeline has its T5: a folder by its subfolders (both or neither), a hub id by its index."""
        if not os.path.isdir(name):
            return present(index, "text_encoder_3") if "text_encoder_3" in index else True
        has = [os.path.isdir(os.path.join(name, p)) for p in ("tokenizer_3", "text_encoder_3")]
        if any(has) and not all(has):
            missing = "tokenizer_3/" if not has[0] else "text_encoder_3/"
            raise WeightsUnavailable(f"SD3 folder {name} lacks {missing}: T5 needs both tokenizer_3/ and "
                                     "text_encoder_3/ (or neither: SD3 then runs with zeros in T5's place)")
        return all(has)

    @torch.no_grad()
    def _embed(self, prompt):
        """(prompt embeddings (1, 77 + 256, 4096 for SD3), pooled embeddings (1, 2048)) as the pipeline's
        encode_prompt computes them."""
        embeds, _, pooled, _ = self.pipe.encode_prompt(prompt, None, None, device=self.device,
                                                       do_classifier_free_guidance=False,
                                                       max_sequence_length=self.max_sequence_length)
        return embeds, pooled

    @functools.cached_property
    def _empty(self):
        """The unconditional embeddings: the empty prompt's, as the pipeline's negative prompt defaults to ''."""
        return self._embed("")

    def condition(self, prompt, guidance_scale=7.0):
        """extra_args for a sampler: the prompt's embeddings and the empty prompt's, and the guidance scale."""
        g = check_guidance(guidance_scale)
        (cond, pooled), (uncond, pooled_uncond) = self._embed(prompt), self._empty
        return {"cond": cond, "uncond": uncond, "pooled": pooled, "pooled_uncond": pooled_uncond,
                "guidance_scale": g}


def load_single_file(path, device=None, dtype=None):
    """An SD3 / SD3.5 checkpoint file through the diffusers config folder beside it (as SDXL's)."""
    from diffusers import StableDiffusion3Pipeline

    check_checkpoint_folder(path, "SD3")
    device, dtype = default_device_dtype(device, dtype)
    index, parts = checkpoint_pipeline(path, StableDiffusion3Pipeline, device, dtype)
    keys = ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2", "tokenizer_3", "text_encoder_3",
            "transformer", "vae", "scheduler")
    return StableDiffusion3Model(str(path), device=device, **{k: parts.get(k) for k in keys})

"""An image made elsewhere, remade here: the nearest config this tool can run from what the file says about itself
(`core.image_meta.metadata(text)["fields"]`: sampler, scheduler, steps, cfg, seed, prompt, negative_prompt, model,
denoise, size), and every setting that cannot be carried over, named. ComfyUI's sampler and scheduler names are
this tool's; AUTOMATIC1111's ("DPM++ 2M Karras", "Euler a", "Schedule type: Karras") are translated. The config
carries the file's tool's convention (config.convention: its noise scaling, schedule and endings), and `remake`
refuses a file whose sampler or schedule this tool cannot run, naming it."""
from dataclasses import fields as dataclass_fields

from sampler_lib import SAMPLERS, SCHEDULES
from sampler_lib.registry import REGISTRY

from ..errors import ConfigError, clip
from .config import DISCARD_PENULTIMATE, MAX_SEED, MAX_STEPS, SamplerConfig

# AUTOMATIC1111 / Forge sampler names (lower case) -> ours. A1111's UniPC runs variant bh1 by default: B(h) = h.
A1111_SAMPLERS = {
    "euler": "euler", "euler a": "euler_ancestral", "heun": "heun", "dpm2": "dpm_2", "dpm2 a": "dpm_2_ancestral",
    "dpm++ 2s a": "dpmpp_2s_ancestral", "dpm++ 2m": "dpmpp_2m", "dpm++ sde": "dpmpp_sde",
    "dpm++ 2m sde": "dpmpp_2m_sde", "dpm++ 3m sde": "dpmpp_3m_sde", "dpm fast": "dpm_fast",
    "dpm adaptive": "dpm_adaptive", "lms": "lms", "ddim": "ddim", "ddpm": "ddpm", "lcm": "lcm", "unipc": "uni_pc",
}
# AUTOMATIC1111 schedule names (its "Schedule type", or the suffix of an older sampler name) -> ours. "Uniform"
# is k-diffusion's get_sigmas, even in timestep: ComfyUI's normal.
A1111_SCHEDULES = {
    "karras": "karras", "exponential": "exponential", "polyexponential": "polyexponential", "uniform": "normal",
    "normal": "normal", "sgm uniform": "sgm_uniform", "simple": "simple", "ddim": "ddim_uniform", "beta": "beta",
    "kl optimal": "kl_optimal", "align your steps": "align_your_steps",
}
# ComfyUI's scheduler names that differ from ours.
COMFY_SCHEDULES = {"ays": "align_your_steps", "ddim": "ddim_uniform"}
# Settings a file may state that change its image and have no counterpart here.
NOT_CARRIED = ("Hires upscale", "Hires upscaler", "Hires steps", "Refiner", "Refiner switch at", "Clip skip")
# ComfyUI's sampling nodes whose run the comfyui convention is: KSampler's own schedule (with its discard rule), or a
# custom sampler's given sigmas; the noise, its scaling and the sampler endings are the same in all of them.
COMFY_NODES = ("KSampler", "KSamplerAdvanced", "SamplerCustomAdvanced", "SamplerCustom")
KSAMPLER_NODES = ("KSampler", "KSamplerAdvanced")
# What each tool's files run as here: ComfyUI feeds the network the nearest training timestep (quantize ingress);
# A1111's k-diffusion denoiser interpolates it (its "enable quantization" is off by default).
TOOL_CONFIG = {"comfyui": {"convention": "comfyui", "quantize": "ingress"}, "a1111": {"convention": "a1111"}}
# The config fields this tool's own PNGs state under their own names (image_meta.parse_ours); the others are mapped.
OWN_FIELDS = tuple(f.name for f in dataclass_fields(SamplerConfig)
                   if f.name not in ("sampler", "schedule", "steps", "guidance_scale"))


def settings_from_metadata(fields, model_name, models=None, prompts=None, size=None, tool=None, node=None):
    """(settings, unmapped) for the Compare form from a file's resolved fields.

    `tool`: the file's format (`core.image_meta.metadata(text)["format"]`: 'comfyui', 'a1111'; anything else keeps
    this tool's convention); `node`: ComfyUI's sampling node of the last pass (its `kind`).

    `model_name`: the model the form samples with; `models`: the models this tool has (default: that one);
    `prompts`: the prompts that model understands (None: free text); `size`: its images' size ('64x64'; None: not
    checked). `settings` holds `config` (a SamplerConfig
    dict: the nearest config, this tool's defaults where the file says nothing), `model`, `seed` (None when not
    carried) and `prompt` (None when not carried); `unmapped` names every stated setting not carried over and every
    setting the file does not state, in words ("model sd_xl_base_1.0.safetensors (this tool has: embedded)")."""
    fields = dict(fields or {})
    models = list(models or [model_name])
    unmapped, config = [], {}
    model = model_name
    stated_model = _text(fields.get("model"))
    if stated_model:
        if stated_model in models:
            model = stated_model
        else:
            unmapped.append(f"model {stated_model} (this tool has: {', '.join(models)}; {model_name} used)")
    sampler, schedule_from_sampler = _sampler(fields.get("sampler"), unmapped)
    if sampler:
        config["sampler"] = sampler
    stated_schedule = _text(fields.get("scheduler"))
    schedule = _schedule(stated_schedule, unmapped) or schedule_from_sampler
    if schedule:
        config["schedule"] = schedule
    elif stated_schedule.lower() == "automatic":
        unmapped.append(f"schedule Automatic (A1111's default for the sampler; {SamplerConfig.schedule} used)")
    elif not stated_schedule:
        unmapped.append(f"schedule not stated ({SamplerConfig.schedule} used)")
    steps = _whole(fields.get("steps"))
    if steps is not None and 1 <= steps <= MAX_STEPS:
        config["steps"] = steps
    elif fields.get("steps") is not None:
        unmapped.append(f"steps {clip(repr(fields['steps']))} (1 to {MAX_STEPS} here)")
    else:
        unmapped.append(f"steps not stated ({SamplerConfig.steps} used)")
    cfg = _float(fields.get("cfg"))
    if cfg is not None and 0 <= cfg <= 100:
        config["guidance_scale"] = cfg
    elif fields.get("cfg") is not None:
        unmapped.append(f"cfg {clip(repr(fields['cfg']))} (0 to 100 here)")
    else:
        unmapped.append(f"cfg not stated (guidance {SamplerConfig.guidance_scale:g} used)")
    seed = _whole(fields.get("seed"))
    if seed is None or not 0 <= seed <= MAX_SEED:
        unmapped.append(f"seed {clip(repr(fields['seed']))}" if fields.get("seed") is not None else
                        "seed not stated")
        seed = None
    prompt = fields.get("prompt")
    prompt = prompt if isinstance(prompt, str) else None
    if prompt is None:
        unmapped.append("prompt not stated")
    elif prompts is not None and prompt.strip() not in prompts:
        unmapped.append(f"prompt {clip(repr(prompt), 80)} (the {model} model knows only its own prompts, such as "
                        f"{', '.join(repr(p) for p in list(prompts)[:3])})")
        prompt = None
    elif prompts is not None:
        prompt = prompt.strip()
    if _text(fields.get("negative_prompt")):
        unmapped.append(f"negative prompt {clip(repr(fields['negative_prompt']), 80)} (this tool samples without one)")
    denoise = _float(fields.get("denoise"))
    if denoise is not None and denoise != 1:
        unmapped.append(f"denoise {denoise:g} (this tool samples from pure noise: denoise 1)")
    stated_size = _text(fields.get("size"))
    if size and stated_size and stated_size.replace(" ", "") != size:
        unmapped.append(f"size {clip(stated_size, 30)} (the {model} model makes {size})")
    for key in NOT_CARRIED:
        if fields.get(key) not in (None, ""):
            unmapped.append(f"{key} {clip(str(fields[key]), 60)}")
    config.update(TOOL_CONFIG.get(tool, {}))
    if tool == "ab-lab":  # this tool's own file states its whole config, convention included
        config.update({k: fields[k] for k in OWN_FIELDS if k in fields})
    unmapped += _convention_notes(tool, node, fields, config.get("sampler"))
    # The config as this tool would run it: anything it refuses is named instead of carried.
    try:
        config = SamplerConfig.from_dict(config).to_dict()
    except ValueError as exc:
        unmapped.append(f"config ({exc})")
        config = SamplerConfig().to_dict()
    return {"config": config, "model": model, "seed": seed, "prompt": prompt}, unmapped


def _convention_notes(tool, node, fields, sampler):
    """What the file's tool did that its convention here does not reproduce, in words."""
    notes = []
    if tool in TOOL_CONFIG and sampler in REGISTRY and REGISTRY[sampler].adds_noise:
        notes.append(f"sampler {sampler}'s noise each step (this tool's Brownian path; "
                     f"{'ComfyUI' if tool == 'comfyui' else 'A1111'}'s own draws are not reproduced)")
    if tool == "comfyui" and node and node not in COMFY_NODES:
        notes.append(f"sampling node {clip(str(node), 40)} (read as a KSampler: convention comfyui)")
    if tool == "comfyui" and node not in KSAMPLER_NODES and sampler in DISCARD_PENULTIMATE["comfyui"]:
        notes.append(f"{node or 'a custom sampler'}'s sigmas for {sampler} keep their penultimate sigma (a scheduler "
                     "node does not drop it); convention comfyui drops it as KSampler does")
    if tool == "a1111":
        stated = _text(fields.get("sampler"))
        if stated.lower().split(" ")[0] in ("ddim", "unipc"):
            notes.append(f"A1111's {clip(stated, 40)} loop (it runs on timesteps, sd_samplers_timesteps, not through "
                         "k-diffusion; convention a1111 covers A1111's k-diffusion samplers)")
        rng = _text(fields.get("RNG")) or "GPU"
        if rng != "CPU":
            notes.append(f"RNG {clip(rng, 20)} (A1111 drew the noise {'on the GPU' if rng == 'GPU' else 'with ' + rng}"
                         "; this tool draws it as A1111's RNG setting CPU does)")
        for key, why in (("SGM noise multiplier", "noise x sqrt(1 + sigma_max^2); convention a1111 takes sigma_max"),
                         ("Discard penultimate sigma", "for every sampler; convention a1111 drops it for DPM2 only")):
            if _text(fields.get(key)).lower() == "true":
                notes.append(f"{key} True ({why})")
    return notes


def sampling_node(meta):
    """ComfyUI's node class of a file's last sampling pass (KSampler, SamplerCustomAdvanced, ...); None otherwise."""
    passes = (meta or {}).get("passes") or []
    return passes[-1].get("kind") if passes and meta.get("format") == "comfyui" else None


def remake(meta, model_name, models=None, prompts=None, size=None):
    """(settings, unmapped) of a file's metadata (`core.image_meta.metadata`) as the nearest config this tool runs
    with its tool's convention; ConfigError when the file states no sampling, or a sampler or schedule this tool does
    not have (named)."""
    fields = dict((meta or {}).get("fields") or {})
    if (meta or {}).get("format") not in ("comfyui", "a1111", "ab-lab") or not fields:
        raise ConfigError(f"the file states no sampling to remake ({(meta or {}).get('note') or 'no parameters'})")
    settings, unmapped = settings_from_metadata(fields, model_name, models, prompts, size, tool=meta["format"],
                                                node=sampling_node(meta))
    # A sampler, schedule or step count this tool would have to guess is no remake: named, and refused.
    refused = [u.split(" (")[0] if not u.startswith("config (") else u for u in unmapped
               if u.startswith(("sampler ", "scheduler ", "steps ", "config (")) and "'s noise" not in u]
    if refused:
        raise ConfigError(f"cannot remake it here: {'; '.join(refused)} (this tool runs the samplers "
                         f"{', '.join(SAMPLERS)} and the schedules {', '.join(SCHEDULES)})")
    return settings, unmapped


def remake_pair(meta_a, meta_b, model_name, prompts=None):
    """Two files' metadata as one pair here on `model_name`: {a, b (SamplerConfigs), seed, prompt, model, unmapped
    ({"A": [...], "B": [...], "pair": [...]})}. A pair samples both arms from one seed and prompt: A's where it
    states them, else B's, else seed 0 and the model's first prompt, each said in `unmapped["pair"]`."""
    found = {}
    for side, meta in (("A", meta_a), ("B", meta_b)):
        try:
            found[side] = remake(meta, model_name, [model_name], prompts)
        except ConfigError as exc:
            raise ConfigError(f"image {side}: {exc}") from None
    (a, unmapped_a), (b, unmapped_b) = found["A"], found["B"]
    pair = []
    seed = next((s for s in (a["seed"], b["seed"]) if s is not None), None)
    if seed is None:
        seed = 0
        pair.append("seed stated by neither file (0 used)")
    elif a["seed"] is None or b["seed"] not in (None, seed):
        stated = {side: "none" if s["seed"] is None else s["seed"] for side, s in (("A", a), ("B", b))}
        pair.append(f"seed {seed} used for both (A states {stated['A']}, B {stated['B']})")
    prompt = next((p for p in (a["prompt"], b["prompt"]) if p is not None), None)
    if prompt is None:
        prompt = list(prompts)[0] if prompts else ""
        pair.append(f"prompt carried by neither file ({prompt!r} used)")
    elif a["prompt"] != b["prompt"] and b["prompt"] is not None:
        pair.append(f"prompt: one prompt for both ({prompt!r}); B states {clip(repr(b['prompt']), 80)}")
    drop = ("seed ",)  # said once, for the pair
    return {"a": SamplerConfig.from_dict(a["config"]), "b": SamplerConfig.from_dict(b["config"]), "seed": seed,
            "prompt": prompt, "model": model_name,
            "unmapped": {"A": [u for u in unmapped_a if not u.startswith(drop)],
                         "B": [u for u in unmapped_b if not u.startswith(drop)], "pair": pair}}


def _text(value):
    return value.strip() if isinstance(value, str) else ("" if value is None else str(value))


def _sampler(value, unmapped):
    """(our sampler, the schedule an older A1111 name carries) or (None, None) with the reason in `unmapped`."""
    name = _text(value)
    if not name:
        unmapped.append(f"sampler not stated ({SamplerConfig.sampler} used)")
        return None, None
    alias_of = REGISTRY[name].alias_of if name in REGISTRY else None
    if alias_of:  # ComfyUI's *_gpu names: the same steps, their noise drawn on the GPU there
        unmapped.append(f"sampler {name}'s noise ({alias_of} with this tool's Brownian noise)")
        return alias_of, None
    if name in SAMPLERS:
        return name, None
    if name.endswith("_gpu") and name[:-4] in SAMPLERS:  # ComfyUI's GPU-noise variants: the same steps
        unmapped.append(f"sampler {name}'s noise ({name[:-4]} with this tool's Brownian noise)")
        return name[:-4], None
    lower = name.lower()
    if lower in A1111_SAMPLERS:
        return A1111_SAMPLERS[lower], None
    # Before A1111 1.9 the schedule was part of the name: "DPM++ 2M Karras", "DPM++ 2M SDE Exponential".
    for suffix, schedule in A1111_SCHEDULES.items():
        base = lower.removesuffix(" " + suffix)
        if base != lower and base in A1111_SAMPLERS:
            return A1111_SAMPLERS[base], schedule
    unmapped.append(f"sampler {clip(repr(name), 60)} ({SamplerConfig.sampler} used)")
    return None, None


def _schedule(value, unmapped):
    name = _text(value)
    if not name or name.lower() == "automatic":
        return None
    if name in SCHEDULES:
        return name
    if name in COMFY_SCHEDULES:
        return COMFY_SCHEDULES[name]
    if name.lower() in A1111_SCHEDULES:
        return A1111_SCHEDULES[name.lower()]
    unmapped.append(f"scheduler {clip(repr(name), 60)} ({SamplerConfig.schedule} used)")
    return None


def _float(value):
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def _whole(value):
    number = _float(value)
    return int(number) if number is not None and number == int(number) else None

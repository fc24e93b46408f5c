"""'Send to Compare' (issue #32): a file's resolved settings mapped to the nearest config this tool runs, what
cannot be carried over named; and, in Chromium, the Inspect tab's buttons filling the Compare form."""
import pytest

from comparisons.core.config import SamplerConfig
from comparisons.core.image_meta import metadata
from comparisons.core.remake import settings_from_metadata

EMBEDDED_PROMPTS = ["a red circle", "a blue square"]


def a1111(sampler, extra="", prompt="a red circle", negative=None):
    neg = f"\nNegative prompt: {negative}" if negative else ""
    return {"parameters": f"{prompt}{neg}\nSteps: 20, Sampler: {sampler}, {extra}CFG scale: 7, Seed: 1234, "
                          "Size: 1024x1024, Model hash: 31e35c80fc, Model: sd_xl_base_1.0"}


def mapped(text, **kw):
    return settings_from_metadata(metadata(text)["fields"], "embedded", ["embedded"], EMBEDDED_PROMPTS, **kw)


def test_a1111_old_style_sampler_name_carries_its_schedule():
    settings, unmapped = mapped(a1111("DPM++ 2M Karras"))
    cfg = settings["config"]
    assert (cfg["sampler"], cfg["schedule"], cfg["steps"], cfg["guidance_scale"]) == ("dpmpp_2m", "karras", 20, 7.0)
    assert settings["seed"] == 1234 and settings["prompt"] == "a red circle" and settings["model"] == "embedded"
    assert unmapped == ["model sd_xl_base_1.0 (this tool has: embedded; embedded used)"]
    # Everything not stated stays at this tool's defaults: a nearest config, never a guessed one.
    rest = {k: v for k, v in cfg.items() if k not in ("sampler", "schedule", "steps", "guidance_scale")}
    assert rest == {k: v for k, v in SamplerConfig().to_dict().items() if k in rest}


@pytest.mark.parametrize("sampler, extra, want", [
    ("Euler a", "Schedule type: Karras, ", ("euler_ancestral", "karras")),
    ("DPM++ 2M SDE", "Schedule type: Exponential, ", ("dpmpp_2m_sde", "exponential")),
    ("DPM++ 2M SDE Exponential", "", ("dpmpp_2m_sde", "exponential")),
    ("UniPC", "Schedule type: SGM Uniform, ", ("uni_pc", "sgm_uniform")),
    ("DDIM", "Schedule type: Uniform, ", ("ddim", "normal")),
    ("LMS", "Schedule type: Align Your Steps, ", ("lms", "align_your_steps")),
])
def test_a1111_names(sampler, extra, want):
    settings, _ = mapped(a1111(sampler, extra))
    assert (settings["config"]["sampler"], settings["config"]["schedule"]) == want


def test_automatic_and_unknown_names_are_named_not_guessed():
    settings, unmapped = mapped(a1111("Restart", "Schedule type: Automatic, "))
    assert settings["config"]["sampler"] == SamplerConfig.sampler
    assert "sampler 'Restart' (heun used)" in unmapped
    assert any(u.startswith("schedule Automatic") for u in unmapped)


def test_comfyui_names_are_ours():
    fields = {"sampler": "dpmpp_2m", "scheduler": "foo", "steps": 12, "cfg": 4.5, "seed": 7, "prompt": "a cat",
              "negative_prompt": "blurry", "denoise": 0.6, "size": "512x512", "model": "v1-5.safetensors"}
    settings, unmapped = settings_from_metadata(fields, "embedded", ["embedded"], EMBEDDED_PROMPTS, size="64x64")
    assert settings["config"]["sampler"] == "dpmpp_2m" and settings["config"]["steps"] == 12
    assert settings["config"]["guidance_scale"] == 4.5 and settings["seed"] == 7
    assert settings["prompt"] is None  # the embedded model knows only its own prompts
    text = "; ".join(unmapped)
    for part in ("model v1-5.safetensors (this tool has: embedded", "scheduler 'foo'", "prompt 'a cat'",
                 "negative prompt 'blurry'", "denoise 0.6", "size 512x512 (the embedded model makes 64x64)"):
        assert part in text, (part, text)
    # A model reading free text takes any prompt; a model the tool has is kept.
    settings, unmapped = settings_from_metadata({**fields, "scheduler": "beta", "model": "sd15"}, "embedded",
                                                ["embedded", "sd15"], None)
    assert settings["model"] == "sd15" and settings["prompt"] == "a cat" and settings["config"]["schedule"] == "beta"
    assert not any(u.startswith(("model", "prompt", "scheduler")) for u in unmapped)


def test_gpu_variant_and_out_of_range_values():
    settings, unmapped = settings_from_metadata({"sampler": "dpmpp_sde_gpu", "scheduler": "karras", "steps": 5000,
                                                 "cfg": 3, "seed": -1, "prompt": "a red circle"}, "embedded")
    assert settings["config"]["sampler"] == "dpmpp_sde" and settings["config"]["steps"] == SamplerConfig.steps
    assert settings["seed"] is None and settings["prompt"] == "a red circle"
    text = "; ".join(unmapped)
    assert "dpmpp_sde_gpu's noise" in text and "steps 5000" in text and "seed -1" in text


def test_this_tools_own_png_maps_back():
    fields = {"sampler": "uni_pc", "scheduler": "kl_optimal", "steps": 10, "cfg": 3.0, "seed": 5,
              "prompt": "a blue square", "model": "embedded"}
    settings, unmapped = settings_from_metadata(fields, "embedded", ["embedded"], EMBEDDED_PROMPTS)
    assert unmapped == [] and settings["config"] == SamplerConfig(sampler="uni_pc", schedule="kl_optimal",
                                                                  steps=10).to_dict()

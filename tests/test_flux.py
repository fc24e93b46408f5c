"""Flux.1 through diffusers on tiny randomly initialised pipelines written here (CLIP-L, T5, a FluxTransformer2DModel
with (dev) or without (schnell) a guidance embedding, a VAE with a shift factor, a FlowMatchEuler scheduler config with
dynamic shifting): the tool's Euler image equals diffusers' FluxPipeline on the same initial latent and sigmas (dev's
distilled guidance; latents packed and unpacked as the pipeline does); schnell ignores the guidance scale; a pair, a
study and the app's model menu; a folder without its T5 and a wrong scheduler refused in one line."""
import json
import shutil

import numpy as np
import pytest
import torch

from sampler_lib import Denoiser, FlowSampling, flux_mu, image_tokens, initial_noise
from sampler_lib.models import Model, load_model
from sampler_lib.models.flux import FluxModel
from tests.conftest import run_cli
from tests.test_sd3 import T5_WIDTH, write_flow_vae, write_t5
from tests.test_stable_diffusion import write_tokenizer

WIDTH = 16


def tiny_flux(root, guidance_embeds=True):
    """A tiny Flux.1 pipeline as save_pretrained writes one (dev-style: a guidance embedding; else schnell-style)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    vocab = write_tokenizer(root / "tokenizer")
    CLIPTextModel(CLIPTextConfig(vocab_size=vocab, hidden_size=WIDTH, intermediate_size=32, num_attention_heads=2,
                                 num_hidden_layers=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
                                 pad_token_id=1)).save_pretrained(root / "text_encoder")
    write_t5(root, "tokenizer_2", "text_encoder_2")
    FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
                           num_attention_heads=2, joint_attention_dim=T5_WIDTH, pooled_projection_dim=WIDTH,
                           guidance_embeds=guidance_embeds, axes_dims_rope=(2, 2, 4)
                           ).save_pretrained(root / "transformer")
    write_flow_vae(root, 0.3611, 0.1159)
    FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                    base_image_seq_len=256, max_image_seq_len=4096).save_pretrained(root / "scheduler")
    index = {"_class_name": "FluxPipeline", "_diffusers_version": "0.42.1",
             "tokenizer": ["transformers", "CLIPTokenizer"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer_2": ["transformers", "T5TokenizerFast"], "text_encoder_2": ["transformers", "T5EncoderModel"],
             "transformer": ["diffusers", "FluxTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"],
             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}
    (root / "model_index.json").write_text(json.dumps(index))
    return root


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory):
    return tiny_flux(tmp_path_factory.mktemp("flux-dev"))


@pytest.fixture(scope="module")
def flux(flux_dir):
    return load_model(str(flux_dir), device="cpu")


def test_flux_loads_as_a_flow_model_shifted_by_resolution(flux):
    assert isinstance(flux, FluxModel) and isinstance(flux, Model)
    # The VAE's sample_size (1024 for Flux.1's, here 16) at its 2x: an 8x8 latent, 16 tokens of 2x2 patches.
    assert flux.latent_shape == (4, 8, 8) and flux.image_size == 16 and flux.card["image_tokens"] == 16
    assert image_tokens(16, 16, vae_scale=2) == 16
    ms = flux.model_sampling
    assert isinstance(ms, FlowSampling) and ms.mu == pytest.approx(flux_mu(16)) and ms.multiplier == 1
    assert type(flux.denoiser("ingress")) is Denoiser
    assert flux.card["variant"] == "dev" and flux.card["guidance"].startswith("distilled guidance embedding")
    assert flux.prompts() is None and flux.faithful("a cat", None) is None


def test_euler_equals_diffusers_flux_pipeline_with_distilled_guidance(flux, flux_dir):
    """Same initial latent (packed as the pipeline packs it), the pipeline's sigmas (linspace(1, 1/n, n) shifted by
    mu: ComfyUI's simple on the 1000-step grid), guidance 3.5 through the embedding: the final latent and the decoded
    image (latents / scaling_factor + shift_factor) are diffusers' own."""
    from diffusers import FluxPipeline

    from comparisons.core.config import SamplerConfig, schedule
    from comparisons.core.engine import Sample, sample_arms

    pipe = FluxPipeline.from_pretrained(str(flux_dir), local_files_only=True)
    steps, g, seed = 4, 3.5, 5
    cfg = SamplerConfig(sampler="euler", steps=steps, schedule="simple", guidance_scale=g)
    ours = sample_arms(flux, [cfg], [Sample("a red circle", seed)])[:, 0]
    noise = initial_noise(flux.latent_shape, seed)[None]
    packed = FluxPipeline._pack_latents(noise, 1, 4, 8, 8)
    kw = dict(height=16, width=16, num_inference_steps=steps, guidance_scale=g, latents=packed,
              sigmas=np.linspace(1.0, 1 / steps, steps))
    theirs = pipe("a red circle", output_type="latent", **kw).images
    torch.testing.assert_close(schedule(cfg, flux.model_sampling).float(), pipe.scheduler.sigmas, rtol=2e-6,
                               atol=1e-7)
    assert (ours - noise).abs().max() > 0.1  # the sampler moved
    torch.testing.assert_close(FluxPipeline._pack_latents(ours, 1, 4, 8, 8), theirs, rtol=1e-4, atol=1e-5)
    image = pipe("a red circle", output_type="pt", **kw).images
    torch.testing.assert_close((flux.decode_float(ours) / 2 + 0.5).clamp(0, 1), image, rtol=1e-4, atol=1e-5)
    # Another guidance changes the picture: the scale reaches the transformer's guidance embedding.
    other = sample_arms(flux, [SamplerConfig(sampler="euler", steps=steps, schedule="simple", guidance_scale=1.0)],
                        [Sample("a red circle", seed)])[:, 0]
    assert not torch.equal(other, ours)


def test_schnell_has_no_guidance_input_and_ignores_the_scale(tmp_path):
    from diffusers import FluxPipeline

    folder = tiny_flux(tmp_path / "schnell", guidance_embeds=False)
    model = load_model(str(folder), device="cpu")
    assert model.card["variant"] == "schnell" and "the guidance scale is ignored" in model.card["guidance"]
    x, sigma = torch.randn(1, *model.latent_shape, generator=torch.Generator().manual_seed(1)), torch.tensor([0.7])
    den = model.denoiser()
    out = den(x, sigma, **model.condition("a cat", 1.0))
    torch.testing.assert_close(den(x, sigma, **model.condition("a cat", 7.0)), out, rtol=0, atol=0)
    # One network call is the pipeline's transformer call (no guidance input, timestep sigma) on packed latents.
    pipe = FluxPipeline.from_pretrained(str(folder), local_files_only=True)
    embeds, pooled, text_ids = pipe.encode_prompt("a cat", None, device="cpu")
    v = pipe.transformer(hidden_states=FluxPipeline._pack_latents(x, 1, 4, 8, 8), timestep=sigma, guidance=None,
                         pooled_projections=pooled, encoder_hidden_states=embeds, txt_ids=text_ids,
                         img_ids=FluxPipeline._prepare_latent_image_ids(1, 4, 4, "cpu", torch.float32),
                         return_dict=False)[0]
    torch.testing.assert_close(out, x - 0.7 * FluxPipeline._unpack_latents(v, 8, 8, 1), rtol=1e-5, atol=1e-6)


def test_a_study_and_a_pair_in_the_app_on_flux(flux, flux_dir, tmp_path):
    code, text, err = run_cli(["study", "--model", str(flux_dir), "--questions", "discretization", "--samplers",
                               "euler", "--steps", "2", "--seeds", "0-1", "--prompts", "a red circle", "--reference",
                               '{"steps": 3}', "--reference-check", "0", "--guidance", "3.5", "--results",
                               str(tmp_path / "r.db"), "--out", str(tmp_path / "study")])
    assert code == 0 and "study study: 2 rows" in text, err
    import app
    from comparisons.core.config import make_pair
    from comparisons.workflows.blind import new_pair
    from comparisons.workflows.lab import Lab
    settings = app.Settings(app.parse_args(["--model", str(flux_dir), "--results", str(tmp_path / "app.db")]))
    assert settings.models == ["embedded", "embedded-flow", str(flux_dir)]
    lab = Lab(tmp_path / "app.db", load=lambda name: flux if name == str(flux_dir) else load_model(name))
    demo = app.build_app(lab, settings)
    menu = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "model")
    assert [value for _, value in menu.choices] == ["embedded", "embedded-flow", str(flux_dir)]
    out = new_pair(lab, "a red circle", 3, *make_pair("final-zero"), "final-zero", "s", model=str(flux_dir))
    assert out["left"].size == (16, 16) and out["metrics"]["lpips"] >= 0
    assert lab.store.pair(out["pair_id"])["model"] == str(flux_dir)


def test_bad_flux_folders_are_one_line_exit_2(flux_dir, tmp_path):
    from diffusers import DDIMScheduler

    no_t5 = tmp_path / "no-t5"
    shutil.copytree(flux_dir, no_t5, ignore=shutil.ignore_patterns("text_encoder_2", "tokenizer_2"))
    ddim = tmp_path / "ddim"
    shutil.copytree(flux_dir, ddim, ignore=shutil.ignore_patterns("scheduler"))
    DDIMScheduler().save_pretrained(ddim / "scheduler")
    no_vae = tmp_path / "no-vae"
    shutil.copytree(flux_dir, no_vae, ignore=shutil.ignore_patterns("vae"))
    cases = [(no_t5, "lacks its T5 (tokenizer_2/, text_encoder_2/)"),
             (ddim, "scheduler/ is DDIMScheduler, not FlowMatchEulerDiscreteScheduler"), (no_vae, "lacks vae/")]
    for model, message in cases:
        code, _, err = run_cli(["study", "--model", str(model), "--out", str(tmp_path / "out"), "--results",
                                str(tmp_path / "r.db")])
        assert code == 2 and len(err) == 1 and message in err[0], (model, err)
        assert not (tmp_path / "r.db").exists() and not (tmp_path / "out").exists()
    assert load_model("embedded").latent_shape  # the embedded model is still usable


def test_a_single_flux_checkpoint_loads_through_the_config_folder_beside_it(flux_dir, tmp_path, monkeypatch):
    """The wiring around diffusers' from_single_file (as SDXL's test), told apart as Flux by the folder's index."""
    from diffusers import FluxPipeline
    from safetensors.torch import save_file
    checkpoint = tmp_path / "flux1-dev.safetensors"
    save_file({"model.diffusion_model.img_in.bias": torch.zeros(4)}, str(checkpoint))
    shutil.copytree(flux_dir, tmp_path / "flux1-dev", ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    calls = []

    def from_single_file(path, **kw):
        calls.append((path, kw))
        return FluxPipeline.from_pretrained(str(flux_dir), local_files_only=True)

    monkeypatch.setattr(FluxPipeline, "from_single_file", staticmethod(from_single_file))
    model = load_model(str(checkpoint), device="cpu")
    assert calls == [(str(checkpoint), {"config": str(tmp_path / "flux1-dev"), "local_files_only": True,
                                        "torch_dtype": torch.float32})]
    assert isinstance(model, FluxModel) and model.name == str(checkpoint) and model.card["variant"] == "dev"

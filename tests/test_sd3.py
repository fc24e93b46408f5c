"""SD3 / SD3.5 through diffusers on a tiny randomly initialised pipeline written here (CLIP-L and CLIP-G with their
projections, a T5 encoder, an SD3Transformer2DModel, a VAE with a shift factor, a FlowMatchEuler scheduler config with
shift 3): the tool's Euler image equals diffusers' own pipeline on the same initial latent and sigmas (with CFG);
without T5 it runs on zeros as diffusers does; a pair, a study and the app's model menu; bad folders refused in one
line."""
import json
import shutil

import pytest
import torch

from sampler_lib import Denoiser, FlowSampling, initial_noise
from sampler_lib.models import Model, load_model
from sampler_lib.models.sd3 import StableDiffusion3Model
from tests.conftest import run_cli
from tests.test_stable_diffusion import WORDS, write_tokenizer

WIDTH, T5_WIDTH = 16, 32


def write_t5_tokenizer(tok_dir):
    """A T5 (Unigram) tokenizer over WORDS and letters, built without sentencepiece; its vocabulary size."""
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)] + \
        [("\u2581" + w, -1.0) for w in WORDS] + [(chr(c), -3.0) for c in range(ord("a"), ord("z") + 1)]
    T5TokenizerFast(vocab=vocab, extra_ids=0).save_pretrained(tok_dir)
    return len(vocab)


def write_t5(root, tokenizer, encoder):
    from transformers import T5Config, T5EncoderModel

    vocab = write_t5_tokenizer(root / tokenizer)
    T5EncoderModel(T5Config(vocab_size=vocab, d_model=T5_WIDTH, d_ff=37, d_kv=8, num_layers=1, num_heads=2,
                            relative_attention_num_buckets=8)).save_pretrained(root / encoder)


def write_flow_vae(root, scaling_factor, shift_factor):
    """A tiny VAE (2x) with a shift factor and no quant convs, as SD3's and Flux's are."""
    from diffusers import AutoencoderKL

    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), latent_channels=4,
                  norm_num_groups=4, sample_size=16, scaling_factor=scaling_factor, shift_factor=shift_factor,
                  use_quant_conv=False, use_post_quant_conv=False).save_pretrained(root / "vae")


def tiny_sd3(root):
    """A tiny SD3 pipeline as save_pretrained writes one."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(0)
    text = dict(hidden_size=WIDTH, intermediate_size=32, num_attention_heads=2, num_hidden_layers=2,
                max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=WIDTH)
    for sub in ("", "_2"):
        vocab = write_tokenizer(root / f"tokenizer{sub}")
        CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=vocab, **text)
                                    ).save_pretrained(root / f"text_encoder{sub}")
    write_t5(root, "tokenizer_3", "text_encoder_3")
    SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8,
                          num_attention_heads=2, joint_attention_dim=T5_WIDTH, caption_projection_dim=16,
                          pooled_projection_dim=2 * WIDTH, out_channels=4, pos_embed_max_size=8
                          ).save_pretrained(root / "transformer")
    write_flow_vae(root, 1.5305, 0.0609)
    FlowMatchEulerDiscreteScheduler(shift=3.0).save_pretrained(root / "scheduler")
    clip, t5 = ["transformers", "CLIPTextModelWithProjection"], ["transformers", "T5EncoderModel"]
    index = {"_class_name": "StableDiffusion3Pipeline", "_diffusers_version": "0.42.1",
             "tokenizer": ["transformers", "CLIPTokenizer"], "text_encoder": clip,
             "tokenizer_2": ["transformers", "CLIPTokenizer"], "text_encoder_2": clip,
             "tokenizer_3": ["transformers", "T5TokenizerFast"], "text_encoder_3": t5,
             "transformer": ["diffusers", "SD3Transformer2DModel"], "vae": ["diffusers", "AutoencoderKL"],
             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}
    (root / "model_index.json").write_text(json.dumps(index))
    return root


@pytest.fixture(scope="module")
def sd3_dir(tmp_path_factory):
    return tiny_sd3(tmp_path_factory.mktemp("sd3"))


@pytest.fixture(scope="module")
def sd3(sd3_dir):
    return load_model(str(sd3_dir), device="cpu")


@pytest.fixture(scope="module")
def sd3_pipe(sd3_dir):
    from diffusers import StableDiffusion3Pipeline
    return StableDiffusion3Pipeline.from_pretrained(str(sd3_dir), local_files_only=True)


def test_sd3_loads_as_a_flow_model(sd3):
    assert isinstance(sd3, StableDiffusion3Model) and isinstance(sd3, Model)
    assert sd3.latent_shape == (4, 8, 8) and sd3.image_size == 16 and sd3.card["pipeline"] == "sd3"
    ms = sd3.model_sampling
    assert isinstance(ms, FlowSampling) and ms.shift == 3.0 and ms.multiplier == 1000 and float(ms.sigma_max) == 1
    assert type(sd3.denoiser("paper")) is Denoiser and sd3.card["t5"] == "T5"
    assert sd3.card["vae"] == {"scaling_factor": 1.5305, "shift_factor": 0.0609}
    assert sd3.prompts() is None and sd3.faithful("a cat", None) is None


def test_euler_with_cfg_equals_diffusers_sd3_pipeline(sd3, sd3_pipe):
    """Same initial latent, same sigmas (diffusers' shifted linspace), CFG 5: the final latent and the decoded image
    (latents / scaling_factor + shift_factor) are diffusers' own."""
    from comparisons.core.config import SamplerConfig, schedule
    from comparisons.core.engine import Sample, sample_arms

    steps, g, seed = 4, 5.0, 3
    cfg = SamplerConfig(sampler="euler", steps=steps, schedule="diffusers_linspace", guidance_scale=g)
    ours = sample_arms(sd3, [cfg], [Sample("a red circle", seed)])[:, 0]
    noise = initial_noise(sd3.latent_shape, seed)[None]
    theirs = sd3_pipe("a red circle", num_inference_steps=steps, guidance_scale=g, latents=noise,
                      output_type="latent").images
    torch.testing.assert_close(schedule(cfg, sd3.model_sampling).float(), sd3_pipe.scheduler.sigmas, rtol=2e-6,
                               atol=1e-7)
    assert (ours - noise).abs().max() > 0.1  # the sampler moved
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    image = sd3_pipe("a red circle", num_inference_steps=steps, guidance_scale=g, latents=noise,
                     output_type="pt").images
    torch.testing.assert_close((sd3.decode_float(ours) / 2 + 0.5).clamp(0, 1), image, rtol=1e-4, atol=1e-5)
    # The conditioning is the pipeline's encode_prompt, the negative prompt the empty one.
    embeds, negative, pooled, negative_pooled = sd3_pipe.encode_prompt("a red circle", None, None, device="cpu")
    args = sd3.condition("a red circle", g)
    for ours_, theirs_ in ((args["cond"], embeds), (args["uncond"], negative), (args["pooled"], pooled),
                           (args["pooled_uncond"], negative_pooled)):
        torch.testing.assert_close(ours_, theirs_)


def test_without_t5_it_runs_on_zeros_as_diffusers_does(sd3_dir, tmp_path):
    from diffusers import StableDiffusion3Pipeline

    folder = tmp_path / "no-t5"
    shutil.copytree(sd3_dir, folder, ignore=shutil.ignore_patterns("tokenizer_3", "text_encoder_3"))
    model = load_model(str(folder), device="cpu")
    assert model.card["text_encoders"] == ["clip-l", "clip-g"] and model.card["t5"].startswith("none: zeros")
    pipe = StableDiffusion3Pipeline.from_pretrained(str(folder), local_files_only=True, text_encoder_3=None,
                                                    tokenizer_3=None)
    embeds, _, pooled, _ = pipe.encode_prompt("a red circle", None, None, device="cpu",
                                              do_classifier_free_guidance=False)
    args = model.condition("a red circle", 4.0)
    torch.testing.assert_close(args["cond"], embeds)
    torch.testing.assert_close(args["pooled"], pooled)
    assert not args["cond"][:, 16:].any()  # after CLIP's 16 tokens, T5's 256 are zeros


def test_a_study_and_a_pair_in_the_app_on_sd3(sd3, sd3_dir, tmp_path):
    code, text, err = run_cli(["study", "--model", str(sd3_dir), "--questions", "final-zero", "--samplers", "euler",
                               "--steps", "2", "--seeds", "0-1", "--prompts", "a red circle", "--reference",
                               '{"steps": 3}', "--reference-check", "0", "--guidance", "4", "--results",
                               str(tmp_path / "r.db"), "--out", str(tmp_path / "study")])
    assert code == 0 and "study study: 2 rows" in text, err
    import app
    from comparisons.core.config import make_pair
    from comparisons.workflows.blind import new_pair
    from comparisons.workflows.lab import Lab
    settings = app.Settings(app.parse_args(["--model", str(sd3_dir), "--results", str(tmp_path / "app.db")]))
    assert settings.models == ["embedded", "embedded-flow", str(sd3_dir)]
    lab = Lab(tmp_path / "app.db", load=lambda name: sd3 if name == str(sd3_dir) else load_model(name))
    demo = app.build_app(lab, settings)
    menu = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "model")
    assert [value for _, value in menu.choices] == ["embedded", "embedded-flow", str(sd3_dir)]
    out = new_pair(lab, "a red circle", 3, *make_pair("discretization"), "discretization", "s", model=str(sd3_dir))
    assert out["left"].size == (16, 16) and out["metrics"]["lpips"] >= 0
    assert lab.store.pair(out["pair_id"])["model"] == str(sd3_dir)


def test_bad_sd3_folders_are_one_line_exit_2(sd3_dir, tmp_path):
    from diffusers import DDIMScheduler

    def variant(name, drop=(), ddim=False):
        folder = tmp_path / name
        shutil.copytree(sd3_dir, folder, ignore=shutil.ignore_patterns(*drop) if drop else None)
        if ddim:
            shutil.rmtree(folder / "scheduler")
            DDIMScheduler().save_pretrained(folder / "scheduler")
        return folder

    cases = [(variant("ddim", ddim=True), "scheduler/ is DDIMScheduler, not FlowMatchEulerDiscreteScheduler"),
             (variant("no-transformer", drop=["transformer"]), "lacks transformer/"),
             (variant("half-t5", drop=["tokenizer_3"]), "lacks tokenizer_3/")]
    for model, message in cases:
        code, _, err = run_cli(["study", "--model", str(model), "--out", str(tmp_path / "out"), "--results",
                                str(tmp_path / "r.db")])
        assert code == 2 and len(err) == 1 and message in err[0], (model, err)
        assert not (tmp_path / "r.db").exists() and not (tmp_path / "out").exists()
    # The embedded model is still usable after a refused one.
    assert load_model("embedded").latent_shape


def test_a_single_sd3_checkpoint_loads_through_the_config_folder_beside_it(sd3_dir, tmp_path, monkeypatch):
    """The wiring around diffusers' from_single_file (as SDXL's test): called offline with the folder beside the file,
    told apart as SD3 by that folder's model_index.json."""
    from diffusers import StableDiffusion3Pipeline
    from safetensors.torch import save_file
    checkpoint = tmp_path / "sd3.5.safetensors"
    save_file({"model.diffusion_model.x_embedder.proj.bias": torch.zeros(4)}, str(checkpoint))
    shutil.copytree(sd3_dir, tmp_path / "sd3.5", ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    calls = []

    def from_single_file(path, **kw):
        calls.append((path, kw))
        return StableDiffusion3Pipeline.from_pretrained(str(sd3_dir), local_files_only=True)

    monkeypatch.setattr(StableDiffusion3Pipeline, "from_single_file", staticmethod(from_single_file))
    model = load_model(str(checkpoint), device="cpu")
    assert calls == [(str(checkpoint), {"config": str(tmp_path / "sd3.5"), "local_files_only": True,
                                        "torch_dtype": torch.float32})]
    assert isinstance(model, StableDiffusion3Model) and model.name == str(checkpoint)
    out = model.denoiser("paper")(torch.randn(1, 4, 8, 8), torch.full((1,), 0.5), **model.condition("a cat", 5.0))
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()
